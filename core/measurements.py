"""What a loop has measured: configuration keys, the noise across training seeds, the replicates
owed and the candidates that would waste a trial.

:class:`Measurements` is the part of :class:`~core.inner_loop.InnerLoopController` that answers
"was this configuration measured, and how noisy is the metric?" from state derived from the
journaled history (``_runs``, ``_scores``, ``_first``, ``_incumbent_changes``, kept up to date by the
controller's ``_remember``), so a resumed run answers exactly as the uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from core.plugins import Decider, Executor, pooled_noise
from core.records import BASELINE, REPLICATE, Proposal, TrialRecord, canonical_json

if TYPE_CHECKING:
    from core.state import RunDir

log = logging.getLogger("core.inner_loop")


class Measurements:
    """Configuration keys, noise and replicates; the host class sets ``run``, ``loop``, ``seed``,
    ``executor``, ``decider``, ``cycles``, ``history`` and the derived ``_runs``, ``_scores``, ``_first`` and
    ``_incumbent_changes``, and provides ``incumbent`` and ``incumbent_record``."""

    run: RunDir
    loop: str
    seed: int
    executor: Executor
    decider: Decider
    cycles: int | None
    history: list[TrialRecord]
    _runs: Counter
    _scores: dict[str, list[float]]
    _first: dict[str, TrialRecord]
    _incumbent_changes: dict[str, Any]
    incumbent: str | None
    incumbent_record: TrialRecord | None

    def config_key(self, proposal: Proposal) -> str | None:
        """A short hash of the full configuration ``proposal`` produces from the incumbent (see
        :meth:`Executor.config_key`); ``None`` when the executor cannot tell (never deduplicated)."""
        try:
            full = self.executor.config_key(proposal, self.incumbent, self.run.path)
        except Exception as exc:  # e.g. an invalid value: execute() reports it as the trial's failure
            log.debug("loop %s: no config key for %s: %s", self.loop, proposal.changes, exc)
            return None
        if full is None:
            changes = {**self._incumbent_changes, **proposal.changes}
            parent = (self.incumbent_record.info.get("config_key") if self.incumbent_record else None) \
                if proposal.payload is not None else None
            full = {"changes": changes, "payload": proposal.payload, "parent": parent}
        return hashlib.sha256(canonical_json(full).encode()).hexdigest()[:16]

    @property
    def noise(self) -> float | None:
        """The measured noise: the pooled standard deviation of the scores of every configuration
        measured on more than one training seed (``None`` until one was)."""
        return pooled_noise(list(self._scores.values()))

    def noise_floor(self) -> float:
        """The smallest single-seed gain the decider treats as real (0 for strict improvement)."""
        return self.decider.floor(self.noise)

    def _replicate_seed(self, key: str | None) -> int | None:
        """The training seed of the next measurement of ``key``: ``None`` (the executor's own) for the
        first, then ``seed + 1000·k`` for the k-th replicate."""
        k = self._runs[key] if key else 0
        return self.seed + 1000 * k if k else None

    def _owed_replicate(self, cycle: int) -> Proposal | None:
        """The replicate this iteration must measure, if any (derived from the history, so a resumed
        run repeats nothing): a retest of the last candidate the decider called a near-tie, or one of
        the baseline replicates the decider asks for (they measure the noise floor)."""
        if not self.executor.seeded or not self.history:
            return None
        last = self.history[-1]
        verdict = (last.info.get("decision") or {}).get("verdict")
        # a retest follows its near-tie at once: in the same cycle, or in the next where each
        # iteration is a cycle of its own (Level 2)
        follows = last.cycle == cycle or (self.cycles is not None and last.cycle == cycle - 1)
        if verdict == "retest" and follows and last.proposal is not None:
            first = self._first.get(last.info.get("config_key") or "", last)
            where = "in the next cycle" if self.cycles is not None else "on another training seed"
            return Proposal(changes=dict(last.proposal.changes), payload=last.proposal.payload,
                            region=last.proposal.region, origin=REPLICATE,
                            hypothesis=f"retest of iteration {first.iteration} {where}")
        baseline = self.history[0]
        wanted = self.decider.baseline_replicates
        if wanted <= 0 or baseline.proposal is None or not baseline.proposal.is_baseline or not baseline.kept:
            return None
        done = sum(1 for r in self.history if r.info.get("replicate_of") == baseline.iteration)
        if done >= wanted or self.incumbent_record is not baseline:
            return None
        return Proposal(origin=REPLICATE, region=BASELINE,
                        hypothesis="the baseline on another training seed (measures the noise floor)")

    def _waste(self, candidate: Proposal) -> str | None:
        """Why executing ``candidate`` would waste a trial (infeasible, or already measured), else None."""
        changes = canonical_json(dict(candidate.changes))
        try:
            reason = self.executor.infeasible(candidate, self.incumbent, self.run.path)
        except Exception as exc:
            log.debug("loop %s: feasibility check failed: %s", self.loop, exc)
            reason = None
        if reason:
            return f"infeasible: {changes} ({candidate.region or 'no region'}) can never run: {reason}"
        key = self.config_key(candidate)
        if key and self._runs[key]:
            first = self._first[key]
            score = f"score {first.score:.6g}" if first.score is not None else first.status.value
            return (f"duplicate: {changes} ({candidate.region or 'no region'}) gives a configuration already "
                    f"measured (iteration {first.iteration}, {score}); propose one not measured yet")
        return None
