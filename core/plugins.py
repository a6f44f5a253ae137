"""Plugin points of the inner-loop controller: proposer, executor, evaluator, decider.

Call order in one iteration (see :class:`core.inner_loop.InnerLoopController`):

1. mechanisms' ``guidance`` → merged into the :class:`ProposalContext`;
2. mechanisms' ``propose``, else :meth:`Proposer.propose` (re-asked with the reason when a
   mechanism's ``filter`` rejects, when :meth:`Executor.infeasible` names a broken constraint, or
   when :meth:`Executor.config_key` says the configuration was already measured in this loop — at
   most ``max_reasks`` times; then the iteration is REJECTED and nothing runs);
3. :meth:`Executor.execute` on the accepted candidate, in its own trial directory;
4. :meth:`Evaluator.evaluate` on an :class:`EvalInput` (metrics and artifact text only);
5. :meth:`Decider.judge` on the :class:`Evidence` (every measurement of the candidate's and the
   incumbent's configuration, and the measured noise), then mechanisms' ``decide`` may override;
6. :meth:`Executor.settle` with the final record (commit or roll back live state);
7. mechanisms' ``observe``; the record is journaled.

A decider may answer ``retest``: the next iteration re-measures the same configuration on another
training seed (a *replicate*, journaled as such and counted against the budget like any trial).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from core.records import EvalInput, Evaluation, ExecutionResult, Proposal, ProposalContext, TrialRecord

Verdict = Literal["keep", "discard", "retest"]


class Proposer(ABC):
    """Makes the next candidate. Called once per iteration, plus once per re-ask."""

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> Proposal: ...


@dataclass(frozen=True)
class ExecContext:
    """Where and on what a candidate executes. ``incumbent`` is a path relative to ``run_dir``
    (the artifact of the last kept trial, or the baseline), ``None`` before any exists. ``seed`` is
    the training seed of this trial: ``None`` for a configuration's first measurement (the
    executor's own, i.e. the run's ``--seed``), another integer for a replicate."""

    loop: str
    iteration: int
    cycle: int
    run_dir: Path
    trial_dir: Path
    incumbent: str | None
    seed: int | None = None


class Executor(ABC):
    """Turns a candidate into a result: trains, runs a pipeline, runs an inner cycle.

    ``seeded``: a replicate is a new measurement of the same candidate — the executor passes
    :attr:`ExecContext.seed` to the task (e.g. as ``BILEVEL_SEED``), or, for Level 2's cycle trials,
    runs it in another cycle on other draws. An executor that cannot (the default) is never asked
    for replicates, and the noise-aware rule is then strict improvement.
    """

    seeded: bool = False

    @abstractmethod
    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        """Called once per candidate that passed every filter. Must not raise for an ordinary task
        failure: return status ``crash``/``fail``/``timeout`` with the log tail instead."""

    def settle(self, record: TrialRecord) -> None:  # noqa: B027 - optional hook
        """Called after the keep/discard decision, before the record is journaled. Executors that
        hold live state (Level 2 attaches a mechanism while executing) commit or roll back here."""

    def config_key(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> Any:
        """The full configuration ``proposal`` produces from ``incumbent`` (JSON-able), called before
        it executes; two proposals with equal keys are the same trial. ``None`` (the default): the
        controller uses the incumbent's accumulated changes plus this proposal's changes and payload."""
        return None

    def infeasible(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> str | None:
        """A static check before execution: the reason the configuration can never run (a broken
        constraint of the target), or ``None``. An infeasible candidate is never executed."""
        return None


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


@dataclass(frozen=True)
class Evidence:
    """What a keep/discard decision rests on. ``candidate`` / ``incumbent``: every score measured for
    that configuration (one per training seed, this trial's last); ``noise``: the pooled standard
    deviation of scores across seeds of the same configuration (``None``: not measured yet);
    ``can_retest``: the candidate may still be measured again: on another seed in this cycle's
    budget, or (Level 2, one iteration a cycle) in the next cycle, while the run has one."""

    candidate: tuple[float, ...]
    incumbent: tuple[float, ...]
    noise: float | None = None
    can_retest: bool = False
    direction: Literal["minimize", "maximize"] = "minimize"

    @property
    def gain(self) -> float | None:
        """Mean candidate minus mean incumbent, signed so that larger is better."""
        if not self.incumbent:
            return None
        diff = fmean(self.candidate) - fmean(self.incumbent)
        return diff if self.direction == "maximize" else -diff


class Decider(ABC):
    """Keep or discard an evaluated candidate, given the incumbent's score.

    :meth:`decide` is the one method to write; :meth:`judge` (called by the controller) feeds it the
    mean scores and may be overridden to use all of the :class:`Evidence` or to ask for a retest.
    """

    @abstractmethod
    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool: ...

    def judge(self, evidence: Evidence, ctx: ProposalContext) -> tuple[Verdict, dict[str, Any]]:
        """The verdict and the evidence to journal with it (``record.info["decision"]``)."""
        incumbent = fmean(evidence.incumbent) if evidence.incumbent else None
        keep = bool(self.decide(fmean(evidence.candidate), incumbent, ctx))
        return ("keep" if keep else "discard"), {"rule": type(self).__name__, "gain": _round(evidence.gain)}

    def floor(self, noise: float | None) -> float:
        """The smallest single-seed gain this rule treats as real (0: any strict gain)."""
        return 0.0

    baseline_replicates: int = 0  # extra seeds of the baseline to measure the noise floor on


class StrictImprovement(Decider):
    """Keep only on a strict improvement (the paper's Level-1 rule)."""

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        return ctx.better(score, incumbent)


class NoiseAwareDecider(Decider):
    """Keep only gains the evidence supports beyond the noise across training seeds.

    The noise σ is measured (the pooled spread of the scores of configurations measured on more than
    one seed: replicates of the baseline, retests of near-ties), or given as a fixed ``noise_floor``
    — the smallest single-seed gain that counts (then σ = floor / (z·√2)). With ``n`` measurements of
    the candidate and ``m`` of the incumbent, a mean gain counts when it exceeds
    ``z · σ · sqrt(1/n + 1/m)``. The rule, in order:

    * gain ≤ 0 → discard;
    * σ measured as 0 (a deterministic target), or not measurable → strict improvement: keep;
    * gain above the threshold → keep;
    * a near-tie (0 < gain ≤ threshold) → ``retest`` on another seed while the candidate has at most
      ``max_retests`` extra measurements and the budget allows; else discard.

    Noise not measured yet and a retest possible: the improvement is retested (which measures it).
    """

    def __init__(self, *, noise_floor: float | None = None, z: float = 2.0, max_retests: int = 2,
                 baseline_replicates: int = 0) -> None:
        if noise_floor is not None and noise_floor < 0:
            raise ValueError("noise_floor must be >= 0")
        if z <= 0 or max_retests < 0 or baseline_replicates < 0:
            raise ValueError("z must be > 0; max_retests and baseline_replicates >= 0")
        self.noise_floor = noise_floor
        self.z = z
        self.max_retests = max_retests
        self.baseline_replicates = 0 if noise_floor is not None else baseline_replicates

    def sigma(self, measured: float | None) -> float | None:
        if self.noise_floor is not None:
            return self.noise_floor / (self.z * math.sqrt(2.0))
        return measured

    def floor(self, noise: float | None) -> float:
        sigma = self.sigma(noise)
        return self.z * math.sqrt(2.0) * sigma if sigma else 0.0

    def threshold(self, sigma: float, n: int, m: int) -> float:
        return self.z * sigma * math.sqrt(1.0 / n + 1.0 / max(m, 1))

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        if incumbent is None:
            return True
        gain = incumbent - score if ctx.direction == "minimize" else score - incumbent
        return gain > self.floor(None)

    def judge(self, evidence: Evidence, ctx: ProposalContext) -> tuple[Verdict, dict[str, Any]]:
        gain, n, m = evidence.gain, len(evidence.candidate), len(evidence.incumbent)
        sigma = self.sigma(evidence.noise)
        info: dict[str, Any] = {"rule": "noise-aware", "gain": _round(gain), "n": n, "m": m,
                                "noise": _round(sigma), "z": self.z}
        if gain is None:
            return "keep", {**info, "reason": "no incumbent yet"}
        if gain <= 0:
            return "discard", {**info, "reason": "not better than the incumbent"}
        if sigma is None:
            if evidence.can_retest:
                return "retest", {**info, "reason": "an apparent gain with the noise not measured yet: retest on another seed"}
            return "keep", {**info, "reason": "noise not measurable here: strict improvement"}
        if sigma == 0:
            return "keep", {**info, "threshold": 0.0, "reason": "noise measured as 0 (deterministic): strict improvement"}
        threshold = self.threshold(sigma, n, m)
        info["threshold"] = _round(threshold)
        if gain > threshold:
            return "keep", {**info, "reason": f"gain {gain:.6g} beyond the noise threshold {threshold:.6g}"}
        if evidence.can_retest and n <= self.max_retests:
            return "retest", {**info, "reason": f"near-tie: gain {gain:.6g} within the noise threshold {threshold:.6g}; "
                                                "retest on another seed"}
        return "discard", {**info, "reason": f"gain {gain:.6g} within the noise threshold {threshold:.6g}"}


Decision = Literal["strict", "noise-aware"]


def make_decider(decision: Decision, *, noise_floor: float | None = None, baseline_replicates: int = 0) -> Decider:
    """The Level-1 decider a run's settings name (see README, "Keep/discard decisions")."""
    if decision == "strict":
        return StrictImprovement()
    return NoiseAwareDecider(noise_floor=noise_floor, baseline_replicates=baseline_replicates)


def outcome(record: TrialRecord) -> str:
    """A record's outcome as a progress line shows it: its status, or ``replicate`` (a re-measurement
    of the incumbent) / ``retest`` (a near-tie, re-measured on another seed next)."""
    if record.decided_by == "replicate":
        return "replicate"
    if (record.info.get("decision") or {}).get("verdict") == "retest":
        return "retest"
    return record.status.value


def waste_counts(records: list[TrialRecord]) -> dict[str, int]:
    """Proposals refused before execution (no trial spent): duplicates of a measured configuration,
    infeasible ones; and iterations that ended with nothing runnable (REJECTED)."""
    refused = [r for record in records for r in record.rejections]
    return {"duplicate": sum(r.startswith("duplicate:") for r in refused),
            "infeasible": sum(r.startswith("infeasible:") for r in refused),
            "rejected_iterations": sum(record.status.value == "rejected" for record in records)}


def pooled_noise(groups: list[list[float]]) -> float | None:
    """Pooled standard deviation of the groups with two or more values (``None`` when none has)."""
    num, dof = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            mean = fmean(values)
            num += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    return math.sqrt(num / dof) if dof else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 12)
