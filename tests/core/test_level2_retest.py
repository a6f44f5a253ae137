"""Level 2 re-evaluates a near-tie, as Level 1 does: a paired trial that is inconclusive — its score
within the noise margin either way, e.g. neither arm gained at all — is not a verdict. The design is
tried again in the next cycle (a retest: the controller's replicate, no designer call) and judged on
the mean of its trials against the margin over their pooled iterations. Without a next cycle, after
the last retest, or under the strict rule, an inconclusive design is reverted as before."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.inner_loop import InnerLoopController
from core.level2 import BeatsParent, CycleTrialExecutor, GainOverParent, MechanismInstaller, cycle_gain
from core.loader import MechanismLoader
from core.plugins import Evidence
from core.records import Proposal, ProposalContext
from tests.core.helpers import IDLE, X0, QuadraticExecutor, ScriptedProposer, make_controller

CTX = ProposalContext(loop="mechanism", iteration=1, cycle=1, direction="maximize")


def _judge(scores: tuple[float, ...], *, can_retest: bool = True, max_retests: int = 1, margin: float = 0.01):
    decider = BeatsParent(margin=lambda: margin, max_retests=max_retests)
    return decider.judge(Evidence(candidate=scores, incumbent=(0.0,), can_retest=can_retest, direction="maximize"), CTX)


@pytest.mark.parametrize(("scores", "kwargs", "verdict"), [
    ((0.0,), {}, "retest"),  # neither arm gained: no evidence either way
    ((0.006,), {}, "retest"),  # a gain within the margin
    ((-0.006,), {}, "retest"),  # a loss within the margin
    ((0.02,), {}, "keep"),  # beyond the margin
    ((-0.02,), {}, "discard"),  # a loss beyond the margin: the evidence is against it
    ((0.0,), {"can_retest": False}, "discard"),  # no next cycle
    ((0.0,), {"max_retests": 0}, "discard"),  # the default: one trial decides (Level 1.5, the strict rule)
    ((0.0, 0.0), {}, "discard"),  # retested once already: still inconclusive, reverted
    ((0.02, 0.0), {}, "keep"),  # mean 0.01 beats the pooled margin 0.01 / sqrt(2)
    ((0.012, -0.004), {}, "discard"),  # mean 0.004 within the pooled margin after the last retest
])
def test_an_inconclusive_paired_trial_is_retested_and_a_retest_is_judged_on_the_pooled_trials(scores, kwargs, verdict):
    got, info = _judge(scores, **kwargs)
    assert got == verdict
    assert info["trials"] == len(scores)
    assert info["margin"] == pytest.approx(0.01 / math.sqrt(len(scores)))


def test_beats_parent_refuses_a_negative_number_of_retests():
    with pytest.raises(ValueError, match="max_retests"):
        BeatsParent(max_retests=-1)


def _level2(path: Path, cycles: int, *, max_retests: int = 1):
    """A Level-2 loop over an inner loop that cannot improve (the baseline is the optimum), so every
    paired trial ends 0 against 0: inconclusive; both baselines measured. Returns the Level-2 controller, its designer and the
    inner controller."""
    inner = make_controller(path, executor=QuadraticExecutor(target=X0))
    designer = ScriptedProposer([Proposal(changes={"template": "idle"}, payload=source, region="template:idle")
                                 for source in (IDLE, IDLE + "# another design\n")])
    installer = MechanismInstaller(inner=inner, run=inner.run)
    level2 = InnerLoopController(
        run=inner.run, loop="mechanism", direction="maximize", proposer=designer, evaluator=GainOverParent(),
        decider=BeatsParent(margin=lambda: 0.01, max_retests=max_retests),
        executor=CycleTrialExecutor(loader=MechanismLoader(path, check_timeout_s=20.0), installer=installer,
                                    run_cycle=lambda c: inner.run_cycle(c, 4), gain=lambda c: cycle_gain([inner], c)),
        cycles=cycles)
    inner.ensure_baseline()
    level2.ensure_baseline(cycle=0)  # cycle 0: the parent set's (on reopening: the journaled one)
    return level2, designer, inner


def _detached(path: Path) -> list[str]:
    with (path / "journal.jsonl").open(encoding="utf-8") as journal:
        return [e["reason"] for e in map(json.loads, journal) if e["type"] == "mechanism_detached"]


def test_an_inconclusive_design_is_tried_again_in_the_next_cycle_without_asking_the_designer(tmp_path: Path):
    path = tmp_path / "run"
    level2, designer, inner = _level2(path, cycles=3)
    try:
        first, retest = level2.step(1), level2.step(2)
    finally:
        inner.run.close()
    assert first.metrics["gain"] == first.metrics["parent_gain"] == 0.0  # neither arm gained
    assert first.info["decision"]["verdict"] == "retest" and first.status.value == "discard"
    assert len(designer.contexts) == 1  # the retest is the controller's: the designer was asked once
    assert retest.cycle == 2 and retest.proposal.is_replicate and retest.proposal.payload == IDLE
    assert retest.info["replicate_of"] == first.iteration and "seed" not in retest.info  # the next cycle's draws
    assert retest.proposal.hypothesis == f"retest of iteration {first.iteration} in the next cycle"
    assert retest.info["decision"]["trials"] == 2 and retest.info["decision"]["verdict"] == "discard"
    assert not [a for a in inner.mechanisms if a.name.startswith("idle")]  # reverted after its last trial
    reasons = _detached(path)
    assert reasons[0].startswith("inconclusive") and reasons[1].startswith("reverted")


@pytest.mark.parametrize(("cycles", "max_retests"), [(2, 1), (3, 0)])
def test_without_a_next_cycle_or_a_retest_allowed_an_inconclusive_design_is_reverted(tmp_path: Path, cycles: int,
                                                                                    max_retests: int):
    path = tmp_path / "run"
    level2, designer, inner = _level2(path, cycles=cycles, max_retests=max_retests)
    try:
        first = level2.step(1)
        if cycles > 2:
            second = level2.step(2)
            assert not second.proposal.is_replicate and len(designer.contexts) == 2  # a new design, not a retest
    finally:
        inner.run.close()
    assert first.info["decision"]["verdict"] == "discard"
    assert _detached(path)[0].startswith("reverted")


def test_a_retest_owed_when_the_run_stopped_is_run_on_resume(tmp_path: Path):
    path = tmp_path / "run"
    level2, designer, inner = _level2(path, cycles=3)
    try:
        first = level2.step(1)
    finally:
        inner.run.close()
    assert first.info["decision"]["verdict"] == "retest"
    level2, designer, inner = _level2(path, cycles=3)  # reopened from the journal
    try:
        assert [r.iteration for r in level2.history] == [0, 1]
        retest = level2.step(2)
    finally:
        inner.run.close()
    assert retest.proposal.is_replicate and retest.info["replicate_of"] == 1 and not designer.contexts
