"""Level 2's one cycle-trial executor, and an installer per plug-in kind.

Level 2 is the same :class:`~core.inner_loop.InnerLoopController` as Level 1, run over generated
plug-ins. A candidate's ``payload`` is source code; :class:`CycleTrialExecutor` executes it the same
way in every domain:

1. load it through :class:`~core.loader.MechanismLoader` (content-hash file, policy lint, sandboxed
   worker, contract check) — a failure is a ``crash`` record and the cycle runs with the parent set;
2. hand it to the domain's :class:`Installer`, which puts it into the **running** inner loop(s) —
   :class:`MechanismInstaller` attaches a mechanism, article_opt's installer injects a stage;
3. run the next inner cycle under it and measure its gain against its parent's. With an installer
   that can split a cycle (:class:`MechanismInstaller`, ``paired=True``: the default) the trial is
   *paired*: in each pair of the cycle's iterations the design steers one and the parent set the
   other, in a seeded random order (:func:`design_arm`, :meth:`~core.attachment.MechanismSlots.gate`),
   and the two arms' gains per iteration
   (:func:`paired_gains`) are compared — both arms meet the same incumbents. Otherwise the cycle's
   gain per iteration (:func:`cycle_gain`) is compared with the cycle before's (run without it, same
   budget), which is biased against the design: that cycle started from a worse incumbent;
4. ``settle``: kept → the installer journals it (and lifts the gate); otherwise the installer
   removes it (kill = revert).

Its score is ``gain − parent_gain`` (:class:`GainOverParent`) and the keep rule is a pluggable
:class:`~core.plugins.Decider`; the default, :class:`BeatsParent`, keeps only a gain beyond the noise.
Under the noise-aware rule a paired trial that is inconclusive (its score within the margin either
way) is retested: the same design is loaded again and tried in the next cycle, and the verdict rests
on both trials — Level 1's near-tie rule, one level up.
"""

from __future__ import annotations

import logging
import math
import random
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from statistics import fmean
from typing import Any

from core.errors import MechanismError
from core.inner_loop import InnerLoopController, hook_call_totals
from core.loader import LoadContract, LoadedMechanism, MechanismLoader
from core.plugins import Decider, Evaluator, Evidence, ExecContext, Executor, Verdict, outcome
from core.records import (
    EvalInput,
    Evaluation,
    ExecutionResult,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
)
from core.state import RunDir

log = logging.getLogger(__name__)
LOOP = "mechanism"


def cycle_gain(loops: Iterable[InnerLoopController], cycle: int) -> float | None:
    """Mean over loops of the cycle's improvement of the incumbent score per iteration, signed so
    that larger is better in every direction; ``None`` when no loop has a record in ``cycle``."""
    gains = []
    for ctl in loops:
        recs = ctl.records(cycle)
        if not recs:
            continue
        start = recs[0].best_before
        end = recs[-1].best_after if recs[-1].best_after is not None else start
        if start is None or end is None:
            gains.append(0.0)
            continue
        gains.append(((end - start) if ctl.direction == "maximize" else (start - end)) / len(recs))
    return round(sum(gains) / len(gains), 9) if gains else None


def design_arm(offset: int, seed: int) -> int:
    """The arm of the iteration ``offset`` iterations into a paired trial's cycle: 0 (the design's) or
    1 (its parent set's). The cycle is split into pairs of iterations, one for each arm, and a coin
    drawn from ``seed`` and the pair's index decides which arm moves first in each pair (a trailing
    single iteration goes to the coin's first arm). Gains shrink as a search goes on, so a fixed
    order favours whoever moves first: with plain alternation a design that does nothing won its
    trial on every seed of the test task, and in ABBA order it still did whenever the cycle's length
    is 2 mod 4 (the suite's 10). Random order within pairs makes that advantage zero on average."""
    pair, second = divmod(offset, 2)
    design_first = random.Random(f"{seed}:{pair}").random() < 0.5
    return int(design_first) if second else int(not design_first)


def paired_gains(ctl: InnerLoopController, records: list[TrialRecord], start: int, seed: int) -> dict[str, float] | None:
    """A paired trial's two arms: the improvement of the incumbent per iteration on the iterations the
    design steered and on those its parent set steered (:func:`design_arm` with ``seed``), signed so
    that larger is better. A retest counts for the arm that proposed the configuration it re-measures;
    a re-measurement of the incumbent (a baseline replicate) and an iteration lost to the provider
    (retried, not counted in the budget) for neither. ``None`` unless both arms ran."""
    sums, counts = [0.0, 0.0], [0, 0]
    for record in records:
        if record.decided_by == "replicate" or record.info.get("provider_failure"):
            continue  # the incumbent re-measured, or nothing measured: neither arm's move
        origin = record.origin_iteration
        arm = design_arm((origin if origin >= start else record.iteration) - start, seed)
        counts[arm] += 1
        before, after = record.best_before, record.best_after
        if before is not None and after is not None:
            sums[arm] += (after - before) if ctl.direction == "maximize" else (before - after)
    if not all(counts):
        return None
    return {"design_gain": round(sums[0] / counts[0], 9), "parent_arm_gain": round(sums[1] / counts[1], 9),
            "design_iterations": float(counts[0]), "parent_iterations": float(counts[1])}


def design_verdict(record: TrialRecord) -> str:
    """A Level-2 record's verdict in words: ``kept``; ``retest`` (inconclusive: the same design is
    tried again in the next cycle); ``reverted``; or the status of a design that did not run."""
    if record.status is Status.KEEP:
        return "kept"
    if outcome(record) == "retest":
        return "retest"
    return "reverted" if record.status is Status.DISCARD else record.status.value


def design_line_verdict(record: TrialRecord) -> str:
    """A Level-2 record's verdict as a progress line shows it (the parent set's cycle: ``baseline``)."""
    if record.proposal is None or record.proposal.is_baseline:
        return "baseline"
    said = design_verdict(record)
    return "inconclusive: retest next cycle" if said == "retest" else said


class GainOverParent(Evaluator):
    """Score of an outer candidate: its gain per iteration minus its parent's (the two arms of a paired
    trial, or its cycle against the cycle before)."""

    def evaluate(self, inp: EvalInput) -> Evaluation:
        gain, parent = inp.metrics["gain"], inp.metrics["parent_gain"]
        return Evaluation(score=round(gain - parent, 9), details={"gain": gain, "parent_gain": parent})


class BeatsParent(Decider):
    """Keep an outer candidate only when it beat its parent by more than ``margin`` (score > margin;
    0 without one: any gain). The noise-aware schedule passes :func:`outer_margin` — the inner loops'
    noise floor spread over the iterations compared (a cycle for a Level-1.5 patch, an arm of a
    paired trial for a Level-2 design) — so a plug-in or a config patch is kept only on evidence
    beyond the noise, the same rule as Level 1's.

    With ``max_retests`` > 0 (Level 2's paired trials under the noise-aware rule) an inconclusive
    trial — a score within the margin either way, e.g. neither arm gained — is not a verdict: the
    design is tried again in the next cycle (a *retest*, while the run has one) and judged on the
    mean score of its trials against the margin over their pooled iterations (``margin / sqrt(n)``
    for ``n`` trials). Only a score below ``-margin`` is a loss on the evidence; after its last
    retest an inconclusive design is reverted, as before."""

    def __init__(self, *, margin: Callable[[], float] | None = None, max_retests: int = 0) -> None:
        if max_retests < 0:
            raise ValueError("max_retests must be >= 0")
        self.margin = margin
        self.max_retests = max_retests

    def threshold(self) -> float:
        return max(1e-12, float(self.margin()) if self.margin is not None else 0.0)

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext | None) -> bool:
        return score > self.threshold()

    def judge(self, evidence: Evidence, ctx: ProposalContext) -> tuple[Verdict, dict[str, Any]]:
        n = len(evidence.candidate)
        score, threshold = fmean(evidence.candidate), self.threshold() / math.sqrt(n)
        info: dict[str, Any] = {"rule": "beats-parent", "margin": threshold, "trials": n}
        what = f"gain over the parent {score:.6g}" + (f" (mean of {n} trials)" if n > 1 else "")
        if score > threshold:
            return "keep", {**info, "reason": f"{what} > margin {threshold:.6g}"}
        if score >= -threshold and evidence.can_retest and n <= self.max_retests:
            return "retest", {**info, "reason": f"{what} within the margin {threshold:.6g} either way: inconclusive, "
                                                "tried again in the next cycle"}
        return "discard", {**info, "reason": f"{what} <= margin {threshold:.6g}"}


def outer_margin(loops: Iterable[InnerLoopController], inner_budget: int) -> float:
    """The noise an outer verdict must beat, in :func:`cycle_gain` units (per iteration): the largest
    noise floor of the inner loops (the smallest single-seed gain their decider counts) over the
    cycle's iterations. 0 for a deterministic target or strict improvement."""
    floors = [ctl.noise_floor() for ctl in loops]
    return max(floors, default=0.0) / max(1, inner_budget)


class Installer(ABC):
    """Puts one loaded plug-in of a kind into the running inner loop(s) and takes it out again."""

    contract: LoadContract
    paired: bool = False  # True: it can split a cycle between a design and its parent set (a paired trial)

    @abstractmethod
    def install(self, loaded: LoadedMechanism, proposal: Proposal, iteration: int, cycle: int) -> tuple[str, dict[str, Any]]:
        """Install; return the name it runs under and detail for the record. Raise ``ValueError``,
        ``TypeError`` or :class:`~core.errors.MechanismError` when it cannot be installed."""

    @abstractmethod
    def failure(self, name: str) -> str | None:
        """Why ``name`` is no longer installed (a hook failed, a stage was ejected), else ``None``."""

    @abstractmethod
    def remove(self, name: str, loaded: LoadedMechanism, record: TrialRecord) -> None:
        """Revert: take it out and kill its worker (``loaded``), journaled by the installer."""

    @abstractmethod
    def reinstall(self, loaded: LoadedMechanism, record: TrialRecord) -> None:
        """On resume: install a design that was kept (same checks as :meth:`install`)."""

    def kept(self, name: str, record: TrialRecord) -> None:  # noqa: B027 - optional
        """Called when the design is kept."""

    def cycle_metrics(self, name: str, cycle: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Metrics and detail about ``name`` in ``cycle`` (e.g. how often it was called)."""
        return {}, {}

    def load_failed(self, proposal: Proposal, iteration: int, cycle: int, exc: BaseException) -> None:  # noqa: B027
        """Called when a design failed to load or install (already a crash record)."""

    def removed_since(self, record: TrialRecord) -> bool:
        """True when a kept design was removed later (resume must not install it again)."""
        return False

    def reload_failed(self, record: TrialRecord, exc: BaseException) -> None:
        """A kept design that no longer loads on resume: the run goes on with its parent set."""
        log.warning("could not reload kept design from %s: %s", record.artifact, exc)


class MechanismInstaller(Installer):
    """Attaches a generated :class:`~core.mechanism.Mechanism` to the running Level-1 controller."""

    def __init__(self, *, inner: InnerLoopController, run: RunDir, contract: LoadContract | None = None,
                 paired: bool = True) -> None:
        from core.loader import MECHANISM_CONTRACT

        self.inner = inner
        self.run = run
        self.contract = contract or MECHANISM_CONTRACT
        self.paired = paired
        self._starts: dict[str, tuple[int, int]] = {}  # design on trial -> (its cycle's first iteration, arm seed)

    def install(self, loaded: LoadedMechanism, proposal: Proposal, iteration: int, cycle: int) -> tuple[str, dict[str, Any]]:
        name = f"{loaded.name}#{iteration}"
        try:
            # first in line: the design on trial makes the move when it proposes one, ahead of earlier keeps
            self.inner.attach(loaded.instance, name=name, origin="generated", digest=loaded.digest, front=True)
        except (MechanismError, ValueError) as exc:
            raise ValueError(f"attach: {exc}") from exc
        if self.paired:
            # a paired trial: in each pair of the cycle's iterations the design steers one and its parent
            # set the other, in a seeded random order — both arms meet the same incumbents
            done = self.inner.records(cycle)  # a resumed trial: the cycle began before the interruption
            start = done[0].iteration if done else len(self.inner.history)
            seed = self.inner.seed * 1_000_003 + iteration  # the order of the arms: the same on resume
            self._starts[name] = (start, seed)
            self.inner.gate(name, lambda it, s=start, k=seed: it >= s and design_arm(it - s, k) == 0)
        return name, {"mechanism": name, "digest": loaded.digest, "hooks": list(loaded.hooks_overridden),
                      "load_seconds": round(loaded.load_seconds, 3), "worker_pid": loaded.worker_pid,
                      "sandbox": loaded.sandbox}

    def failure(self, name: str) -> str | None:
        if any(m.name == name for m in self.inner.mechanisms):
            return None
        return "mechanism was detached during the cycle (hook failure)"

    def remove(self, name: str, loaded: LoadedMechanism, record: TrialRecord) -> None:
        self._starts.pop(name, None)
        gains = f"gain {record.metrics.get('gain')} against its parent's {record.metrics.get('parent_gain')}"
        if design_verdict(record) == "retest":
            why = f"inconclusive ({gains}): loaded again for a retest in the next cycle"
        else:
            why = f"reverted: {record.status.value} ({gains})"
        # detaching kills the worker: nothing of it keeps running
        self.inner.detach(name, reason=why)

    def kept(self, name: str, record: TrialRecord) -> None:
        if self._starts.pop(name, None) is not None:
            self.inner.gate(name, None)  # kept: it steers every iteration from now on

    def cycle_metrics(self, name: str, cycle: int) -> tuple[dict[str, float], dict[str, Any]]:
        records = self.inner.records(cycle)
        calls = hook_call_totals(records).get(name, {})
        metrics, detail = {"hook_calls": float(sum(calls.values()))}, {"hook_calls": calls}
        trial = self._starts.get(name)
        if trial is not None:
            arms = paired_gains(self.inner, records, *trial)
            if arms is not None:
                metrics.update(arms)
        return metrics, detail

    def removed_since(self, record: TrialRecord) -> bool:
        detached = {e["name"] for e in self.run.journal.events("mechanism_detached", loop=self.inner.loop)}
        return record.info.get("mechanism") in detached

    def reinstall(self, loaded: LoadedMechanism, record: TrialRecord) -> None:
        self.inner.attach(loaded.instance, name=f"{loaded.name}#{record.iteration}", origin="generated",
                          digest=loaded.digest, front=True)  # kept order, each ahead of the ones before: as run

    def reload_failed(self, record: TrialRecord, exc: BaseException) -> None:
        # a kept mechanism that no longer loads (it hangs, or its file is gone) is detached and
        # journaled; the run goes on with its parent mechanism set rather than hanging resume
        name = str(record.info.get("mechanism") or record.artifact)
        log.warning("could not restart kept mechanism %s: %s", name, exc)
        self.run.journal.append({"type": "mechanism_detached", "loop": self.inner.loop,
                                 "iteration": len(self.inner.history), "name": name, "hook": None,
                                 "reason": f"reload on resume failed: {exc}"[:600],
                                 "traceback_tail": getattr(exc, "traceback_tail", "")})


class CycleTrialExecutor(Executor):
    """Load → install → run one inner cycle → report the gain; ``settle`` keeps or removes it.

    ``seeded``: a design tried again (a retest) runs in another cycle, on other draws, so it is a new
    measurement of the same design."""

    seeded = True

    def __init__(self, *, loader: MechanismLoader, installer: Installer, run_cycle: Callable[[int], None],
                 gain: Callable[[int], float | None]) -> None:
        self.loader = loader
        self.installer = installer
        self.run_cycle = run_cycle
        self.gain = gain
        self._current: tuple[str, LoadedMechanism] | None = None

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        self._current = None
        if proposal.is_baseline:  # the parent configuration's own cycle
            self.run_cycle(ctx.cycle)
            gain = self.gain(ctx.cycle) or 0.0
            return ExecutionResult(status="ok", metrics={"gain": gain, "parent_gain": gain})
        parent_gain = self.gain(ctx.cycle - 1) or 0.0
        loaded = None
        try:
            loaded = self.loader.load(proposal.payload or "")
            name, detail = self.installer.install(loaded, proposal, ctx.iteration, ctx.cycle)
        except (MechanismError, ValueError, TypeError) as exc:
            if loaded is not None:
                self.loader.unload(loaded)
            stage = getattr(exc, "stage", "install")
            log.warning("design rejected at stage %s: %s", stage, exc)
            self.installer.load_failed(proposal, ctx.iteration, ctx.cycle, exc)
            tail = getattr(exc, "traceback_tail", "") or traceback.format_exc()[-2000:]
            return ExecutionResult(status="crash", log_tail=tail,
                                   detail={"error": f"load failed at {stage}: {exc}", "stage": stage,
                                           "rule": getattr(exc, "rule", None)})
        self._current = (name, loaded)
        self.run_cycle(ctx.cycle)
        gain = self.gain(ctx.cycle) or 0.0
        extra_metrics, extra_detail = self.installer.cycle_metrics(name, ctx.cycle)
        metrics = {"gain": gain, "parent_gain": parent_gain, **extra_metrics}
        if "design_gain" in extra_metrics:  # a paired trial: the two arms of the same cycle, not two cycles
            metrics.update(gain=extra_metrics["design_gain"], parent_gain=extra_metrics["parent_arm_gain"],
                           cycle_gain=gain, previous_cycle_gain=parent_gain)
            detail = {**detail, "verdict_basis": "paired arms of the cycle"}
        elif self.installer.paired:
            detail = {**detail, "verdict_basis": "the cycle before (the paired arms were incomplete)"}
        detail = {**detail, **extra_detail}
        failure = self.installer.failure(name)
        if failure is not None:
            return ExecutionResult(status="crash", metrics=metrics, artifact=loaded.path,
                                   detail={**detail, "error": failure})
        return ExecutionResult(status="ok", metrics=metrics, artifact=loaded.path, detail=detail)

    def settle(self, record: TrialRecord) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        name, loaded = current
        if record.status is Status.KEEP:
            self.installer.kept(name, record)
        else:
            self.installer.remove(name, loaded, record)


def reinstall_kept(level2: InnerLoopController, loader: MechanismLoader, installer: Installer, run: RunDir) -> None:
    """On resume: load and install again every kept design not removed since, in the order kept."""
    for record in level2.history:
        if record.status is not Status.KEEP or record.proposal is None or record.proposal.is_baseline:
            continue
        if not record.artifact or installer.removed_since(record):
            continue
        try:
            loaded = loader.load(run.abs(record.artifact).read_text(encoding="utf-8"))
        except (OSError, MechanismError, ValueError) as exc:
            installer.reload_failed(record, exc)
            continue
        try:
            installer.reinstall(loaded, record)
        except (MechanismError, ValueError, TypeError) as exc:
            loader.unload(loaded)
            installer.reload_failed(record, exc)
