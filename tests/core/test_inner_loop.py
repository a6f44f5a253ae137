"""The inner-loop controller (core/inner_loop.py): call order, keep/discard, mechanisms, failures, resume."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import BudgetExceeded
from core.inner_loop import InnerLoopController, hook_call_totals
from core.mechanism import Mechanism
from core.plugins import NoiseAwareDecider, Proposer
from core.records import Constraints, FilterVerdict, Guidance, Proposal, ProposalContext, Status, TrialRecord
from core.state import RunDir
from tests.core.helpers import (
    X0,
    QuadraticExecutor,
    QuadraticProposer,
    RecordingDecider,
    RecordingEvaluator,
    RecordingMechanism,
    ScriptedProposer,
    Trace,
    make_controller,
    make_mechanism,
    trace_journal,
)


def xs(*values: float) -> list[Proposal]:
    return [Proposal(changes={"x": v}, region=f"x={v}") for v in values]


def journal_types(ctl: InnerLoopController) -> list[str]:
    return [e["type"] for e in ctl.run.journal.events()]


# -- call order and baseline ------------------------------------------------------------------------
def test_iteration_calls_plugins_and_hooks_in_documented_order(tmp_path: Path) -> None:
    trace = Trace()
    ctl = make_controller(
        tmp_path / "run", proposer=QuadraticProposer(trace=trace), executor=QuadraticExecutor(trace=trace),
        evaluator=RecordingEvaluator(trace=trace), decider=RecordingDecider(trace=trace),
    )
    ctl.ensure_baseline()
    ctl.attach(RecordingMechanism(trace=trace))
    trace_journal(ctl.run, trace)
    trace.clear()

    record = ctl.step()

    assert trace == [
        "recorder.guidance", "recorder.propose", "proposer.propose", "recorder.filter",
        "journal.proposal",
        "executor.execute", "evaluator.evaluate", "decider.decide", "recorder.decide",
        "executor.settle", "recorder.observe",
        "journal.trial",
    ]
    assert record.iteration == 1
    assert record.hook_calls == {"recorder": {"guidance": 1, "propose": 1, "filter": 1, "decide": 1, "observe": 1}}


def test_baseline_is_iteration_zero_and_kept_even_if_the_decider_would_not(tmp_path: Path) -> None:
    class Never(RecordingDecider):
        def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
            return False

    proposer = QuadraticProposer()
    mech = RecordingMechanism(answers={"decide": False})
    ctl = make_controller(tmp_path / "run", proposer=proposer, decider=Never())
    ctl.attach(mech)

    baseline = ctl.ensure_baseline()

    assert baseline.iteration == 0
    assert baseline.status is Status.KEEP
    assert baseline.proposal is not None and baseline.proposal.origin == "baseline"
    assert baseline.score == pytest.approx(X0**2)
    assert baseline.best_before is None and baseline.best_after == pytest.approx(X0**2)
    assert proposer.contexts == []  # the baseline is measured, not proposed
    assert mech.trace == ["recorder.observe"]  # no guidance/propose/filter/decide for the baseline
    assert ctl.ensure_baseline() == baseline  # measured once
    assert len(ctl.history) == 1
    assert ctl.records() == [] and ctl.records(include_baseline=True) == [baseline]


def test_ensure_baseline_refuses_history_without_one(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.step()
    with pytest.raises(RuntimeError, match="no baseline"):
        ctl.ensure_baseline()


# -- keep / discard ---------------------------------------------------------------------------------
def test_strict_improvement_keeps_only_strictly_better_scores(tmp_path: Path) -> None:
    # losses: baseline 9, then 4 (better), 4 (equal, another x), 6.25 (worse), 1 (better)
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.0, -2.0, 2.5, 1.0)))
    ctl.ensure_baseline()
    records = ctl.run_cycle(0, 4)

    assert [r.status for r in records] == [Status.KEEP, Status.DISCARD, Status.DISCARD, Status.KEEP]
    assert [r.best_before for r in records] == [9.0, 4.0, 4.0, 4.0]
    assert [r.best_after for r in records] == [4.0, 4.0, 4.0, 1.0]
    assert [r.decided_by for r in records] == ["decider"] * 4
    assert ctl.best_score == 1.0
    assert ctl.incumbent_record == records[-1]


def test_maximize_direction_keeps_higher_scores(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.0, 4.0)), direction="maximize")
    ctl.ensure_baseline()
    assert [r.status for r in ctl.run_cycle(0, 2)] == [Status.DISCARD, Status.KEEP]
    assert ctl.best_score == 16.0


def test_noise_aware_decider_discards_gains_below_the_floor(tmp_path: Path) -> None:
    # baseline 9; x=2.9 -> 8.41 (gain 0.59 < floor 1); x=2.0 -> 4 (gain 5)
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.9, 2.0)),
                          decider=NoiseAwareDecider(noise_floor=1.0))
    ctl.ensure_baseline()
    assert [r.status for r in ctl.run_cycle(0, 2)] == [Status.DISCARD, Status.KEEP]

    strict = make_controller(tmp_path / "strict", proposer=ScriptedProposer(xs(2.9)))
    strict.ensure_baseline()
    assert strict.step().status is Status.KEEP  # the same gain is progress without a floor


def test_noise_aware_decider_refuses_negative_floor() -> None:
    with pytest.raises(ValueError):
        NoiseAwareDecider(noise_floor=-0.1)


# -- filters ----------------------------------------------------------------------------------------
def test_filter_rejection_reasks_with_reason_then_runs_the_last_candidate_rather_than_lose_the_trial(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=proposer, executor=executor, max_reasks=2)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("wall", filter=lambda p, ctx: FilterVerdict.reject("too far")))

    record = ctl.step()

    # a mechanism's refusal is a preference: asked again with the reason, max_reasks times, and then
    # the last candidate runs (an iteration lost to a filter would be a wasted trial)
    assert record.status in (Status.KEEP, Status.DISCARD)
    assert record.proposal is not None
    assert record.rejections[:3] == ("wall: too far",) * 3
    assert "rather than lose the trial" in record.rejections[3]
    assert [c.feedback for c in proposer.contexts] == [(), ("wall: too far",), ("wall: too far",) * 2]
    assert executor.iterations == [0, 1]
    assert record.hook_calls == {"wall": {"filter": 3}} and record.hook_effects == {"wall": {"filter": 3}}


@pytest.mark.parametrize("waste", ["infeasible", "duplicate"])
def test_a_filter_veto_never_makes_the_controller_run_a_wasted_trial(tmp_path: Path, waste: str) -> None:
    # the yield applies only to candidates that pass the controller's own checks
    class Checked(QuadraticExecutor):
        def infeasible(self, proposal, incumbent, run_dir):
            return "never" if waste == "infeasible" else None

    executor = Checked()
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.0)), executor=executor, max_reasks=2)
    ctl.ensure_baseline()
    if waste == "duplicate":
        ctl.step()  # x = 2.0 is measured; the proposer offers it again below
    ran = len(executor.executed)
    ctl.attach(make_mechanism("wall", filter=lambda p, ctx: FilterVerdict.reject("too far")))
    record = ctl.step()
    assert record.status is Status.REJECTED and record.proposal is None
    assert len(executor.executed) == ran  # nothing more ran


def test_filter_rejection_then_acceptance_runs_the_reasked_candidate(tmp_path: Path) -> None:
    seen: list[Proposal] = []

    def once(p: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        seen.append(p)
        return FilterVerdict.reject("try another") if len(seen) == 1 else None

    proposer = ScriptedProposer(xs(2.5, 1.0))
    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=proposer, executor=executor)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("picky", filter=once))

    record = ctl.step()

    assert record.rejections == ("picky: try another",)
    assert proposer.contexts[1].feedback == ("picky: try another",)
    assert executor.executed[-1][1].changes == {"x": 1.0}
    assert record.status is Status.KEEP


def test_filter_rewrite_replaces_the_proposal(tmp_path: Path) -> None:
    rewritten = Proposal(changes={"x": 0.5}, hypothesis="smaller step", origin="rewriter")
    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.5)), executor=executor)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("rewriter", filter=lambda p, ctx: FilterVerdict.rewrite(rewritten, "clip")))

    record = ctl.step()

    assert executor.executed[-1] == (1, rewritten)
    assert record.proposal == rewritten
    assert ctl.run.journal.last("proposal")["proposal"]["changes"] == {"x": 0.5}
    assert record.score == pytest.approx(0.25)


def test_rewritten_proposal_is_filtered_by_later_mechanisms(tmp_path: Path) -> None:
    seen_by_tabu: list[Proposal] = []

    def tabu(p: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        seen_by_tabu.append(p)
        return FilterVerdict.reject("tabu region") if p.region == "forbidden" else None

    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.5)), executor=executor, max_reasks=0)
    ctl.ensure_baseline()
    forbidden = Proposal(changes={"x": 0.5}, region="forbidden")
    ctl.attach(make_mechanism("rewriter", filter=lambda p, ctx: FilterVerdict.rewrite(forbidden)))
    ctl.attach(make_mechanism("tabu", filter=tabu))

    record = ctl.step()

    assert forbidden in seen_by_tabu
    assert record.rejections[0] == "tabu: tabu region"  # the later filter judged the rewritten candidate
    # with no re-ask left, the refused candidate runs rather than the iteration being lost
    assert "rather than lose the trial" in record.rejections[1] and record.proposal.region == "forbidden"


# -- mechanism propose / decide ---------------------------------------------------------------------
def test_mechanism_propose_takes_over_and_is_credited_as_origin(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", proposer=proposer, executor=executor)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("driver", propose=lambda ctx: Proposal(changes={"x": 1.5})))
    ctl.attach(make_mechanism("second", propose=lambda ctx: Proposal(changes={"x": -9.0})))

    record = ctl.step()

    assert proposer.contexts == []
    assert record.proposal is not None
    assert record.proposal.origin == "driver"
    assert record.proposal.changes == {"x": 1.5}  # the first mechanism's answer wins
    assert executor.executed[-1][1].changes == {"x": 1.5}


@pytest.mark.parametrize("hook", ["propose", "decide"])
def test_a_mechanism_attached_in_front_answers_before_the_ones_attached_earlier(tmp_path: Path, hook: str) -> None:
    # Level 2 attaches the design on trial in front: a first-answer hook (propose, decide) reaches it
    # before the designs kept earlier, which would otherwise answer every time and silence it
    calls: list[str] = []

    def mechanism(name: str, x: float, keep: bool):
        def propose(ctx):
            calls.append(f"{name}.propose")
            return Proposal(changes={"x": x}) if hook == "propose" else None

        def decide(record, ctx):
            calls.append(f"{name}.decide")
            return keep if hook == "decide" else None

        return make_mechanism(name, propose=propose, decide=decide)

    ctl = make_controller(tmp_path / "run", proposer=QuadraticProposer(), executor=QuadraticExecutor())
    ctl.ensure_baseline()
    ctl.attach(mechanism("kept-earlier", 1.5, True))
    ctl.attach(mechanism("on-trial", 2.5, False), front=True)
    ctl.attach(mechanism("library", 0.5, True))

    record = ctl.step()

    assert [m.name for m in ctl.mechanisms] == ["on-trial", "kept-earlier", "library"]
    assert [c for c in calls if c.endswith(f".{hook}")][0] == f"on-trial.{hook}"
    if hook == "propose":
        assert record.proposal.origin == "on-trial" and record.proposal.changes == {"x": 2.5}
        assert record.hook_effects["on-trial"]["propose"] == 1 and "kept-earlier" not in record.hook_effects
    else:
        assert record.status is Status.DISCARD and record.decided_by == "on-trial"  # the others would keep
        assert "kept-earlier.decide" not in calls


def test_mechanism_propose_keeps_an_explicit_origin(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("driver", propose=lambda ctx: Proposal(changes={"x": 1.5}, origin="bandit-arm-3")))
    assert ctl.step().proposal.origin == "bandit-arm-3"


def test_mechanism_propose_none_falls_back_to_the_proposer(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    ctl = make_controller(tmp_path / "run", proposer=proposer)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("shy", propose=lambda ctx: None))
    record = ctl.step()
    assert proposer.iterations == [1]
    assert record.proposal.origin == "proposer"


@pytest.mark.parametrize(("x", "verdict", "status", "decided_by"), [
    (1.0, False, Status.DISCARD, "judge"),   # an improvement overridden to discard
    (2.9, None, Status.KEEP, "decider"),     # deferring leaves the decider's call
    (4.0, True, Status.KEEP, "judge"),       # a regression overridden to keep
])
def test_mechanism_decide_overrides_keep_discard(tmp_path: Path, x: float, verdict: bool | None,
                                                 status: Status, decided_by: str) -> None:
    drafts: list[TrialRecord] = []

    def judge(record: TrialRecord, ctx: ProposalContext) -> bool | None:
        drafts.append(record)
        return verdict

    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(x)))
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("judge", decide=judge))

    record = ctl.step()

    assert (record.status, record.decided_by) == (status, decided_by)
    assert drafts[0].status is (Status.KEEP if x < X0 else Status.DISCARD)  # the draft shows the decider's call
    assert record.best_after == (record.score if status is Status.KEEP else X0**2)


# -- broken mechanisms ------------------------------------------------------------------------------
def _raise(*args: Any) -> Any:
    raise RuntimeError("kaput")


@pytest.mark.parametrize("hook", ["guidance", "propose", "filter", "decide", "observe"])
def test_hook_that_raises_is_detached_and_journaled_and_the_loop_continues(tmp_path: Path, hook: str) -> None:
    detached: list[tuple[str, str]] = []
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.0, 1.0)))
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("broken", **{hook: _raise}), replay=False)  # a replaying observe would raise here
    ctl.on_detach.append(lambda attached, reason: detached.append((attached.name, reason)))

    first = ctl.step()
    second = ctl.step()

    assert ctl.mechanisms == []
    assert [r.status for r in (first, second)] == [Status.KEEP, Status.KEEP]
    event = ctl.run.journal.last("mechanism_detached")
    assert event is not None
    assert (event["name"], event["hook"], event["iteration"]) == ("broken", hook, 1)
    assert "RuntimeError: kaput" in event["reason"]
    assert "Traceback" in event["traceback_tail"] and "kaput" in event["traceback_tail"]
    assert detached == [("broken", event["reason"])]
    assert first.hook_calls == {"broken": {hook: 1}}
    assert second.hook_calls == {}  # never called again once detached
    assert len(list(ctl.run.journal.events("mechanism_detached"))) == 1


def _spin(*args: Any) -> Any:
    while True:
        pass


def test_hook_that_loops_forever_is_detached_in_main_thread(tmp_path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()
    ctl = make_controller(tmp_path / "run", hook_timeout_s=0.2)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("stuck", filter=_spin))

    started = time.monotonic()
    record = ctl.step()

    assert time.monotonic() - started < 3.0
    assert record.status in (Status.KEEP, Status.DISCARD)
    assert ctl.mechanisms == []
    assert "HookTimeout" in ctl.run.journal.last("mechanism_detached")["reason"]


def test_hook_that_loops_forever_is_detached_in_worker_thread(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run", hook_timeout_s=0.2)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("stuck", guidance=_spin))
    out: dict[str, Any] = {}

    def work() -> None:
        started = time.monotonic()
        out["record"] = ctl.step()
        out["elapsed"] = time.monotonic() - started

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(10)

    assert not worker.is_alive(), "a stuck hook in a worker thread was not stopped"
    assert out["elapsed"] < 3.0
    assert out["record"].status in (Status.KEEP, Status.DISCARD)
    assert ctl.mechanisms == []
    assert "HookTimeout" in ctl.run.journal.last("mechanism_detached")["reason"]


@pytest.mark.parametrize(("hook", "answer"), [
    ("guidance", "just a string"),
    ("propose", {"x": 1.0}),
    ("filter", True),
    ("decide", 1),
])
def test_hook_returning_wrong_type_is_detached(tmp_path: Path, hook: str, answer: Any) -> None:
    executor = QuadraticExecutor()
    ctl = make_controller(tmp_path / "run", executor=executor)
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("sloppy", **{hook: lambda *args: answer}))

    record = ctl.step()

    assert ctl.mechanisms == []
    assert record.status in (Status.KEEP, Status.DISCARD)
    event = ctl.run.journal.last("mechanism_detached")
    assert event["hook"] == hook
    assert f"returned {type(answer).__name__}" in event["reason"]


# -- executor and proposer failures -----------------------------------------------------------------
def test_executor_raising_records_crash_with_traceback_and_next_iteration_runs(tmp_path: Path) -> None:
    executor = QuadraticExecutor(script={1: RuntimeError("disk on fire")})
    mech = RecordingMechanism()
    ctl = make_controller(tmp_path / "run", proposer=ScriptedProposer(xs(2.0, 1.0)), executor=executor)
    ctl.ensure_baseline()
    ctl.attach(mech)

    crashed, after = ctl.run_cycle(0, 2)

    assert crashed.status is Status.CRASH
    assert crashed.iteration == 1
    assert crashed.error == "RuntimeError: disk on fire"
    assert "Traceback" in crashed.log_tail and "disk on fire" in crashed.log_tail
    assert crashed.score is None and crashed.best_after == X0**2
    assert crashed.proposal is not None and crashed.proposal.changes == {"x": 2.0}
    assert (after.iteration, after.status) == (2, Status.KEEP)
    # settled and observed like any finished record (before hook_calls is filled in)
    assert [(r.iteration, r.status) for r in executor.settled] == [(0, Status.KEEP), (1, Status.CRASH), (2, Status.KEEP)]
    assert [(r.iteration, r.status) for r in mech.observed] == [(0, Status.KEEP), (1, Status.CRASH), (2, Status.KEEP)]
    assert [e["record"]["status"] for e in ctl.run.journal.events("trial")] == ["keep", "crash", "keep"]


@pytest.mark.parametrize(("outcome", "status"), [("crash", Status.CRASH), ("fail", Status.FAIL),
                                                  ("timeout", Status.TIMEOUT)])
def test_executor_result_status_maps_to_record_status(tmp_path: Path, outcome: str, status: Status) -> None:
    evaluator = RecordingEvaluator()
    ctl = make_controller(tmp_path / "run", executor=QuadraticExecutor(script={1: outcome}), evaluator=evaluator)
    ctl.ensure_baseline()

    record = ctl.step()

    assert record.status is status
    assert record.error == f"scripted {outcome}"
    assert record.log_tail == f"scripted {outcome}"
    assert record.score is None
    assert len(evaluator.inputs) == 1  # only the baseline was judged
    assert ctl.best_score == X0**2


def test_proposer_raising_records_crash_and_next_iteration_runs(tmp_path: Path) -> None:
    class Flaky(QuadraticProposer):
        def propose(self, ctx: ProposalContext) -> Proposal:
            if ctx.iteration == 1:
                raise ValueError("unparseable reply")
            return super().propose(ctx)

    ctl = make_controller(tmp_path / "run", proposer=Flaky())
    ctl.ensure_baseline()
    crashed, after = ctl.run_cycle(0, 2)
    assert (crashed.status, crashed.proposal, crashed.error) == (Status.CRASH, None, "ValueError: unparseable reply")
    assert after.iteration == 2 and after.finished_ok


# -- hook call accounting ---------------------------------------------------------------------------
def test_hook_calls_count_only_overridden_hooks_and_totals_sum_them(tmp_path: Path) -> None:
    rejected_once: set[int] = set()

    def filt(p: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        if ctx.iteration not in rejected_once:
            rejected_once.add(ctx.iteration)
            return FilterVerdict.reject("once per iteration")
        return None

    ctl = make_controller(tmp_path / "run")
    ctl.ensure_baseline()
    ctl.attach(make_mechanism("counter", filter=filt, observe=lambda r: None))
    ctl.attach(Mechanism(), name="idle")  # overrides nothing: never called, never counted

    records = ctl.run_cycle(0, 3)

    assert [r.hook_calls for r in records] == [{"counter": {"filter": 2, "observe": 1}}] * 3
    assert hook_call_totals(records) == {"counter": {"filter": 6, "observe": 3}}
    assert hook_call_totals(ctl.records(include_baseline=True)) == {"counter": {"filter": 6, "observe": 3}}
    assert hook_call_totals([]) == {}


# -- stopping and resuming --------------------------------------------------------------------------
def test_resume_reexecutes_the_pending_candidate_without_reproposing(tmp_path: Path) -> None:
    path = tmp_path / "run"
    first_executor = QuadraticExecutor(script={4: KeyboardInterrupt})
    first = make_controller(path, proposer=QuadraticProposer(), executor=first_executor, seed=7)
    first.attach(make_mechanism("tally", filter=lambda p, ctx: None))
    first.ensure_baseline()
    with pytest.raises(KeyboardInterrupt):
        first.run_cycle(0, 6)  # iterations 1-3 finish; 4 is killed after its proposal was journaled

    journal = first.run.journal
    pending = journal.last("proposal")
    assert pending["iteration"] == 4
    assert journal.last("stopped")["iteration"] == 4 and "KeyboardInterrupt" in journal.last("stopped")["reason"]
    assert [e["record"]["iteration"] for e in journal.events("trial")] == [0, 1, 2, 3]
    first.run.close()

    proposer = QuadraticProposer()
    executor = QuadraticExecutor()
    second = make_controller(path, proposer=proposer, executor=executor, seed=7)
    second.attach(make_mechanism("tally", filter=lambda p, ctx: None))
    assert len(second.history) == 4
    records = second.run_cycle(0, 6)

    assert executor.executed[0] == (4, Proposal.model_validate(pending["proposal"]))
    assert proposer.iterations == [5, 6]  # not asked again for iteration 4
    assert len(records) == 6
    trials = [e["record"] for e in second.run.journal.events("trial")]
    assert [t["iteration"] for t in trials] == list(range(7))
    assert trials[4]["proposal"] == pending["proposal"]
    assert trials[4]["hook_calls"] == {"tally": {"filter": 1}}  # the interrupted attempt's calls carry over
    second.run.close()

    third_executor = QuadraticExecutor()
    third = make_controller(path, executor=third_executor)
    assert third.run_cycle(0, 6) == records  # complete: nothing runs twice
    assert third_executor.executed == []
    third.run.close()


def test_budget_exceeded_in_proposer_stops_without_a_record(tmp_path: Path) -> None:
    class Broke(QuadraticProposer):
        def propose(self, ctx: ProposalContext) -> Proposal:
            if ctx.iteration == 2:
                raise BudgetExceeded("spent $5.00 of $5.00")
            return super().propose(ctx)

    ctl = make_controller(tmp_path / "run", proposer=Broke())
    ctl.ensure_baseline()
    seen: list[TrialRecord] = []
    with pytest.raises(BudgetExceeded):
        ctl.run_cycle(0, 5, on_record=seen.append)

    assert [r.iteration for r in ctl.history] == [0, 1]
    assert [r.iteration for r in seen] == [1]
    stopped = ctl.run.journal.last("stopped")
    assert stopped["iteration"] == 2 and "BudgetExceeded" in stopped["reason"]
    assert journal_types(ctl)[-1] == "stopped"
    assert [e["iteration"] for e in ctl.run.journal.events("proposal")] == [0, 1]
    assert [e["record"]["iteration"] for e in ctl.run.journal.events("trial")] == [0, 1]


def test_run_cycle_with_past_deadline_runs_nothing(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    ctl = make_controller(tmp_path / "run", proposer=proposer)
    ctl.ensure_baseline()
    events_before = len(ctl.run.journal)

    assert ctl.run_cycle(0, 5, deadline=time.monotonic() - 1.0) == []
    assert proposer.contexts == []
    assert len(ctl.run.journal) == events_before


def test_run_cycle_counts_only_the_cycle_and_runs_what_is_missing(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.ensure_baseline()
    assert len(ctl.run_cycle(0, 2)) == 2
    assert len(ctl.run_cycle(0, 3)) == 3  # one more, not three
    cycle1 = ctl.run_cycle(1, 2)
    assert [(r.cycle, r.iteration) for r in cycle1] == [(1, 4), (1, 5)]
    assert len(ctl.records()) == 5 and len(ctl.history) == 6


# -- attaching --------------------------------------------------------------------------------------
def test_attach_replays_history_to_the_mechanism(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.ensure_baseline()
    ctl.run_cycle(0, 2)

    replayed = RecordingMechanism(name="late")
    ctl.attach(replayed, name="late")
    fresh = RecordingMechanism(name="fresh")
    ctl.attach(fresh, name="fresh", replay=False)

    assert replayed.replayed == ctl.history
    assert replayed.observed == ctl.history  # the default replay feeds observe
    assert fresh.replayed == [] and fresh.observed == []
    record = ctl.step()
    assert record.hook_calls["late"]["observe"] == 1  # replay is not counted as this iteration's calls


def test_attach_refuses_two_mechanisms_with_the_same_name(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.attach(RecordingMechanism())
    with pytest.raises(ValueError, match="recorder"):
        ctl.attach(RecordingMechanism())
    ctl.attach(RecordingMechanism(), name="recorder-2")  # an explicit name is a different mechanism
    assert [m.name for m in ctl.mechanisms] == ["recorder", "recorder-2"]


def test_detach_removes_by_name_and_journals(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path / "run")
    ctl.attach(RecordingMechanism())
    assert ctl.detach("recorder", reason="reverted by outer loop").name == "recorder"
    assert ctl.detach("recorder", reason="again") is None
    assert ctl.run.journal.last("mechanism_detached")["reason"] == "reverted by outer loop"


# -- guidance ---------------------------------------------------------------------------------------
def test_guidance_from_outer_loop_and_mechanisms_is_merged_for_the_proposer(tmp_path: Path) -> None:
    proposer = QuadraticProposer()
    ctl = make_controller(tmp_path / "run", proposer=proposer)
    ctl.ensure_baseline()
    ctl.outer_guidance = Guidance(text="outer says: small steps", constraints=Constraints(avoid_params=("y",)))
    ctl.attach(make_mechanism("tabu", guidance=lambda ctx: Guidance(
        text="avoid x:up", constraints=Constraints(avoid_regions=("x:up",), step_scale=0.5))))

    ctl.step()

    seen = proposer.contexts[-1].guidance
    assert seen.text == "outer says: small steps\n[tabu] avoid x:up"
    assert seen.constraints == Constraints(avoid_regions=("x:up",), avoid_params=("y",), step_scale=0.5)


def test_controller_rejects_negative_max_reasks(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_controller(tmp_path / "run", max_reasks=-1)


def test_context_seed_depends_on_controller_seed_and_iteration(tmp_path: Path) -> None:
    class Spy(Proposer):
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def propose(self, ctx: ProposalContext) -> Proposal:
            self.seeds.append(ctx.seed)
            return Proposal(changes={"x": 1.0 / ctx.iteration})

    spy = Spy()
    with RunDir.create(tmp_path / "a", fsync=False) as run:
        ctl = make_controller(tmp_path / "a", run=run, proposer=spy, seed=3)
        ctl.ensure_baseline()
        ctl.run_cycle(0, 2)
    assert spy.seeds == [3 * 1_000_003 + 1, 3 * 1_000_003 + 2]
