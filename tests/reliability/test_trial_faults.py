"""Trial faults: a training child that crashes at start or mid-training, reports NaN or ``FAIL``,
prints no summary, hangs (with a grandchild), ignores SIGTERM, floods its output, or leaves a
process behind. Each is classified, leaves no process behind, and costs bounded memory; in a whole
run every iteration is journaled once and ``resume`` has nothing left to do.
"""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

from core.plugins import ExecContext
from core.records import Proposal, Status
from domains.train_opt.executor import LOG_TAIL_CHARS, TrainExecutor
from domains.train_opt.session import TrainSession, make_settings
from tests.reliability.conftest import alive, executions, journal_sound, ran, trials

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process checks read /proc")


@pytest.fixture
def trial(tmp_path: Path, standin: Path, plan):
    """``trial("fault", timeout_s=...)`` runs one stand-in trial whose 1st invocation has ``fault``."""
    run_dir = tmp_path / "run"
    workdir = run_dir / "target"
    shutil.copytree(standin, workdir)

    def run(fault: str, *, timeout_s: float = 30.0):
        plan({1: fault} if fault else {})
        trial_dir = run_dir / "trials" / "inner" / "00001"
        trial_dir.mkdir(parents=True, exist_ok=True)
        executor = TrainExecutor(workdir=workdir, original=standin / "train.py", timeout_s=timeout_s)
        ctx = ExecContext(loop="inner", iteration=1, cycle=0, run_dir=run_dir, trial_dir=trial_dir, incumbent=None)
        started = time.monotonic()
        result = executor.execute(Proposal(changes={"WEIGHT_DECAY": 0.15}), ctx)
        return result, time.monotonic() - started, trial_dir

    return run


def spawned(plan) -> list[int]:
    return [int(line) for line in plan.pids.read_text().split()] if plan.pids.exists() else []


def none_alive(pids: list[int], wait_s: float = 3.0) -> bool:
    deadline = time.monotonic() + wait_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


@pytest.mark.parametrize(("fault", "status", "evidence"), [
    ("crash_start", "crash", "crash before the first step"),
    ("crash_mid", "crash", "CUDA out of memory (simulated)"),
    ("fail", "fail", "FAIL"),
    ("no_summary", "crash", "summary was never printed"),
])
def test_a_failing_trial_is_classified_with_its_log_tail(trial, plan, fault: str, status: str, evidence: str):
    result, _, trial_dir = trial(fault)
    assert result.status == status
    assert evidence in result.log_tail and result.detail["error"]
    assert (trial_dir / "run.log").is_file() and (trial_dir / "train.py").is_file()
    assert none_alive(spawned(plan))


def test_a_nan_val_bpb_is_never_a_result(trial, plan):
    result, _, _ = trial("nan")
    assert result.status in ("fail", "crash") and "val_bpb" in result.detail["error"]


def test_a_hung_trial_is_killed_at_the_timeout_with_its_whole_group(trial, plan):
    result, seconds, _ = trial("hang", timeout_s=1.0)
    assert result.status == "timeout" and "killed after 1s" in result.detail["error"]
    assert seconds < 1.0 + 5.0
    pids = spawned(plan)
    assert len(pids) == 2, "the stand-in should have started itself and a grandchild"
    assert none_alive(pids), f"orphans survived the timeout: {[p for p in pids if alive(p)]}"


def test_a_trial_that_ignores_sigterm_is_sigkilled_after_the_grace(trial, plan):
    result, seconds, _ = trial("stubborn", timeout_s=1.0)
    assert result.status == "timeout"
    assert seconds < 1.0 + 3.0 + 5.0, "SIGKILL did not follow the grace period"
    assert none_alive(spawned(plan))


def test_a_process_left_behind_by_a_finished_trial_is_killed(trial, plan):
    result, _, _ = trial("leave_child")
    assert result.status == "ok"
    assert none_alive(spawned(plan)), "a grandchild outlived its finished trial"


def test_an_output_flood_goes_to_disk_and_costs_bounded_memory(trial, plan):
    flood_mb = 300
    tracemalloc.start()
    try:
        result, _, trial_dir = trial(f"flood:{flood_mb}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (trial_dir / "run.log").stat().st_size >= flood_mb * 2**20
    assert result.status == "ok" and result.metrics["val_bpb"] > 0
    assert len(result.log_tail) <= LOG_TAIL_CHARS
    assert peak < 32 * 2**20, f"reading a {flood_mb} MB log peaked at {peak / 2**20:.0f} MB of Python memory"


# -- a whole run meets every trial fault --------------------------------------------------------------


def test_a_run_survives_every_trial_fault_and_resume_has_nothing_left(tmp_path: Path, standin: Path, plan):
    # invocation 1 is the baseline; the rest land on Level-1 trials of a three-level run
    faults = {2: "crash_start", 3: "crash_mid", 4: "fail", 5: "nan", 6: "no_summary", 7: "hang", 8: "hang",
              9: "flood:20", 10: "leave_child"}  # (a child ignoring SIGTERM costs the 3 s grace: tested alone)
    plan(faults)
    # nine faults in a row: the stop after five failed trials is switched off to meet them all
    settings = make_settings(target_dir=str(standin), inner_budget=5, outer_cycles=2, trial_timeout_s=1.0,
                             max_failed_in_a_row=0)
    session = TrainSession.start(settings, tmp_path / "run")
    try:
        summary = session.run()
    finally:
        session.close()
    assert summary["complete"] and summary["stopped"] is None
    events = journal_sound(tmp_path / "run")
    records = trials(events)
    assert len(records) == 1 + 5 * 2
    statuses = [r.status for r in records]
    assert statuses.count(Status.TIMEOUT) == 2
    assert sum(s in (Status.CRASH, Status.FAIL) for s in statuses) >= 5
    assert len(executions(plan.ledger)) == len(ran(records)), "a trial ran that the journal does not hold, or twice"
    assert none_alive(spawned(plan))
    before = len(events)
    resumed = TrainSession.resume(tmp_path / "run")
    try:
        again = resumed.run()
    finally:
        resumed.close()
    assert again["complete"]
    after = journal_sound(tmp_path / "run")
    assert len(trials(after)) == len(records) and len(executions(plan.ledger)) == len(ran(records))
    assert {e["type"] for e in after[before:]} <= {"run_resumed", "run_finished"}
