"""Level 2's paired verdict: a design on trial steers half the iterations of its cycle and its parent
set the others (ABBA order), and the design is judged by the difference between the two arms — not
by its cycle against the cycle before, which started from a worse incumbent with easier gains."""

from __future__ import annotations

from pathlib import Path

import pytest

import core.level2 as level2
from core.level2 import (
    BeatsParent,
    CycleTrialExecutor,
    GainOverParent,
    MechanismInstaller,
    cycle_gain,
    paired_gains,
)
from core.loader import MechanismLoader
from core.plugins import ExecContext
from core.records import BASELINE, REPLICATE, EvalInput, Proposal, Status, TrialRecord
from tests.core.helpers import IDLE, QuadraticProposer, make_controller, make_mechanism

STEERING = {
    "guidance": lambda seen: (lambda ctx: seen.append(ctx.iteration)),
    "propose": lambda seen: (lambda ctx: seen.append(ctx.iteration)),
    "filter": lambda seen: (lambda proposal, ctx: seen.append(ctx.iteration)),
    "decide": lambda seen: (lambda record, ctx: seen.append(ctx.iteration)),
}


@pytest.mark.parametrize("hook", sorted(STEERING))
def test_a_gated_mechanism_steers_only_the_iterations_of_its_arm(tmp_path: Path, hook: str):
    seen: list[int] = []
    observed: list[int] = []
    controller = make_controller(tmp_path / "run")
    controller.attach(make_mechanism("design", **{hook: STEERING[hook](seen), "observe": lambda r: observed.append(r.iteration)}))
    controller.ensure_baseline()
    start = len(controller.history)
    controller.gate("design", lambda iteration: (iteration - start) % 2 == 0)
    records = controller.run_cycle(0, 6)
    controller.run.close()
    iterations = [r.iteration for r in records]
    assert seen and set(seen) == {i for i in iterations if (i - start) % 2 == 0}
    assert observed[-len(iterations):] == iterations  # observing changes nothing: it sees every record
    assert all(r.hook_calls.get("design", {}).get(hook, 0) == 0 for r in records if (r.iteration - start) % 2)


def test_an_ungated_mechanism_steers_every_iteration_and_gating_an_unknown_name_is_an_error(tmp_path: Path):
    seen: list[int] = []
    controller = make_controller(tmp_path / "run")
    controller.attach(make_mechanism("design", propose=STEERING["propose"](seen)))
    controller.ensure_baseline()
    controller.gate("design", lambda iteration: False)
    controller.gate("design", None)
    records = controller.run_cycle(0, 4)
    with pytest.raises(ValueError, match="no mechanism named 'ghost'"):
        controller.gate("ghost", None)
    controller.run.close()
    assert seen == [r.iteration for r in records]


def _rec(iteration: int, before: float, after: float, *, replicate_of: int | None = None) -> TrialRecord:
    proposal = Proposal(origin=REPLICATE, changes={"x": 1}) if replicate_of is not None else Proposal(changes={"x": iteration})
    info = {"replicate_of": replicate_of} if replicate_of is not None else {}
    return TrialRecord(loop="inner", iteration=iteration, cycle=1, proposal=proposal, status=Status.DISCARD,
                       best_before=before, best_after=after, info=info)


class _Ctl:
    def __init__(self, direction: str = "minimize") -> None:
        self.direction = direction


def _seed_with_order(order: str) -> int:
    """A seed whose first iterations fall to the arms in ``order`` ("D": the design's, "P": the parent's)."""
    return next(k for k in range(10_000)
                if "".join("DP"[level2.design_arm(i, k)] for i in range(len(order))) == order)


@pytest.mark.parametrize(("direction", "order", "records", "design", "parent"), [
    # DP PD: the design's arm (iterations 10 and 13) gains 0.2 over 2, the parent's 0.2 over 2
    ("minimize", "DPPD", [_rec(10, 1.0, 0.8), _rec(11, 0.8, 0.7), _rec(12, 0.7, 0.6), _rec(13, 0.6, 0.6)], 0.1, 0.1),
    # PD DP: the same records, the other order
    ("minimize", "PDDP", [_rec(10, 1.0, 0.8), _rec(11, 0.8, 0.7), _rec(12, 0.7, 0.6), _rec(13, 0.6, 0.6)], 0.1, 0.1),
    # maximize: signs flip so that larger is better in both directions
    ("maximize", "DPPD", [_rec(10, 1.0, 1.2), _rec(11, 1.2, 1.2), _rec(12, 1.2, 1.2), _rec(13, 1.2, 1.5)], 0.25, 0.0),
    # a retest (iteration 11) re-measures the design's candidate of iteration 10: the keep it makes is
    # the design's, and so is the iteration it spent
    ("minimize", "DPPD", [_rec(10, 1.0, 1.0), _rec(11, 1.0, 0.5, replicate_of=10), _rec(12, 0.5, 0.5),
                          _rec(13, 0.5, 0.4)], 0.2, 0.0),
    # a retest of a configuration first measured before the cycle counts where it ran
    ("minimize", "DP", [_rec(10, 1.0, 0.9), _rec(11, 0.9, 0.8, replicate_of=3)], 0.1, 0.1),
])
def test_paired_gains_split_the_cycle_by_arm(direction, order, records, design, parent):
    arms = paired_gains(_Ctl(direction), records, 10, _seed_with_order(order))
    assert arms is not None
    assert arms["design_gain"] == pytest.approx(design) and arms["parent_arm_gain"] == pytest.approx(parent)
    assert arms["design_iterations"] + arms["parent_iterations"] == len(records)


def test_paired_gains_need_both_arms_and_skip_what_no_arm_proposed():
    assert paired_gains(_Ctl(), [_rec(10, 1.0, 0.5)], 10, 0) is None
    assert paired_gains(_Ctl(), [], 10, 0) is None
    seed = _seed_with_order("DP")
    lost = _rec(12, 0.5, 0.5).model_copy(update={"info": {"provider_failure": True}})
    remeasured = _rec(13, 0.5, 0.45).model_copy(update={"decided_by": "replicate"})
    arms = paired_gains(_Ctl(), [_rec(10, 1.0, 0.6), _rec(11, 0.6, 0.5), lost, remeasured], 10, seed)
    assert (arms["design_iterations"], arms["parent_iterations"]) == (1, 1)
    assert (arms["design_gain"], arms["parent_arm_gain"]) == (pytest.approx(0.4), pytest.approx(0.1))


def test_the_arms_are_pairs_in_a_seeded_order():
    for seed in range(50):
        arms = [level2.design_arm(i, seed) for i in range(12)]
        assert all(arms[i] != arms[i + 1] for i in range(0, 12, 2))  # one iteration of each pair per arm
        assert arms == [level2.design_arm(i, seed) for i in range(12)]  # the same on resume
    firsts = [level2.design_arm(0, seed) for seed in range(400)]
    assert 150 < firsts.count(0) < 250  # either arm moves first, by a coin


JUMP = '''"""Proposes the optimum of the quadratic test task."""

from core.mechanism import Mechanism
from core.records import Proposal


class Jump(Mechanism):
    name = "jump"
    description = "Proposes x = 0."

    def propose(self, ctx):
        return Proposal(changes={"x": 0.0}, region="x:jump", hypothesis="the optimum")
'''

def _trial(tmp_path: Path, source: str):
    """Cycle 0 without a design, then cycle 1 with ``source`` on trial: the Level-2 record's metrics,
    the executor, the installer and the controller."""
    controller = make_controller(tmp_path / "run", proposer=QuadraticProposer(step=0.1))  # small steps
    controller.ensure_baseline()
    controller.run_cycle(0, 4)
    loader = MechanismLoader(tmp_path / "run", check_timeout_s=20.0)
    installer = MechanismInstaller(inner=controller, run=controller.run)
    executor = CycleTrialExecutor(loader=loader, installer=installer, run_cycle=lambda c: controller.run_cycle(c, 6),
                                  gain=lambda c: cycle_gain([controller], c))
    ctx = ExecContext(loop="mechanism", iteration=1, cycle=1, run_dir=tmp_path / "run", trial_dir=tmp_path / "t",
                      incumbent=None)
    result = executor.execute(Proposal(payload=source, region="template:x"), ctx)
    return result, executor, installer, controller


def test_a_design_that_helps_wins_its_paired_trial_and_then_steers_every_iteration(tmp_path: Path):
    result, executor, installer, controller = _trial(tmp_path, JUMP)
    try:
        m = result.metrics
        assert result.status == "ok" and m["design_gain"] > m["parent_arm_gain"]
        assert (m["gain"], m["parent_gain"]) == (m["design_gain"], m["parent_arm_gain"])  # the verdict's basis
        assert {"cycle_gain", "previous_cycle_gain"} <= set(m)  # the old comparison, still reported
        score = GainOverParent().evaluate(EvalInput(metrics=m)).score
        assert BeatsParent().decide(score, None, None)
        (attached,) = [a for a in controller.mechanisms if a.name == "jump#1"]
        assert attached.arm is not None  # gated while on trial
        record = TrialRecord(loop="mechanism", iteration=1, cycle=1, status=Status.KEEP, proposal=Proposal(payload=JUMP))
        executor.settle(record)
        assert attached.arm is None  # kept: it steers every iteration from now on
    finally:
        for attached in list(controller.mechanisms):
            controller.detach(attached.name, reason="test over")
        controller.run.close()


def test_a_design_that_does_nothing_leaves_both_arms_to_its_parent_set_and_is_removed_on_discard(tmp_path: Path):
    result, executor, installer, controller = _trial(tmp_path, IDLE)
    try:
        m = result.metrics
        cycle = controller.records(1)
        # the idle design's arm ran the parent set too: nothing tells the arms apart but the draws
        assert m["design_iterations"] + m["parent_iterations"] == len(cycle) == 6
        record = TrialRecord(loop="mechanism", iteration=1, cycle=1, status=Status.DISCARD,
                             proposal=Proposal(payload=IDLE), metrics=m)
        executor.settle(record)
        assert not [a for a in controller.mechanisms if a.name.startswith("idle")]
    finally:
        controller.run.close()


def test_the_parent_cycle_of_level_2_is_not_gated(tmp_path: Path):
    controller = make_controller(tmp_path / "run")
    controller.ensure_baseline()
    installer = MechanismInstaller(inner=controller, run=controller.run)
    executor = CycleTrialExecutor(loader=MechanismLoader(tmp_path / "run"), installer=installer,
                                  run_cycle=lambda c: controller.run_cycle(c, 3), gain=lambda c: cycle_gain([controller], c))
    ctx = ExecContext(loop="mechanism", iteration=0, cycle=0, run_dir=tmp_path / "run", trial_dir=tmp_path / "t",
                      incumbent=None)
    result = executor.execute(Proposal(origin=BASELINE), ctx)
    controller.run.close()
    assert result.metrics["gain"] == result.metrics["parent_gain"] and "design_gain" not in result.metrics


def test_a_trial_resumed_mid_cycle_keeps_the_arms_of_the_cycle_it_began(tmp_path: Path):
    # interrupted after two iterations of cycle 1, the design is installed again: its arms must still
    # count from the cycle's first iteration, or the iterations already run would change sides
    controller = make_controller(tmp_path / "run")
    controller.ensure_baseline()
    controller.run_cycle(0, 3)
    controller.run_cycle(1, 2)
    first = controller.records(1)[0].iteration
    loader = MechanismLoader(tmp_path / "run", check_timeout_s=20.0)
    installer = MechanismInstaller(inner=controller, run=controller.run)
    loaded = loader.load(IDLE)
    try:
        name, _ = installer.install(loaded, Proposal(payload=IDLE), iteration=1, cycle=1)
        (attached,) = [a for a in controller.mechanisms if a.name == name]
        seed = controller.seed * 1_000_003 + 1  # the Level-2 iteration of the design
        assert [attached.arm(first + k) for k in range(5)] == [level2.design_arm(k, seed) == 0 for k in range(5)]
        controller.run_cycle(1, 4)
        arms = installer.cycle_metrics(name, 1)[0]
        assert arms["design_iterations"] == 2 and arms["parent_iterations"] == 2  # two pairs, one each
    finally:
        controller.detach(name, reason="test over")
        controller.run.close()


def _placebo_scores(tmp_path: Path, seed: int, size: int, arm) -> tuple[float, float]:
    """A design that does nothing, on trial in cycle 1 (``size`` iterations) of the quadratic task, where
    gains shrink as the search goes on: its paired score with the arms ``arm(offset)`` assigns, and its
    score by the old rule (its cycle's gain per iteration minus the cycle before's)."""
    controller = make_controller(tmp_path / f"run-{size}-{seed}", seed=seed, proposer=QuadraticProposer(step=0.25))
    controller.ensure_baseline()
    controller.run_cycle(0, size)
    controller.attach(make_mechanism("placebo", propose=lambda ctx: None))
    start = len(controller.history)
    controller.gate("placebo", lambda iteration: arm(iteration - start) == 0)
    controller.run_cycle(1, size)
    controller.run.close()
    sums, counts = [0.0, 0.0], [0, 0]
    for record in controller.records(1):
        side = arm(record.iteration - start)
        sums[side] += record.best_before - record.best_after
        counts[side] += 1
    paired = sums[0] / counts[0] - sums[1] / counts[1]
    return paired, cycle_gain([controller], 1) - cycle_gain([controller], 0)


@pytest.mark.parametrize("size", [6, 8, 10])
def test_a_placebo_design_wins_and_loses_its_paired_trial_by_chance_not_by_position(tmp_path: Path, size: int):
    seeds = range(40)
    random_order = [_placebo_scores(tmp_path / "pairs", s, size, lambda o, s=s: level2.design_arm(o, 7919 * s))
                    for s in seeds]
    fixed = {"ABAB": lambda o: o % 2, "ABBA": lambda o: 0 if o % 4 in (0, 3) else 1}
    fixed_scores = {name: [_placebo_scores(tmp_path / name, s, size, f)[0] for s in seeds] for name, f in fixed.items()}
    # judged against the cycle before, doing nothing always "loses" (gains shrink): the old rule's bias
    assert all(old < 0 for _, old in random_order)
    # alternation hands the design every first move: doing nothing always "wins"
    assert all(p > 0 for p in fixed_scores["ABAB"])
    # ABBA still favours the design when the cycle's length is 2 mod 4 (an unmatched last pair)
    if size % 4 == 2:
        assert all(p > 0 for p in fixed_scores["ABBA"])
    # a coin per pair: the placebo wins some trials and loses others, and its mean is near zero
    paired = [p for p, _ in random_order]
    assert sum(p > 0 for p in paired) >= 8 and sum(p < 0 for p in paired) >= 8, paired
    bias = sum(fixed_scores["ABAB"]) / len(seeds)
    assert abs(sum(paired) / len(seeds)) < 0.35 * bias


def test_decide_on_a_retest_belongs_to_the_arm_that_proposed_the_candidate():
    from core.attachment import AttachedMechanism
    from core.records import ProposalContext

    attached = AttachedMechanism(name="design", instance=make_mechanism("design", decide=lambda r, ctx: None),
                                 arm=lambda iteration: iteration % 2 == 0)
    ctx = ProposalContext(loop="inner", iteration=11, cycle=1)
    retest_of_10 = _rec(11, 1.0, 1.0, replicate_of=10)
    retest_of_9 = _rec(11, 1.0, 1.0, replicate_of=9)
    assert attached.steers(ctx, retest_of_10)  # the design's candidate of iteration 10, re-measured at 11
    assert not attached.steers(ctx, retest_of_9)
    assert not attached.steers(ctx, _rec(11, 1.0, 1.0))  # an ordinary record: its own iteration
    assert not attached.steers(ctx)


def test_with_parallel_trials_a_gated_mechanism_steers_only_its_arm(tmp_path: Path):
    from core.batch import BatchRunner
    from core.pool import LocalPool

    seen: list[int] = []
    controller = make_controller(tmp_path / "run")
    pool = LocalPool(size=2)
    controller.batch = BatchRunner(controller, pool, size=2)
    try:
        controller.attach(make_mechanism("design", propose=STEERING["propose"](seen),
                                         filter=STEERING["filter"](seen)))
        controller.ensure_baseline()
        start = len(controller.history)
        seed = 12345
        controller.gate("design", lambda iteration: level2.design_arm(iteration - start, seed) == 0)
        records = controller.run_cycle(0, 8)
    finally:
        pool.close()
        controller.run.close()
    mine = {r.iteration for r in records if level2.design_arm(r.iteration - start, seed) == 0}
    assert seen and set(seen) <= mine and len(mine) == 4  # one of each pair, never the parent's
    assert all(not r.hook_calls.get("design") for r in records if r.iteration not in mine)


def test_a_paired_trial_whose_arms_are_incomplete_says_it_was_judged_against_the_cycle_before(tmp_path: Path):
    controller = make_controller(tmp_path / "run", proposer=QuadraticProposer(step=0.1))
    controller.ensure_baseline()
    controller.run_cycle(0, 1)
    installer = MechanismInstaller(inner=controller, run=controller.run)
    executor = CycleTrialExecutor(loader=MechanismLoader(tmp_path / "run", check_timeout_s=20.0), installer=installer,
                                  run_cycle=lambda c: controller.run_cycle(c, 1),  # one iteration: one arm only
                                  gain=lambda c: cycle_gain([controller], c))
    ctx = ExecContext(loop="mechanism", iteration=1, cycle=1, run_dir=tmp_path / "run", trial_dir=tmp_path / "t",
                      incumbent=None)
    result = executor.execute(Proposal(payload=JUMP, region="template:x"), ctx)
    try:
        assert "design_gain" not in result.metrics
        assert result.detail["verdict_basis"] == "the cycle before (the paired arms were incomplete)"
    finally:
        for attached in list(controller.mechanisms):
            controller.detach(attached.name, reason="test over")
        controller.run.close()
