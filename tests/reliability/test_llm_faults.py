"""LLM faults, through the real ``openai`` SDK against a fake researcher on 127.0.0.1: 429 storms,
5xx, timeouts, dropped and refused connections, garbage bodies, truncated / malformed /
schema-violating / empty / null / multi-megabyte replies, a failing Level 1.5 or Level 2, and an
LLM budget spent mid-cycle.

Each fault meets a Level-1 run on the stand-in target (Levels 1.5 and 2 get three-level runs of
their own). The end state is checked the same way each time: the run finishes (or stops cleanly with the reason in its summary), the journal
parses with dense iterations, every trial process that started is journaled exactly once, and
``resume`` finishes what is left (nothing, for a run that finished).

The session's clients get a 0.5 s timeout and millisecond backoff (the production defaults are
60 s and half a second), so a fault costs the test milliseconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import domains.train_opt.session as session_module
from core.llm_client import RetryPolicy
from core.records import Status
from domains.train_opt.session import TrainSession, make_settings
from tests.reliability.conftest import executions, journal_sound, ran, trials
from tests.reliability.fake_researcher import FakeResearcher

INNER, CYCLES = 3, 2
TOTAL = 1 + INNER * CYCLES  # baseline + Level-1 trials of a three-level run
LEVEL_1 = {"levels": ("1",), "outer_cycles": 1}  # what a fault at the first proposal meets


@pytest.fixture
def researcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``researcher(faults, **kw)`` starts a fake and points provider ``openai`` at it."""
    monkeypatch.chdir(tmp_path)  # no developer .env is found upward
    real = session_module.make_client

    def quick(*args, **kwargs):
        kwargs.setdefault("timeout_s", 0.5)
        kwargs.setdefault("retry", RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.01))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "make_client", quick)
    started: list[FakeResearcher] = []

    def start(faults: dict[int, str] | None = None, **kwargs) -> FakeResearcher:
        server = FakeResearcher(faults, **kwargs)
        started.append(server)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-reliability-test")
        return server

    yield start
    for server in started:
        server.close()


def run(standin: Path, run_dir: Path, **settings) -> dict:
    values = {"target_dir": str(standin), "provider": "openai", "inner_budget": INNER, "outer_cycles": CYCLES}
    session = TrainSession.start(make_settings(**(values | settings)), run_dir)
    try:
        return session.run()
    finally:
        session.close()


def resume(run_dir: Path, **overrides) -> dict:
    session = TrainSession.resume(run_dir, overrides or None)
    try:
        return session.run()
    finally:
        session.close()


def end_state(run_dir: Path, plan) -> list:
    """The invariants every fault must leave; returns the inner records."""
    records = trials(journal_sound(run_dir))
    assert len(executions(plan.ledger)) == len(ran(records)), "a trial ran twice, or ran unjournaled"
    return records


def finished_then_resume_is_a_no_op(run_dir: Path, plan, summary: dict, total: int = TOTAL) -> list:
    assert summary["complete"] and summary["stopped"] is None, summary.get("stopped")
    records = end_state(run_dir, plan)
    assert len(records) == total
    again = resume(run_dir)
    assert again["complete"]
    assert len(end_state(run_dir, plan)) == total
    return records


def proposer_crashes(records) -> list:
    return [r for r in records if r.status is Status.CRASH and r.proposal is None]


# -- transport faults ---------------------------------------------------------------------------------

RECOVERED = {  # fault schedule -> retried or repaired within one proposal: no iteration is lost to it
    "429-burst": {0: "429", 1: "429"},
    "500-then-ok": {0: "500"},
    "503-burst": {0: "503", 1: "503"},
    "timeout": {0: "timeout"},
    "dropped-connection": {0: "drop", 1: "drop"},
    "garbage-body": {0: "garbage"},
    "truncated-json": {0: "truncated"},
    "malformed-json": {0: "malformed"},
    "schema-violation": {0: "schema"},
    "empty-reply": {0: "empty"},
    "multi-megabyte-reply": {0: "huge"},
}


@pytest.mark.parametrize("case", sorted(RECOVERED))
def test_a_fault_that_retries_or_repair_absorb_costs_no_iteration(
        researcher, standin: Path, plan, tmp_path: Path, case: str):
    server = researcher(RECOVERED[case])
    summary = run(standin, tmp_path / "run", **LEVEL_1)
    records = finished_then_resume_is_a_no_op(tmp_path / "run", plan, summary, 1 + INNER)
    assert proposer_crashes(records) == []
    assert server.requests[0]["fault"] and len(server.requests) > server.answered("ChangeReply")
    if case == "multi-megabyte-reply":
        longest = max(len(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines())
        assert longest < 200_000, "the multi-megabyte reply was copied into the journal"


LOST = {  # fault schedule -> outlasts the retries / the repair round: the proposal fails
    "429-storm": ({i: "429" for i in range(6)}, "HTTP 429"),
    "5xx-storm": ({i: "500" for i in range(3)}, "HTTP 500"),
    "timeouts": ({i: "timeout" for i in range(3)}, "timed out"),
    "garbage-bodies": ({i: "garbage" for i in range(3)}, "not a chat completion"),
    "null-content": ({0: "null"}, "empty reply"),
    "malformed-twice": ({0: "malformed", 1: "malformed"}, "after one repair round"),
    "schema-violation-twice": ({0: "schema", 1: "schema"}, "after one repair round"),
    "truncated-twice": ({0: "truncated", 1: "truncated"}, "after one repair round"),
    "empty-twice": ({0: "empty", 1: "empty"}, "after one repair round"),
}


@pytest.mark.parametrize("case", sorted(LOST))
def test_a_fault_that_outlasts_retries_is_one_crash_record_and_the_run_goes_on(
        researcher, standin: Path, plan, tmp_path: Path, case: str):
    faults, evidence = LOST[case]
    researcher(faults, hold_s=1.0)
    summary = run(standin, tmp_path / "run", **LEVEL_1)
    records = trials(journal_sound(tmp_path / "run"))
    lost = [r for r in records if r.info.get("provider_failure")]  # tried again: they use up no budget
    records = finished_then_resume_is_a_no_op(tmp_path / "run", plan, summary, 1 + INNER + len(lost))
    crashed = proposer_crashes(records)
    assert len(crashed) >= 1 and all(r.artifact is None for r in crashed), "a failed proposal ran a trial"
    assert evidence in crashed[0].error, crashed[0].error
    assert sum(r.status in (Status.KEEP, Status.DISCARD) for r in records) == 1 + INNER - len(crashed) + len(lost)


def test_refused_connections_during_an_outage_are_crash_records_then_the_run_recovers(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher({0: "refuse:0.6"})
    # retries here have no backoff, so a 0.6 s outage costs several iterations: allow them
    summary = run(standin, tmp_path / "run", inner_budget=4, max_provider_failures=0)
    records = trials(journal_sound(tmp_path / "run"))
    assert summary["complete"] and len(records) == 1 + 4 * CYCLES
    crashed = proposer_crashes(records)
    assert crashed and all("connection failed" in r.error or "Connection" in r.error for r in crashed)
    assert len(executions(plan.ledger)) == len(ran(records))


def test_a_long_provider_outage_stops_the_run_instead_of_burning_its_budget(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher({0: "refuse:5"})
    summary = run(standin, tmp_path / "run", inner_budget=6, outer_cycles=1)
    assert summary["stopped"] and "provider failed 3 iterations in a row" in summary["stopped"]
    records = trials(journal_sound(tmp_path / "run"))
    assert len(records) < 1 + 6, "the outage did not spend the whole trial budget"
    assert all(r.info.get("provider_failure") for r in records[-3:])
    assert "HTTP" in summary["stopped"] or "onnect" in summary["stopped"], "the stop names the last failure"


def test_iterations_lost_to_the_provider_do_not_use_up_the_trial_budget(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher({i: "500" for i in range(3)})  # outlasts the retries of the first proposal only
    summary = run(standin, tmp_path / "run", **LEVEL_1)
    records = trials(journal_sound(tmp_path / "run"))
    lost = [r for r in records if r.info.get("provider_failure")]
    assert summary["complete"] and len(lost) == 1
    assert sum(r.status in (Status.KEEP, Status.DISCARD) for r in records) == 1 + INNER, "a lost iteration cost a trial"


# -- Levels 1.5 and 2 -----------------------------------------------------------------------------------


def test_a_level_1_5_analyzer_that_keeps_failing_leaves_the_config_and_the_run_finishes(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher(schema_faults={"ConfigPatch": "503"})
    summary = run(standin, tmp_path / "run")
    finished_then_resume_is_a_no_op(tmp_path / "run", plan, summary)
    events = journal_sound(tmp_path / "run")
    rejected = [e for e in events if e["type"] == "config_rejected"]
    assert len(rejected) == CYCLES - 1 and "HTTP 503" in rejected[0]["error"]
    assert not [e for e in events if e["type"] == "config"]


def test_a_level_2_designer_that_keeps_failing_is_a_crashed_design_and_level_1_goes_on(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher(schema_faults={"DesignReply": "null"})
    summary = run(standin, tmp_path / "run")
    finished_then_resume_is_a_no_op(tmp_path / "run", plan, summary)
    designs = trials(journal_sound(tmp_path / "run"), loop="mechanism")
    assert [r.status for r in designs] == [Status.KEEP] + [Status.CRASH] * (CYCLES - 1)
    assert "empty reply" in designs[-1].error


# -- budget ------------------------------------------------------------------------------------------------


def test_a_budget_spent_mid_cycle_stops_cleanly_and_resume_with_a_larger_one_finishes(
        researcher, standin: Path, plan, tmp_path: Path):
    researcher()
    run_dir = tmp_path / "run"
    # strict improvement: no replicate, so every Level-1 trial costs exactly one researcher call
    summary = run(standin, run_dir, max_calls=2, decision="strict")
    assert not summary["complete"] and "budget" in summary["stopped"]
    assert (run_dir / "summary.json").is_file()
    before = trials(journal_sound(run_dir))
    assert len(before) == 1 + 2, "two calls buy two Level-1 trials after the baseline"
    events = journal_sound(run_dir)
    assert events[-1]["type"] == "run_stopped" and any(e["type"] == "stopped" for e in events)

    same = resume(run_dir)  # the budget is still spent: stops again at once, nothing lost
    assert "budget" in same["stopped"] and len(trials(journal_sound(run_dir))) == len(before)

    finished = resume(run_dir, max_calls=100)
    assert finished["complete"] and finished["stopped"] is None
    after = end_state(run_dir, plan)
    assert len(after) == TOTAL
    assert [r.model_dump(mode="json") for r in after[:len(before)]] == [r.model_dump(mode="json") for r in before]
    changed = [e for e in journal_sound(run_dir) if e["type"] == "settings_changed"]
    assert changed and changed[0]["changes"] == {"max_calls": 100} and changed[0]["previous"] == {"max_calls": 2}
    assert '"max_calls": 100' in (run_dir / "settings.json").read_text()


def test_the_resume_command_accepts_a_larger_budget(researcher, standin: Path, plan, tmp_path: Path):
    from typer.testing import CliRunner

    from domains.train_opt.cli import app

    researcher()
    run_dir = tmp_path / "run"
    assert "budget" in run(standin, run_dir, max_calls=3)["stopped"]
    result = CliRunner().invoke(app, ["resume", str(run_dir), "--max-calls", "100"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(end_state(run_dir, plan)) == TOTAL
    refused = CliRunner().invoke(app, ["resume", str(run_dir), "--max-calls", "-1"], catch_exceptions=False)
    assert refused.exit_code == 2 and "max_calls" in refused.stderr
