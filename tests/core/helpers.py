"""Shared fakes for tests of the core controller (and of anything built on it).

Everything here is deterministic and offline:

- :class:`QuadraticProposer` searches a 1-D quadratic ``loss = (x - target)**2``: it steps away from
  the incumbent's ``x`` in a direction drawn from ``ctx.seed``, so two controllers with the same seed
  propose the same candidates.
- :class:`QuadraticExecutor` "runs" a candidate in memory; ``script`` makes chosen iterations crash,
  fail, time out or raise, to exercise the controller's error paths.
- :class:`ScriptedProposer` returns a fixed list of proposals.
- :func:`make_mechanism` builds a mechanism from hook functions.
- :class:`RecordingEvaluator`, :class:`RecordingDecider` and :class:`RecordingMechanism` remember what
  they were given; pass a shared :class:`Trace` to see the call order across all of them.
- :func:`make_controller` builds a controller on a fresh run directory.

Import as ``from tests.core.helpers import ...`` (the repository root must be on ``sys.path``, as it
is under ``python -m pytest`` or ``PYTHONPATH=.``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from core.inner_loop import InnerLoopController
from core.mechanism import HOOKS, Mechanism
from core.plugins import Decider, Evaluator, ExecContext, Executor, Proposer, StrictImprovement
from core.records import (
    EvalInput,
    Evaluation,
    ExecutionResult,
    FilterVerdict,
    Guidance,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
)
from core.state import RunDir

X0 = 3.0
TARGET = 0.0

# a generated mechanism (as Level 2 loads one) that answers nothing: its parent set steers every iteration
IDLE = '''"""Answers nothing: the parent set steers every iteration."""

from core.mechanism import Mechanism


class Idle(Mechanism):
    name = "idle"
    description = "Never proposes."

    def propose(self, ctx):
        return None
'''


class Trace(list):
    """An ordered log of ``"who.what"`` strings shared by several fakes."""

    def add(self, entry: str) -> None:
        self.append(entry)

    def names(self, prefix: str) -> list[str]:
        return [e for e in self if e.startswith(prefix)]


def incumbent_x(ctx: ProposalContext, x0: float = X0) -> float:
    """The ``x`` of the last kept record in the context's history (``x0`` for the baseline)."""
    for record in reversed(ctx.history):
        if record.status is Status.KEEP and record.proposal is not None:
            return float(record.proposal.changes.get("x", x0))
    return x0


class QuadraticProposer(Proposer):
    """Proposes ``x = incumbent ± step`` with the sign drawn from ``ctx.seed`` (deterministic).

    ``ctx.guidance.constraints.step_scale`` scales the step, so guidance visibly changes proposals.
    Every context received is kept in ``contexts``.
    """

    def __init__(self, *, step: float = 0.5, x0: float = X0, trace: Trace | None = None) -> None:
        self.step = step
        self.x0 = x0
        self.trace = trace
        self.contexts: list[ProposalContext] = []

    def propose(self, ctx: ProposalContext) -> Proposal:
        self.contexts.append(ctx)
        if self.trace is not None:
            self.trace.add("proposer.propose")
        scale = ctx.guidance.constraints.step_scale or 1.0
        sign = 1.0 if random.Random(ctx.seed).random() < 0.35 else -1.0
        # never an x already measured (the controller would refuse it): the drawn direction first,
        # then the other, then twice as far, ...
        measured = {self.x0} | {float(r.proposal.changes["x"]) for r in ctx.history
                                if r.proposal is not None and "x" in r.proposal.changes}
        start = incumbent_x(ctx, self.x0)
        for k in range(1, 100):
            for s in (sign, -sign):
                x = round(start + s * k * self.step * scale, 6)
                if x not in measured:
                    return Proposal(changes={"x": x}, hypothesis=f"move x to {x}",
                                    region=f"x:{'up' if s > 0 else 'down'}")
        raise RuntimeError("no unmeasured x within 100 steps")

    @property
    def iterations(self) -> list[int]:
        return [c.iteration for c in self.contexts]


class ScriptedProposer(Proposer):
    """Returns ``proposals`` in order (the last one repeats); keeps every context it was given."""

    def __init__(self, proposals: list[Proposal], *, trace: Trace | None = None) -> None:
        if not proposals:
            raise ValueError("ScriptedProposer needs at least one proposal")
        self.proposals = list(proposals)
        self.trace = trace
        self.contexts: list[ProposalContext] = []

    def propose(self, ctx: ProposalContext) -> Proposal:
        if self.trace is not None:
            self.trace.add("proposer.propose")
        index = min(len(self.contexts), len(self.proposals) - 1)
        self.contexts.append(ctx)
        return self.proposals[index]


class QuadraticExecutor(Executor):
    """Evaluates ``loss = (x - target)**2`` for ``x = proposal.changes["x"]`` (``x0`` when absent).

    ``script`` maps an iteration to what should happen instead of a normal run: ``"crash"``,
    ``"fail"`` or ``"timeout"`` (returned as that status), or an exception instance/class to raise.
    With ``write_artifacts`` the candidate is written to ``trial_dir/candidate.txt`` and its relative
    path returned as the artifact. ``settled`` keeps every record passed to :meth:`settle`.
    """

    def __init__(self, *, x0: float = X0, target: float = TARGET, script: dict[int, Any] | None = None,
                 write_artifacts: bool = False, trace: Trace | None = None) -> None:
        self.x0 = x0
        self.target = target
        self.script = dict(script or {})
        self.write_artifacts = write_artifacts
        self.trace = trace
        self.executed: list[tuple[int, Proposal]] = []
        self.settled: list[TrialRecord] = []

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        if self.trace is not None:
            self.trace.add("executor.execute")
        self.executed.append((ctx.iteration, proposal))
        action = self.script.get(ctx.iteration)
        if isinstance(action, str):
            return ExecutionResult(status=action, log_tail=f"scripted {action}", detail={"error": f"scripted {action}"})
        if isinstance(action, BaseException) or (isinstance(action, type) and issubclass(action, BaseException)):
            raise action
        x = float(proposal.changes.get("x", self.x0))
        artifact = None
        if self.write_artifacts:
            path = ctx.trial_dir / "candidate.txt"
            path.write_text(f"x = {x!r}\n", encoding="utf-8")
            artifact = str(path.relative_to(ctx.run_dir))
        return ExecutionResult(status="ok", metrics={"loss": (x - self.target) ** 2, "x": x}, artifact=artifact)

    def settle(self, record: TrialRecord) -> None:
        if self.trace is not None:
            self.trace.add("executor.settle")
        self.settled.append(record)

    @property
    def iterations(self) -> list[int]:
        return [i for i, _ in self.executed]


class NoopExecutor(Executor):
    """Returns a fixed metric at once: measures the controller itself, not the task."""

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        return ExecutionResult(status="ok", metrics={"loss": float(proposal.changes.get("x", X0)) ** 2})


class RecordingEvaluator(Evaluator):
    """Score = ``metrics[metric]``; every :class:`EvalInput` received is kept in ``inputs``."""

    def __init__(self, *, metric: str = "loss", trace: Trace | None = None) -> None:
        self.metric = metric
        self.trace = trace
        self.inputs: list[EvalInput] = []

    def evaluate(self, inp: EvalInput) -> Evaluation:
        if self.trace is not None:
            self.trace.add("evaluator.evaluate")
        self.inputs.append(inp)
        return Evaluation(score=float(inp.metrics[self.metric]))


class RecordingDecider(Decider):
    """Strict improvement, logged to the trace."""

    def __init__(self, *, trace: Trace | None = None) -> None:
        self.trace = trace
        self.inner = StrictImprovement()

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        if self.trace is not None:
            self.trace.add("decider.decide")
        return self.inner.decide(score, incumbent, ctx)


class RecordingMechanism(Mechanism):
    """Overrides every hook with a no-op answer and logs each call as ``"<name>.<hook>"``.

    ``answers`` maps a hook to the value it should return (e.g. ``{"guidance": Guidance(text="hi")}``).
    """

    name = "recorder"

    def __init__(self, *, trace: Trace | None = None, answers: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        super().__init__()
        self.trace = trace if trace is not None else Trace()
        self.answers = dict(answers or {})
        self.label = name or self.name
        self.observed: list[TrialRecord] = []
        self.replayed: list[TrialRecord] = []

    def _log(self, hook: str) -> Any:
        self.trace.add(f"{self.label}.{hook}")
        return self.answers.get(hook)

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        return self._log("guidance")

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        return self._log("propose")

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        return self._log("filter")

    def decide(self, record: TrialRecord, ctx: ProposalContext) -> bool | None:
        return self._log("decide")

    def observe(self, record: TrialRecord) -> None:
        self._log("observe")
        self.observed.append(record)

    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        self.replayed.extend(history)
        super().replay(history)


def make_mechanism(name: str, **hooks: Any) -> Mechanism:
    """A :class:`Mechanism` named ``name`` overriding exactly the hooks given as plain functions,
    e.g. ``make_mechanism("wall", filter=lambda p, ctx: FilterVerdict.reject("no"))``. Each call makes
    a new subclass, so the controller sees only those hooks as overridden (and counts only them)."""
    unknown = set(hooks) - set(HOOKS)
    if unknown:
        raise ValueError(f"not mechanism hooks: {sorted(unknown)}")
    body: dict[str, Any] = {"name": name}
    for hook, fn in hooks.items():
        body[hook] = (lambda f: lambda self, *args: f(*args))(fn)
    return type(f"Mechanism_{name}", (Mechanism,), body)()


def trace_journal(run: RunDir, trace: Trace) -> None:
    """Log every journal append of ``run`` as ``"journal.<type>"`` (wraps the bound method)."""
    original = run.journal.append

    def append(event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        trace.add(f"journal.{event.get('type')}")
        return original(event, **kwargs)

    run.journal.append = append  # type: ignore[method-assign]


def make_controller(path: Path, *, proposer: Proposer | None = None, executor: Executor | None = None,
                    evaluator: Evaluator | None = None, fsync: bool = False, run: RunDir | None = None,
                    **kwargs: Any) -> InnerLoopController:
    """A controller over the quadratic task on a run directory at ``path`` (created, or reopened
    when it already holds a journal). ``fsync`` is off by default to keep tests fast."""
    if run is None:
        path = Path(path)
        run = RunDir.open(path, fsync=fsync) if (path / "journal.jsonl").exists() else RunDir.create(path, fsync=fsync)
    return InnerLoopController(
        run=run,
        proposer=proposer or QuadraticProposer(),
        executor=executor or QuadraticExecutor(),
        evaluator=evaluator or RecordingEvaluator(),
        **kwargs,
    )
