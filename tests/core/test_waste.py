"""No trial is wasted: a configuration already measured in a loop is never executed again (whoever
proposed it), an infeasible one never runs, and a run whose trials all fail stops with a clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import TrialsFailing
from core.plugins import StrictImprovement, waste_counts
from core.records import FilterVerdict, Proposal, ProposalContext, Status
from domains.train_opt.executor import TrainExecutor
from tests.core.helpers import QuadraticExecutor, ScriptedProposer, make_controller, make_mechanism


class FullConfigExecutor(QuadraticExecutor):
    """Knows the full configuration (``x``, 3.0 when unchanged), so a proposal that sets the
    baseline's value explicitly is recognised as the baseline."""

    def config_key(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> Any:
        return {"x": float(proposal.changes.get("x", self.x0))}

    def infeasible(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> str | None:
        x = proposal.changes.get("x")
        return f"x={x} is negative" if x is not None and x < 0 else None


def x(value: float) -> Proposal:
    return Proposal(changes={"x": value}, region=f"x={value}")


def run(tmp_path: Path, proposer, executor=None, iterations: int = 4, **kwargs):
    executor = executor or QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=proposer, executor=executor, **kwargs)
    ctl.ensure_baseline()
    return ctl, executor, ctl.run_cycle(0, iterations)


def assert_no_configuration_ran_twice(executor: QuadraticExecutor) -> None:
    ran = [float(p.changes.get("x", executor.x0)) for _, p in executor.executed]
    assert len(ran) == len(set(ran)), ran


@pytest.mark.parametrize("proposer", [
    pytest.param(lambda: ScriptedProposer([x(2.0)]), id="the same change every time"),
    pytest.param(lambda: ScriptedProposer([x(2.0), x(2.5), x(2.0), x(2.5)]), id="alternating two changes"),
])
def test_a_proposer_that_repeats_itself_never_gets_a_configuration_executed_twice(tmp_path: Path, proposer) -> None:
    ctl, executor, records = run(tmp_path, proposer(), iterations=5)
    assert_no_configuration_ran_twice(executor)
    refused = [r for r in records if r.status is Status.REJECTED]
    assert refused and all(r.proposal is None and r.artifact is None for r in refused)
    assert all(reason.startswith("duplicate:") and "already measured" in reason
               for r in refused for reason in r.rejections)
    assert "nothing was executed" in refused[0].error
    assert len(refused[0].rejections) == ctl.max_reasks + 1  # asked again with the reason, then given up
    assert waste_counts(records)["duplicate"] >= ctl.max_reasks + 1


def test_the_proposer_is_asked_again_and_told_why(tmp_path: Path) -> None:
    proposer = ScriptedProposer([x(2.0), x(2.0), x(1.0)])
    ctl, executor, records = run(tmp_path, proposer, iterations=2)
    assert [float(p.changes["x"]) for _, p in executor.executed[1:]] == [2.0, 1.0]
    assert records[1].status is Status.KEEP and records[1].rejections[0].startswith("duplicate:")
    assert any("already measured" in f for f in proposer.contexts[-1].feedback)


def test_a_mechanism_that_proposes_a_measured_configuration_is_refused_too(tmp_path: Path) -> None:
    # it offers its favourite first in every iteration, and leaves the re-ask to the proposer
    mech = make_mechanism("stuck", propose=lambda ctx: None if ctx.feedback else Proposal(changes={"x": 2.0}, region="x:stuck"))
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer([x(1.0), x(0.5), x(0.25)]))
    ctl.attach(mech)
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 3)
    assert_no_configuration_ran_twice(ctl.executor)
    assert records[0].proposal.origin == "stuck"
    assert records[1].proposal.changes == {"x": 1.0}  # the mechanism's repeat was refused, the proposer asked
    assert records[1].rejections[0].startswith("duplicate:")


def test_a_filter_that_rewrites_into_a_measured_configuration_is_refused(tmp_path: Path) -> None:
    mech = make_mechanism("snap", filter=lambda p, ctx: FilterVerdict.rewrite(Proposal(changes={"x": 2.0})))
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer([x(1.0), x(0.5)]))
    ctl.attach(mech)
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 2)
    assert records[0].proposal.changes == {"x": 2.0}
    assert records[1].status is Status.REJECTED
    assert_no_configuration_ran_twice(ctl.executor)


def test_a_proposal_that_returns_to_the_baseline_configuration_is_a_duplicate(tmp_path: Path) -> None:
    # x=3.0 is the baseline's value: the same configuration, though its changes are not empty
    ctl, executor, records = run(tmp_path, ScriptedProposer([x(3.0), x(2.0)]), executor=FullConfigExecutor(),
                                 iterations=1)
    assert records[0].proposal.changes == {"x": 2.0}
    assert "iteration 0" in records[0].rejections[0]  # the baseline's measurement
    assert_no_configuration_ran_twice(executor)


def test_an_infeasible_candidate_is_rejected_without_executing(tmp_path: Path) -> None:
    ctl, executor, records = run(tmp_path, ScriptedProposer([x(-1.0), x(-2.0), x(1.0)]),
                                 executor=FullConfigExecutor(), iterations=1)
    assert [p.changes for _, p in executor.executed] == [{}, {"x": 1.0}]  # the baseline, then the feasible one
    assert [r.split(":")[0] for r in records[0].rejections] == ["infeasible", "infeasible"]
    assert "x=-1.0 is negative" in records[0].rejections[0]
    ctl2, executor2, records2 = run(tmp_path / "never", ScriptedProposer([x(-1.0)]), executor=FullConfigExecutor(),
                                    iterations=2)
    assert [r.status for r in records2] == [Status.REJECTED, Status.REJECTED]
    assert len(executor2.executed) == 1  # only the baseline ran
    assert waste_counts(records2) == {"duplicate": 0, "infeasible": 8, "rejected_iterations": 2}


def test_the_train_opt_batch_constraint_is_checked_before_a_trial_is_spent(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "prepare.py").write_text("MAX_SEQ_LEN = 128  # tokens per sequence\n")
    original = tmp_path / "train.py"
    original.write_text("TOTAL_BATCH_SIZE = 4096  # tokens per step\nDEVICE_BATCH_SIZE = 16  # sequences per pass\n"
                        "MATRIX_LR = 0.04  # lr\n")
    executor = TrainExecutor(workdir=target, original=original, timeout_s=5, progress=None)
    assert "not a multiple" in executor.infeasible(Proposal(changes={"TOTAL_BATCH_SIZE": 1024}), None, tmp_path)
    assert "not a multiple" in executor.infeasible(Proposal(changes={"DEVICE_BATCH_SIZE": 64}), None, tmp_path)
    assert executor.infeasible(Proposal(changes={"TOTAL_BATCH_SIZE": 8192}), None, tmp_path) is None
    assert executor.infeasible(Proposal(changes={"MATRIX_LR": 0.05}), None, tmp_path) is None
    # two proposals that give the same train.py are the same configuration
    same = executor.config_key(Proposal(changes={"MATRIX_LR": 0.04}), None, tmp_path)
    assert same == executor.config_key(Proposal(), None, tmp_path)


def test_a_run_whose_trials_all_fail_stops_with_one_clear_line(tmp_path: Path) -> None:
    executor = QuadraticExecutor(script={i: "crash" for i in range(1, 100)})
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer([x(v / 10) for v in range(1, 30)]),
                          executor=executor, max_failed_in_a_row=3)
    ctl.ensure_baseline()
    with pytest.raises(TrialsFailing) as stop:
        ctl.run_cycle(0, 10)
    message = str(stop.value)
    assert "\n" not in message and message.startswith("the last 3 trials all failed (last: crash: scripted crash)")
    assert "resume" in message
    assert len(executor.executed) == 1 + 3  # the baseline and three failures: the rest of the budget is kept
    stopped = ctl.run.journal.last("stopped")
    assert stopped["reason"].startswith("TrialsFailing: the last 3 trials all failed")


def test_a_success_between_failures_resets_the_count_and_zero_switches_the_stop_off(tmp_path: Path) -> None:
    script = {1: "crash", 2: "fail", 3: None, 4: "timeout", 5: "crash"}
    executor = QuadraticExecutor(script={k: v for k, v in script.items() if v})
    ctl = make_controller(tmp_path / "a", proposer=ScriptedProposer([x(v / 10) for v in range(1, 30)]),
                          executor=executor, max_failed_in_a_row=3)
    ctl.ensure_baseline()
    assert len(ctl.run_cycle(0, 5)) == 5
    never = make_controller(tmp_path / "b", proposer=ScriptedProposer([x(v / 10) for v in range(1, 30)]),
                            executor=QuadraticExecutor(script={i: "crash" for i in range(1, 100)}))
    never.ensure_baseline()
    assert len(never.run_cycle(0, 8)) == 8  # the controller's default: no stop


def test_strict_decider_still_never_reexecutes(tmp_path: Path) -> None:
    ctl, executor, _ = run(tmp_path, ScriptedProposer([x(2.0), x(2.0), x(2.0)]), decider=StrictImprovement(),
                           iterations=3)
    assert_no_configuration_ran_twice(executor)


def test_context_shows_no_waste_to_a_proposer_that_reads_history(tmp_path: Path) -> None:
    class Careful(ScriptedProposer):
        def propose(self, ctx: ProposalContext) -> Proposal:
            measured = {float(r.proposal.changes.get("x", 3.0)) for r in ctx.history if r.proposal is not None}
            value = next(v / 4 for v in range(1, 100) if v / 4 not in measured)
            self.contexts.append(ctx)
            return x(value)

    ctl, executor, records = run(tmp_path, Careful([x(0.0)]), iterations=6)
    assert all(not r.rejections for r in records)  # never refused: it was never asked again



@pytest.mark.parametrize("offer", [
    pytest.param(lambda ctx: x(-1.0), id="infeasible every time"),
    pytest.param(lambda ctx: x(3.0), id="the baseline's configuration every time"),
    pytest.param(lambda ctx: x(-float(ctx.iteration)), id="a different infeasible one each call"),
])
def test_a_mechanism_whose_candidate_is_refused_hands_the_step_to_the_proposer(tmp_path: Path, offer) -> None:
    # a proposing mechanism that cannot see a constraint would offer a wasted trial on every re-ask and
    # turn the iteration into a rejected one; after one refusal the proposer is asked instead
    calls: list[int] = []

    def propose(ctx: ProposalContext) -> Proposal:
        calls.append(ctx.iteration)
        return offer(ctx)

    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer([x(v / 10) for v in range(1, 30)]),
                          executor=FullConfigExecutor())
    ctl.attach(make_mechanism("blind", propose=propose))
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 4)
    assert all(r.status is not Status.REJECTED for r in records)
    assert [len(r.rejections) for r in records] == [1, 1, 1, 1]  # its one refused offer per step
    assert calls == [1, 2, 3, 4]  # asked once per step, not on every re-ask
    assert all(r.proposal.origin == "proposer" for r in records)
