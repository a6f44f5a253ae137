"""Noise-aware keep/discard: the noise across training seeds is measured (replicates of the baseline,
retests of near-ties), a gain is kept only beyond it, the evidence is journaled, replicates count
against the budget, and a deterministic target is judged exactly as strict improvement."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.level2 import BeatsParent, outer_margin
from core.plugins import (
    Evidence,
    ExecContext,
    Executor,
    NoiseAwareDecider,
    StrictImprovement,
    make_decider,
    pooled_noise,
)
from core.records import ExecutionResult, Proposal, ProposalContext, Status
from core.settings import RunSettings, validate
from tests.core.helpers import ScriptedProposer, make_controller

CTX = ProposalContext(loop="inner", iteration=1, cycle=0)


class SeededExecutor(Executor):
    """``loss = f(x) + noise(x, training seed)`` — by default ``sigma · N(0, 1)`` drawn from (x, seed):
    the same configuration on the same seed gives the same loss; ``seeded``, so replicates are possible."""

    seeded = True

    def __init__(self, *, sigma: float = 0.0, f=lambda x: (x - 0.0) ** 2, noise=None, kill_at: int | None = None) -> None:
        self.f, self.kill_at = f, kill_at
        self.noise = noise or (lambda x, seed: random.Random(f"{x}/{seed}").gauss(0.0, 1.0) * sigma)
        self.runs: list[tuple[float, int | None]] = []

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        x = float(proposal.changes.get("x", 3.0))
        if ctx.iteration == self.kill_at:
            raise KeyboardInterrupt  # killed mid-trial: the proposal was journaled, the trial never finished
        self.runs.append((x, ctx.seed))
        return ExecutionResult(status="ok", metrics={"loss": self.f(x) + self.noise(x, ctx.seed)})


def xs(*values: float) -> list[Proposal]:
    return [Proposal(changes={"x": v}, region=f"x={v}") for v in values]


def controller(tmp_path: Path, *, sigma: float = 0.0, proposals: list[Proposal], replicates: int = 1, **kwargs):
    executor = kwargs.pop("executor", None) or SeededExecutor(sigma=sigma, **kwargs.pop("executor_kwargs", {}))
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(proposals), executor=executor,
                          decider=NoiseAwareDecider(baseline_replicates=replicates), **kwargs)
    return ctl, executor


# -- the rule ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("evidence", "verdict"), [
    (Evidence(candidate=(1.0,), incumbent=(1.1,), noise=0.0), "keep"),            # deterministic: strict
    (Evidence(candidate=(1.1,), incumbent=(1.1,), noise=0.0), "discard"),         # equal is not better
    (Evidence(candidate=(0.9,), incumbent=(1.0,), noise=0.01), "keep"),           # far beyond the noise
    (Evidence(candidate=(0.99,), incumbent=(1.0,), noise=0.01, can_retest=True), "retest"),  # near-tie
    (Evidence(candidate=(0.99,), incumbent=(1.0,), noise=0.01), "discard"),       # near-tie, no budget left
    (Evidence(candidate=(1.02,), incumbent=(1.0,), noise=0.01, can_retest=True), "discard"),  # worse: no retest
    (Evidence(candidate=(0.99,), incumbent=(1.0,), noise=None, can_retest=True), "retest"),  # noise unmeasured
    (Evidence(candidate=(0.99,), incumbent=(1.0,), noise=None), "keep"),          # not measurable: strict
    (Evidence(candidate=(0.99, 0.99, 0.99), incumbent=(1.0,), noise=0.01, can_retest=True), "discard"),  # retests spent
])
def test_noise_aware_rule(evidence: Evidence, verdict: str) -> None:
    got, detail = NoiseAwareDecider().judge(evidence, CTX)
    assert got == verdict, detail
    assert detail["rule"] == "noise-aware" and detail["reason"]


def test_more_measurements_shrink_the_threshold_and_a_fixed_floor_is_the_single_seed_gain() -> None:
    decider = NoiseAwareDecider()
    assert decider.threshold(0.01, 3, 3) < decider.threshold(0.01, 1, 1)
    fixed = NoiseAwareDecider(noise_floor=0.004)
    assert fixed.baseline_replicates == 0  # nothing to measure
    assert fixed.judge(Evidence(candidate=(0.997,), incumbent=(1.0,)), CTX)[0] == "discard"
    assert fixed.judge(Evidence(candidate=(0.997,), incumbent=(1.0,), can_retest=True), CTX)[0] == "retest"
    assert fixed.judge(Evidence(candidate=(0.99,), incumbent=(1.0,)), CTX)[0] == "keep"
    assert fixed.floor(None) == pytest.approx(0.004)


def test_pooled_noise_uses_only_configurations_measured_more_than_once() -> None:
    assert pooled_noise([[1.0], [2.0]]) is None
    assert pooled_noise([[1.0, 1.0], [5.0]]) == 0.0
    assert pooled_noise([[1.0, 3.0], [2.0, 4.0]]) == pytest.approx(2 ** 0.5)


def test_settings_choose_the_rule_and_the_replicates_by_budget() -> None:
    assert isinstance(RunSettings().make_decider(), NoiseAwareDecider)
    assert isinstance(RunSettings(decision="strict").make_decider(), StrictImprovement)
    assert RunSettings(inner_budget=2, outer_cycles=2).baseline_replicates() == 0  # too small to spend on noise
    assert RunSettings(inner_budget=3, outer_cycles=3).baseline_replicates() == 1
    assert RunSettings(inner_budget=10, outer_cycles=3).baseline_replicates() == 2
    assert RunSettings(inner_budget=10, noise_replicates=0).baseline_replicates() == 0
    assert RunSettings(noise_floor=0.01).baseline_replicates() == 0
    with pytest.raises(ConfigError, match="noise-aware only"):
        validate(RunSettings, {"decision": "strict", "noise_floor": 0.01})
    assert isinstance(make_decider("noise-aware", noise_floor=0.01), NoiseAwareDecider)


# -- in the controller ---------------------------------------------------------------------------------
def test_a_deterministic_target_is_judged_as_strict_improvement(tmp_path: Path) -> None:
    # losses: baseline 9, then 4 (better), 4 (equal, another x), 6.25 (worse), 1 (better)
    proposals = xs(2.0, -2.0, 2.5, 1.0)
    noisy, _ = controller(tmp_path / "noise-aware", sigma=0.0, proposals=proposals)
    strict = make_controller(tmp_path / "strict" / "run", proposer=ScriptedProposer(proposals),
                             executor=SeededExecutor(sigma=0.0), decider=StrictImprovement())
    for ctl in (noisy, strict):
        ctl.ensure_baseline()
    got = noisy.run_cycle(0, 5)
    want = strict.run_cycle(0, 4)
    assert got[0].proposal.is_replicate and got[0].decided_by == "replicate"  # the noise, measured: 0
    assert noisy.noise == 0.0
    assert [r.status for r in got[1:]] == [r.status for r in want] == \
        [Status.KEEP, Status.DISCARD, Status.DISCARD, Status.KEEP]
    assert all("strict" in r.info["decision"]["reason"] or r.status is Status.DISCARD for r in got[1:])
    assert noisy.best_score == strict.best_score == 1.0


# The baseline measured on three seeds: 1.0, 1.01, 0.99 (noise 0.01). Every candidate is as good
# as the baseline in truth; on its first seed it looks better by 0.005-0.015, on the others it does not.
BASELINE_NOISE = {None: 0.0, 1000: 0.01, 2000: -0.01}
LUCKY = {3.1: -0.005, 3.2: -0.009, 3.3: -0.012, 3.4: -0.015}


def lucky_noise(x: float, seed: int | None) -> float:
    if x == 3.0:
        return BASELINE_NOISE[seed]
    return LUCKY.get(x, 0.0) if seed is None else 0.004


def test_a_noise_level_gain_is_not_kept_where_strict_improvement_keeps_it(tmp_path: Path) -> None:
    flat = {"f": lambda x: 1.0, "noise": lucky_noise}
    proposals = xs(3.1, 3.2, 3.3, 3.4)
    noisy, _ = controller(tmp_path / "noise-aware", proposals=proposals, replicates=2, executor_kwargs=flat)
    noisy.ensure_baseline()
    noisy.run_cycle(0, 2 + 4 * 3)
    strict = make_controller(tmp_path / "strict" / "run", proposer=ScriptedProposer(proposals),
                             executor=SeededExecutor(**flat), decider=StrictImprovement())
    strict.ensure_baseline()
    strict.run_cycle(0, 4)
    assert [r.kept for r in strict.records()] == [True] * 4  # each lucky draw beats the last
    assert not any(r.kept for r in noisy.records())  # none is beyond the measured noise
    assert noisy.noise == pytest.approx(0.01, rel=0.5)
    assert noisy.best_score == pytest.approx(1.0)  # the baseline's mean over its three seeds
    retested = [r for r in noisy.records() if r.info.get("decision", {}).get("verdict") == "retest"]
    assert retested and all(r.status is Status.DISCARD for r in retested)


def test_a_near_tie_is_retested_on_another_seed_and_kept_on_the_pooled_evidence(tmp_path: Path) -> None:
    # a true gain of 0.02 against noise 0.01: below the one-seed threshold (0.023), above the two-seed one
    ctl, executor = controller(tmp_path, proposals=xs(2.0, 1.0), replicates=2,
                               executor_kwargs={"f": lambda x: 1.0 - 0.02 * (x != 3.0) - (x == 1.0),
                                                "noise": lambda x, seed: BASELINE_NOISE[seed] if x == 3.0 else 0.0})
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 5)
    candidate, retest = records[2], records[3]
    assert candidate.info["decision"]["verdict"] == "retest" and candidate.status is Status.DISCARD
    assert ctl.history[candidate.iteration + 1] is retest
    assert retest.proposal.is_replicate and retest.proposal.changes == candidate.proposal.changes
    assert retest.info["replicate_of"] == candidate.iteration and retest.info["seed"] == 1000
    assert retest.info["decision"]["candidate"] == [0.98, 0.98]  # judged on both seeds
    assert retest.kept and retest.info["decision"]["verdict"] == "keep"
    assert retest.best_after == pytest.approx(0.98) and ctl.incumbent_record is not retest  # then x=1.0 won
    assert records[4].kept and records[4].proposal.changes == {"x": 1.0}
    pairs = executor.runs
    assert len(pairs) == len(set(pairs))  # a (configuration, seed) pair is never run twice


def test_replicates_count_against_the_budget_and_are_journaled_as_replicates(tmp_path: Path) -> None:
    ctl, executor = controller(tmp_path, sigma=0.01, proposals=xs(2.0, 1.0, 0.5), replicates=2)
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 4)
    assert len(records) == 4 == ctl.completed(0)
    replicates = [r for r in records if r.proposal.is_replicate]
    assert len(replicates) >= 2 and all(r.info["replicate_of"] == 0 for r in replicates[:2])
    assert len(executor.runs) == 1 + 4  # the baseline and four trials: nothing beyond the budget
    assert [s for _, s in executor.runs[:3]] == [None, 1000, 2000]  # the baseline on three seeds


def test_the_decision_and_its_evidence_are_journaled(tmp_path: Path) -> None:
    ctl, _ = controller(tmp_path, sigma=0.01, proposals=xs(1.0), replicates=1)
    ctl.ensure_baseline()
    ctl.run_cycle(0, 2)
    ctl.run.close()
    reopened = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(1.0)), executor=SeededExecutor(sigma=0.01))
    decision = reopened.history[-1].info["decision"]
    assert decision["verdict"] == "keep" and reopened.history[-1].kept  # 9 → 1: far beyond noise 0.01
    assert set(decision) >= {"rule", "gain", "noise", "threshold", "candidate", "incumbent", "reason"}
    assert len(decision["incumbent"]) == 2  # the baseline on two seeds
    assert reopened.best_score == pytest.approx(decision["candidate"][0])


def test_resume_in_the_middle_of_a_replicate_loses_and_repeats_nothing(tmp_path: Path) -> None:
    first_exec = SeededExecutor(sigma=0.01, kill_at=2)  # iteration 2 = the second baseline replicate
    first, _ = controller(tmp_path, sigma=0.01, proposals=xs(2.0, 1.0), replicates=2, executor=first_exec)
    first.ensure_baseline()
    with pytest.raises(KeyboardInterrupt):
        first.run_cycle(0, 4)
    first.run.close()
    second_exec = SeededExecutor(sigma=0.01)
    second, _ = controller(tmp_path, sigma=0.01, proposals=xs(2.0, 1.0), replicates=2, executor=second_exec)
    records = second.run_cycle(0, 4)
    assert [r.iteration for r in second.history] == list(range(5))
    assert second_exec.runs[0] == (3.0, 2000)  # the killed replicate, on its seed, first
    assert sum(r.proposal.is_replicate and r.info.get("replicate_of") == 0 for r in records) == 2
    pairs = first_exec.runs + second_exec.runs
    assert len(pairs) == len(set(pairs))  # no (configuration, seed) ran twice


def test_a_mechanism_override_cancels_a_retest(tmp_path: Path) -> None:
    from tests.core.helpers import make_mechanism

    ctl, _ = controller(tmp_path, sigma=0.01, proposals=xs(2.0, 1.5), replicates=0,
                        executor_kwargs={"f": lambda x: 1.0 - 0.001 * (x == 2.0)})
    ctl.attach(make_mechanism("yes", decide=lambda r, ctx: True))
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 2)
    assert records[0].kept and records[0].decided_by == "yes"
    assert records[0].info["decision"]["verdict"] == "keep"
    assert not records[1].proposal.is_replicate


def test_a_batched_loop_never_waits_for_a_retest_it_would_not_run(tmp_path: Path) -> None:
    ctl, _ = controller(tmp_path, proposals=xs(2.0), replicates=0)
    ctl.ensure_baseline()
    ctl.batch = object()  # core.batch plans its own iterations and runs no replicates
    evidence = ctl._evidence("k", ctl.incumbent_record.info["config_key"], 4.0, 0)
    assert evidence.noise is None and not evidence.can_retest
    assert NoiseAwareDecider().judge(evidence, CTX)[0] == "keep"  # strict improvement, not a dangling retest


# -- the outer levels ----------------------------------------------------------------------------------
def test_outer_verdicts_must_beat_the_parent_by_the_noise_floor(tmp_path: Path) -> None:
    class Loop:
        def __init__(self, floor: float) -> None:
            self.floor = floor

        def noise_floor(self) -> float:
            return self.floor

    assert outer_margin([Loop(0.03), Loop(0.0)], inner_budget=3) == pytest.approx(0.01)
    decider = BeatsParent(margin=lambda: outer_margin([Loop(0.03)], 3))
    assert not decider.decide(0.009, 0.0, None) and decider.decide(0.011, 0.0, None)
    verdict, detail = decider.judge(Evidence(candidate=(0.005,), incumbent=()), CTX)
    assert verdict == "discard" and detail["margin"] == pytest.approx(0.01)
    assert BeatsParent().decide(1e-9, 0.0, None)  # deterministic target: any gain, as before
    ctl, _ = controller(tmp_path, sigma=0.0, proposals=xs(2.0), replicates=1)
    ctl.ensure_baseline()
    ctl.run_cycle(0, 1)
    assert ctl.noise == 0.0 and ctl.noise_floor() == 0.0
