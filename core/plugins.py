"""Plugin points of the inner-loop controller: proposer, executor, evaluator, decider.

Call order in one iteration (see :class:`core.inner_loop.InnerLoopController`):

1. mechanisms' ``guidance`` → merged into the :class:`ProposalContext`;
2. mechanisms' ``propose``, else :meth:`Proposer.propose` (re-asked with the reason when a
   mechanism's ``filter`` rejects, at most ``max_reasks`` times);
3. :meth:`Executor.execute` on the accepted candidate, in its own trial directory;
4. :meth:`Evaluator.evaluate` on an :class:`EvalInput` (metrics and artifact text only);
5. :meth:`Decider.decide`, then mechanisms' ``decide`` may override;
6. :meth:`Executor.settle` with the final record (commit or roll back live state);
7. mechanisms' ``observe``; the record is journaled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from core.records import EvalInput, Evaluation, ExecutionResult, Proposal, ProposalContext, TrialRecord


class Proposer(ABC):
    """Makes the next candidate. Called once per iteration, plus once per re-ask."""

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> Proposal: ...


@dataclass(frozen=True)
class ExecContext:
    """Where and on what a candidate executes. ``incumbent`` is a path relative to ``run_dir``
    (the artifact of the last kept trial, or the baseline), ``None`` before any exists."""

    loop: str
    iteration: int
    cycle: int
    run_dir: Path
    trial_dir: Path
    incumbent: str | None


class Executor(ABC):
    """Turns a candidate into a result: trains, runs a pipeline, runs an inner cycle."""

    @abstractmethod
    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        """Called once per candidate that passed every filter. Must not raise for an ordinary task
        failure: return status ``crash``/``fail``/``timeout`` with the log tail instead."""

    def settle(self, record: TrialRecord) -> None:  # noqa: B027 - optional hook
        """Called after the keep/discard decision, before the record is journaled. Executors that
        hold live state (Level 2 attaches a mechanism while executing) commit or roll back here."""


class Evaluator(ABC):
    """Scores an executed candidate. Sees only :class:`EvalInput` — never lessons or guidance."""

    @abstractmethod
    def evaluate(self, inp: EvalInput) -> Evaluation: ...


class MetricEvaluator(Evaluator):
    """Score = one metric of the execution result (e.g. ``val_bpb``)."""

    def __init__(self, *, metric: str) -> None:
        self.metric = metric

    def evaluate(self, inp: EvalInput) -> Evaluation:
        if self.metric not in inp.metrics:
            raise KeyError(f"execution result has no metric {self.metric!r}")
        return Evaluation(score=float(inp.metrics[self.metric]))


class Decider(ABC):
    """Keep or discard an evaluated candidate, given the incumbent's score."""

    @abstractmethod
    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool: ...


class StrictImprovement(Decider):
    """Keep only on a strict improvement (the paper's Level-1 rule)."""

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        return ctx.better(score, incumbent)


class NoiseAwareDecider(Decider):
    """Keep only when the gain exceeds a measured noise floor (e.g. the std of repeated baselines),
    so a lucky seed is not accepted as progress."""

    def __init__(self, *, noise_floor: float) -> None:
        if noise_floor < 0:
            raise ValueError("noise_floor must be >= 0")
        self.noise_floor = noise_floor

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        if incumbent is None:
            return True
        gain = incumbent - score if ctx.direction == "minimize" else score - incumbent
        return gain > self.noise_floor
