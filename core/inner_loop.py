"""The one controller every level runs: propose → execute → evaluate → keep/discard.

Level 1 runs it over task changes, Level 2 runs the same class over mechanisms (a candidate is a
mechanism's source; executing it means attaching it to the running Level-1 controller for a cycle).
So a mechanism written for Level 1 — a tabu list, a bandit — can be attached to Level 2 unchanged.

Every iteration ends in exactly one journaled :class:`TrialRecord`, whatever failed on the way: the
record is built and written after any ordinary exception (status CRASH, with the traceback tail).
Only a stop request (:class:`RunStopped`: a spent budget or a provider outage; Ctrl-C, SIGTERM) or a run directory that can no longer
be written (:class:`~core.errors.RunDirError`: a full or read-only disk) leaves the iteration unrecorded; its
candidate was journaled as ``proposal`` before executing, and ``resume`` re-executes that same
candidate, so no finished trial is lost and none is run twice.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from core.deadline import call_with_deadline
from core.errors import (
    HookTimeout,
    MechanismError,
    ProviderError,
    ProviderOutage,
    ReplayMissError,
    RunDirError,
    RunStopped,
    StructuredOutputError,
)
from core.host import RemoteMechanism
from core.mechanism import HOOKS, Mechanism
from core.plugins import Decider, Evaluator, ExecContext, Executor, Proposer, StrictImprovement
from core.records import (
    BASELINE,
    Constraints,
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

if TYPE_CHECKING:
    from core.batch import BatchRunner

log = logging.getLogger(__name__)

TAIL_CHARS = 2000
MAX_ARTIFACT_BYTES = 5_000_000
_RESULT_STATUS = {"crash": Status.CRASH, "fail": Status.FAIL, "timeout": Status.TIMEOUT}
_HOOK_TYPES: dict[str, tuple[type, ...]] = {
    "guidance": (Guidance,),
    "propose": (Proposal,),
    "filter": (FilterVerdict,),
    "decide": (bool,),
    "observe": (object,),
}


def tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else text[-n:]


def overridden_hooks(instance: Mechanism) -> tuple[str, ...]:
    if isinstance(instance, RemoteMechanism):  # what the worker reported at load time
        return instance.hooks
    cls = type(instance)
    return tuple(h for h in HOOKS if getattr(cls, h, None) is not getattr(Mechanism, h))


@dataclass
class AttachedMechanism:
    name: str
    instance: Mechanism
    origin: Literal["library", "generated"] = "library"
    digest: str | None = None
    hooks: tuple[str, ...] = ()
    calls: Counter = field(default_factory=Counter)


DetachCallback = Callable[[AttachedMechanism, str], None]


class InnerLoopController:
    """Runs iterations of one loop and journals each one.

    ``search`` (the Level-1.5 search configuration: a typed pydantic model such as
    :class:`core.search.SearchConfig`, or a plain dict) and ``outer_guidance`` are set by the
    outer loop between cycles; both reach the proposer through :class:`ProposalContext` and nothing
    else. ``lessons`` derives lesson text from the history (it is recomputed, never stored).
    """

    def __init__(
        self,
        *,
        run: RunDir,
        proposer: Proposer,
        executor: Executor,
        evaluator: Evaluator,
        decider: Decider | None = None,
        loop: str = "inner",
        direction: Literal["minimize", "maximize"] = "minimize",
        max_reasks: int = 3,
        hook_timeout_s: float = 5.0,
        seed: int = 0,
        lessons: Callable[[tuple[TrialRecord, ...]], Iterable[str]] | None = None,
        max_provider_failures: int = 3,
    ) -> None:
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.run = run
        self.loop = loop
        self.proposer = proposer
        self.executor = executor
        self.evaluator = evaluator
        self.decider = decider or StrictImprovement()
        self.direction = direction
        self.max_reasks = max_reasks
        self.hook_timeout_s = hook_timeout_s
        self.seed = seed
        self.lessons = lessons
        self.max_provider_failures = max_provider_failures
        self.search: BaseModel | dict[str, Any] = {}
        self.outer_guidance = Guidance()
        self.mechanisms: list[AttachedMechanism] = []
        self.on_detach: list[DetachCallback] = []
        self._calls: dict[str, Counter] = defaultdict(Counter)
        self._effects: dict[str, Counter] = defaultdict(Counter)
        self.history: list[TrialRecord] = []
        self._incumbent: TrialRecord | None = None
        self._per_cycle: Counter = Counter()
        self.batch: BatchRunner | None = None  # set by the schedule for --parallel K > 1 (core.batch)
        for event in run.journal.events("trial", loop=loop):
            self._remember(TrialRecord.model_validate(event["record"]))
        last_proposal = run.journal.last("proposal", loop=loop)
        self._pending = last_proposal if last_proposal and last_proposal["iteration"] == len(self.history) else None

    # -- state derived from the history --------------------------------------------------------------
    def _remember(self, record: TrialRecord) -> None:
        self.history.append(record)
        if record.status is Status.KEEP:
            self._incumbent = record
        if (record.proposal is None or not record.proposal.is_baseline) and not self._lost(record):
            self._per_cycle[record.cycle] += 1

    def _lost(self, record: TrialRecord) -> bool:
        """An iteration lost to the provider (no candidate was ever executed) does not use up the
        cycle's budget: it is tried again, and an outage stops the run after
        ``max_provider_failures`` in a row. With that stop switched off (0) it counts, so a
        provider that never comes back cannot loop forever."""
        return self.max_provider_failures > 0 and bool(record.info.get("provider_failure"))

    def completed(self, cycle: int) -> int:
        """Iterations of ``cycle`` that count against its budget (not the baseline, not lost ones)."""
        return self._per_cycle[cycle]

    @property
    def incumbent_record(self) -> TrialRecord | None:
        """The last kept record (the baseline until something beats it)."""
        return self._incumbent

    @property
    def best_score(self) -> float | None:
        record = self.incumbent_record
        return record.score if record else None

    @property
    def incumbent(self) -> str | None:
        record = self.incumbent_record
        return record.artifact if record else None

    def records(self, cycle: int | None = None, *, include_baseline: bool = False) -> list[TrialRecord]:
        return [
            r for r in self.history
            if (cycle is None or r.cycle == cycle)
            and (include_baseline or r.proposal is None or not r.proposal.is_baseline)
        ]

    # -- mechanisms ----------------------------------------------------------------------------------
    def attach(self, mechanism: Mechanism, *, name: str | None = None, origin: Literal["library", "generated"] = "library",
               digest: str | None = None, replay: bool = True) -> AttachedMechanism:
        name = name or getattr(mechanism, "name", None) or type(mechanism).__name__
        if any(m.name == name for m in self.mechanisms):
            raise ValueError(f"a mechanism named {name!r} is already attached to loop {self.loop!r}")
        attached = AttachedMechanism(name=name, instance=mechanism, origin=origin, digest=digest,
                                     hooks=overridden_hooks(mechanism))
        if isinstance(mechanism, RemoteMechanism):
            mechanism.timeout_s = self.hook_timeout_s  # enforced from outside, by killing its worker
        if replay and self.history:
            try:
                self._deadlined(mechanism, lambda: mechanism.replay(tuple(self.history)))
            except (Exception, HookTimeout, SystemExit, GeneratorExit) as exc:
                if isinstance(mechanism, RemoteMechanism):
                    mechanism.close()
                raise MechanismError(f"mechanism {name!r} failed to replay the history: {type(exc).__name__}: {exc}",
                                     stage="replay", traceback_tail=tail(traceback.format_exc())) from exc
        self.mechanisms.append(attached)
        log.info("loop %s: attached mechanism %s (%s)", self.loop, name, ", ".join(attached.hooks) or "no hooks")
        return attached

    def detach(self, name: str, *, reason: str, hook: str | None = None, traceback_tail: str = "",
               journal: bool = True) -> AttachedMechanism | None:
        for attached in list(self.mechanisms):
            if attached.name == name:
                self.mechanisms.remove(attached)
                if isinstance(attached.instance, RemoteMechanism):
                    attached.instance.close()  # revert = kill: nothing of it keeps running
                if journal:
                    self.run.journal.append({
                        "type": "mechanism_detached", "loop": self.loop, "iteration": len(self.history),
                        "name": name, "hook": hook, "reason": reason, "traceback_tail": traceback_tail,
                    })
                for callback in self.on_detach:
                    callback(attached, reason)
                return attached
        return None

    def _call(self, attached: AttachedMechanism, hook: str, *args: Any) -> tuple[bool, Any]:
        """Call one mechanism's hook under the deadline; on failure detach it and return (False, None)."""
        self._calls[attached.name][hook] += 1
        attached.calls[hook] += 1
        try:
            # the lookup runs under the deadline too: a hook may be a property that never returns
            out = self._deadlined(attached.instance, lambda: getattr(attached.instance, hook)(*args))
            expected = _HOOK_TYPES[hook]
            if out is not None and hook != "observe" and not isinstance(out, expected):
                raise TypeError(f"hook {hook} returned {type(out).__name__}, expected {expected[0].__name__} or None")
        except (Exception, HookTimeout, SystemExit, GeneratorExit) as exc:  # a broken mechanism never stops the loop
            reason = f"{hook} failed: {type(exc).__name__}: {exc}"
            log.warning("loop %s: detaching mechanism %s: %s", self.loop, attached.name, reason)
            self.detach(attached.name, reason=reason, hook=hook, traceback_tail=tail(traceback.format_exc()))
            return False, None
        return True, out

    def _deadlined(self, instance: Mechanism, call: Callable[[], Any]) -> Any:
        """A generated mechanism's worker is timed (and killed) by its proxy; a library mechanism
        runs here under the in-process deadline."""
        if isinstance(instance, RemoteMechanism):
            return call()
        return call_with_deadline(call, timeout_s=self.hook_timeout_s)

    def _hook(self, hook: str, *args: Any) -> Iterator[tuple[AttachedMechanism, Any]]:
        """Call ``hook`` on each attached mechanism that implements it, lazily: a caller that stops
        at the first answer (``propose``, ``decide``) leaves the later mechanisms uncalled."""
        for attached in list(self.mechanisms):
            if hook in attached.hooks and attached in self.mechanisms:
                ok, out = self._call(attached, hook, *args)
                if ok:
                    yield attached, out

    # -- one iteration -------------------------------------------------------------------------------
    def context(self, iteration: int, cycle: int, *, guidance: Guidance | None = None,
                feedback: tuple[str, ...] = (), pending: tuple[Proposal, ...] = ()) -> ProposalContext:
        history = tuple(self.history)
        return ProposalContext(
            loop=self.loop, iteration=iteration, cycle=cycle, history=history, best_score=self.best_score,
            incumbent=self.incumbent, direction=self.direction, search=_search_json(self.search),
            guidance=guidance or self.outer_guidance,
            lessons=tuple(self.lessons(history)) if self.lessons else (),
            feedback=feedback, seed=self.seed * 1_000_003 + iteration, pending=pending,
        )

    def _guided_context(self, iteration: int, cycle: int, *, pending: tuple[Proposal, ...] = ()) -> ProposalContext:
        base = self.context(iteration, cycle, pending=pending)  # a batch's candidates in flight (core.batch)
        texts = [self.outer_guidance.text] if self.outer_guidance.text else []
        constraints: Constraints = self.outer_guidance.constraints
        for attached, out in list(self._hook("guidance", base)):
            if out is None:
                continue
            if out.text:
                texts.append(f"[{attached.name}] {out.text}")
            merged = constraints.merge(out.constraints)
            if out.text or merged != constraints:
                self._effects[attached.name]["guidance"] += 1  # it changed what the proposer is told
            constraints = merged
        return base.model_copy(update={"guidance": Guidance(text="\n".join(texts), constraints=constraints)})

    def _propose(self, ctx: ProposalContext) -> tuple[Proposal | None, tuple[str, ...]]:
        feedback: list[str] = list(ctx.feedback)  # a batch re-asks with its refusals (a duplicate in flight)
        for _attempt in range(self.max_reasks + 1):
            asked = ctx.model_copy(update={"feedback": tuple(feedback)})
            candidate = None
            for attached, out in self._hook("propose", asked):
                if out is not None:
                    # bookkeeping is the controller's: no mechanism may pass its candidate off as the baseline
                    keep_origin = out.origin not in ("proposer", BASELINE)
                    candidate = out if keep_origin else out.model_copy(update={"origin": attached.name})
                    self._effects[attached.name]["propose"] += 1  # it supplied the candidate
                    break
            if candidate is None:
                candidate = self.proposer.propose(asked)
            rejected = None
            # one mechanism at a time, each seeing the candidate as rewritten by the ones before it
            for attached in list(self.mechanisms):
                if "filter" not in attached.hooks or attached not in self.mechanisms:
                    continue
                ok, verdict = self._call(attached, "filter", candidate, asked)
                if not ok or verdict is None or verdict.action == "accept":
                    continue
                if verdict.action == "reject":
                    rejected = f"{attached.name}: {verdict.reason or 'rejected'}"
                    self._effects[attached.name]["filter"] += 1  # it refused the candidate
                    break
                if verdict.proposal is not None:
                    rewritten = verdict.proposal
                    if rewritten.is_baseline:
                        rewritten = rewritten.model_copy(update={"origin": attached.name})
                    if rewritten.changes != candidate.changes or rewritten.payload != candidate.payload:
                        self._effects[attached.name]["filter"] += 1  # it rewrote the candidate
                    candidate = rewritten
            if rejected is None:
                return candidate, tuple(feedback)
            feedback.append(rejected)
        return None, tuple(feedback)

    def step(self, cycle: int = 0, *, baseline: bool = False) -> TrialRecord:
        iteration = len(self.history)
        self._calls = defaultdict(Counter)
        self._effects = defaultdict(Counter)
        started = time.monotonic()
        fields: dict[str, Any] = {"status": Status.CRASH}
        proposal: Proposal | None = None
        rejections: tuple[str, ...] = ()
        best_before = self.best_score
        parent = self.incumbent
        try:
            if baseline:
                ctx = self.context(iteration, cycle)
                proposal = Proposal(origin=BASELINE, hypothesis="unchanged starting point", region=BASELINE)
            elif self._pending is not None and self._pending["iteration"] == iteration:
                ctx = self.context(iteration, cycle)
                proposal = Proposal.model_validate(self._pending["proposal"])
                rejections = tuple(self._pending.get("rejections", ()))
                for name, counts in self._pending.get("hook_calls", {}).items():
                    self._calls[name].update(counts)
                for name, counts in self._pending.get("hook_effects", {}).items():
                    self._effects[name].update(counts)
                log.info("loop %s: resuming iteration %d with its journaled candidate", self.loop, iteration)
            else:
                ctx = self._guided_context(iteration, cycle)
                proposal, rejections = self._propose(ctx)
            self._pending = None
            if proposal is None:
                fields = {"status": Status.REJECTED, "error": "every candidate was filtered out"}
            else:
                self.run.journal.append({
                    "type": "proposal", "loop": self.loop, "iteration": iteration, "cycle": cycle,
                    "proposal": proposal.model_dump(mode="json"), "rejections": list(rejections),
                    "hook_calls": {k: dict(v) for k, v in self._calls.items()},
                    "hook_effects": {k: dict(v) for k, v in self._effects.items() if v},
                }, fsync=False)  # losing it on a crash only means the candidate is proposed again
                fields = self._execute_and_judge(proposal, ctx, iteration, cycle, parent)
        except (RunStopped, KeyboardInterrupt, SystemExit) as exc:
            self.run.journal.append({"type": "stopped", "loop": self.loop, "iteration": iteration,
                                     "reason": f"{type(exc).__name__}: {exc}"})
            raise
        except RunDirError:  # the run cannot record anything: stop; resume re-runs this iteration
            raise
        except Exception as exc:
            log.warning("loop %s iteration %d crashed: %s", self.loop, iteration, exc)
            fields = {"status": Status.CRASH, "error": f"{type(exc).__name__}: {exc}",
                      "log_tail": tail(traceback.format_exc())}
            if _is_outage(exc):
                fields["info"] = {"provider_failure": True}
        record = TrialRecord(
            loop=self.loop, iteration=iteration, cycle=cycle, proposal=proposal, best_before=best_before,
            parent_artifact=parent, rejections=rejections, duration_s=round(time.monotonic() - started, 4),
            **fields,
        )
        record = self._finish(record)
        self._stop_on_outage()
        return record

    def _stop_on_outage(self) -> None:
        """After ``max_provider_failures`` iterations in a row lost to the provider, stop cleanly."""
        n = self.max_provider_failures
        recent = self.history[-n:] if n > 0 else []
        if n > 0 and len(recent) == n and all(r.info.get("provider_failure") for r in recent):
            reason = (f"the provider failed {n} iterations in a row (last: {recent[-1].error[:200]}); "
                      "the run is stopped with its state saved: `resume` it when the provider is back")
            self.run.journal.append({"type": "stopped", "loop": self.loop, "iteration": len(self.history),
                                     "reason": f"ProviderOutage: {reason}"})
            raise ProviderOutage(reason)

    def _execute_and_judge(self, proposal: Proposal, ctx: ProposalContext, iteration: int, cycle: int,
                           parent: str | None) -> dict[str, Any]:
        exec_ctx = self.exec_context(iteration, cycle, parent)
        # with a pool (core.batch), a single trial (the baseline) runs in a slot too: same environment
        result: ExecutionResult = (self.batch.execute_one(proposal, exec_ctx) if self.batch
                                   else self.executor.execute(proposal, exec_ctx))
        return self._judge(proposal, ctx, iteration, cycle, self._measured(result))

    def exec_context(self, iteration: int, cycle: int, parent: str | None) -> ExecContext:
        return ExecContext(loop=self.loop, iteration=iteration, cycle=cycle, run_dir=self.run.path,
                           trial_dir=self.run.trial_dir(self.loop, iteration), incumbent=parent)

    def _measured(self, result: ExecutionResult) -> dict[str, Any]:
        """A record's fields from an execution result, before the keep/discard decision: with a
        ``status`` when it did not run to a result, else with its ``score`` (core.batch journals
        these as a trial finishes and decides later, in proposal order)."""
        fields: dict[str, Any] = {"metrics": dict(result.metrics), "artifact": result.artifact,
                                  "log_tail": tail(result.log_tail), "info": dict(result.detail)}
        if result.status != "ok":
            fields["status"] = _RESULT_STATUS[result.status]
            fields["error"] = str(result.detail.get("error", result.status))
            return fields
        evaluation: Evaluation = self.evaluator.evaluate(
            EvalInput(metrics=dict(result.metrics), artifact_text=self._artifact_text(result.artifact))
        )
        fields["score"] = evaluation.score
        fields["details"] = dict(evaluation.details)
        return fields

    def _judge(self, proposal: Proposal, ctx: ProposalContext, iteration: int, cycle: int,
               fields: dict[str, Any]) -> dict[str, Any]:
        """Keep or discard measured ``fields`` against the incumbent now (decider, then mechanisms)."""
        if "status" in fields:
            return fields
        keep = bool(self.decider.decide(fields["score"], self.best_score, ctx))
        decided_by = "decider"
        draft = TrialRecord(loop=self.loop, iteration=iteration, cycle=cycle, proposal=proposal,
                            status=Status.KEEP if keep else Status.DISCARD, best_before=self.best_score, **fields)
        if not proposal.is_baseline:
            for attached, verdict in self._hook("decide", draft, ctx):
                if verdict is not None:
                    if verdict != keep:
                        self._effects[attached.name]["decide"] += 1  # it overrode the decider
                    keep, decided_by = verdict, attached.name
                    break
        else:
            keep = True  # the baseline is the starting incumbent by definition
        fields["status"] = Status.KEEP if keep else Status.DISCARD
        fields["decided_by"] = decided_by
        return fields

    def _artifact_text(self, artifact: str | None) -> str | None:
        if not artifact:
            return None
        path = self.run.abs(artifact)
        if not path.is_file() or path.stat().st_size > MAX_ARTIFACT_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")

    def _finish(self, record: TrialRecord) -> TrialRecord:
        best_after = record.score if record.status is Status.KEEP else record.best_before
        record = record.model_copy(update={"best_after": best_after})
        try:
            self.executor.settle(record)
        except Exception as exc:
            log.warning("loop %s: settle failed: %s", self.loop, exc)
            record = record.model_copy(update={"error": f"{record.error} settle failed: {exc}".strip()})
        for _ in self._hook("observe", record):
            pass
        record = record.model_copy(update={"hook_calls": {k: dict(v) for k, v in self._calls.items()},
                                           "hook_effects": {k: dict(v) for k, v in self._effects.items() if v}})
        self.run.journal.append({"type": "trial", "loop": self.loop, "record": record.model_dump(mode="json")})
        self._remember(record)
        return record

    # -- running -------------------------------------------------------------------------------------
    def ensure_baseline(self, cycle: int = 0) -> TrialRecord:
        """Measure the unchanged starting point once (iteration 0); on resume, return the journaled one."""
        for record in self.history:
            if record.proposal is not None and record.proposal.is_baseline:
                return record
        if self.history:
            raise RuntimeError(f"loop {self.loop!r} has records but no baseline")
        return self.step(cycle, baseline=True)

    def run_cycle(self, cycle: int, iterations: int, *, deadline: float | None = None,
                  on_record: Callable[[TrialRecord], None] | None = None) -> list[TrialRecord]:
        """Run until ``cycle`` holds ``iterations`` counted records (:meth:`completed`: a resumed cycle
        runs only what is missing), or until ``deadline`` (a ``time.monotonic()`` value) has passed."""
        while self._per_cycle[cycle] < iterations:
            if deadline is not None and time.monotonic() >= deadline:
                log.info("loop %s: wall-time limit reached in cycle %d", self.loop, cycle)
                break
            try:
                # K trials at a time with a batch runner (core.batch), else one
                records = self.batch.step(cycle, iterations - self._per_cycle[cycle]) if self.batch else [self.step(cycle)]
            except ProviderOutage:
                if on_record and self.history:  # the crash that triggered the stop is shown too
                    on_record(self.history[-1])
                raise
            for record in records:
                if on_record:
                    on_record(record)
        return self.records(cycle)


def _search_json(search: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The search configuration as the context carries it (JSON: it also crosses to workers)."""
    return search.model_dump(mode="json") if isinstance(search, BaseModel) else dict(search)


def _is_outage(exc: BaseException) -> bool:
    """A provider that could not be reached or refused service (not one that answered badly)."""
    return isinstance(exc, ProviderError) and not isinstance(exc, (StructuredOutputError, ReplayMissError))


def hook_call_totals(records: Iterable[TrialRecord], *, field: str = "hook_calls") -> dict[str, dict[str, int]]:
    """Sum the per-iteration hook-call counts of ``records`` per mechanism and hook (``field=
    "hook_effects"``: the calls that changed something)."""
    totals: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for name, counts in getattr(record, field).items():
            totals[name].update(counts)
    return {name: dict(counts) for name, counts in totals.items()}


def hook_effect_totals(records: Iterable[TrialRecord]) -> dict[str, dict[str, int]]:
    """Per mechanism and hook, how many calls changed what happened (see :class:`TrialRecord`)."""
    return hook_call_totals(records, field="hook_effects")
