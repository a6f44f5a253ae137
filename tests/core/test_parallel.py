"""Parallel trials (core.batch, core.pool): K candidates in flight, decided in proposal order.

The in-memory tests run the quadratic task on a thread pool with chosen per-iteration delays, so the
finish order is forced; the kill test SIGKILLs a child process in the middle of a batch of real trial
processes and resumes it; the CLI tests run each domain with ``--parallel 2``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.batch import EXECUTED, BatchRunner
from core.mechanism import Mechanism
from core.plugins import ExecContext, Executor
from core.pool import LocalPool, current_slot
from core.process import parse_summary, read_tail, run_command
from core.records import (
    ExecutionResult,
    FilterVerdict,
    Guidance,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
)
from core.settings import RunSettings
from tests.core.helpers import QuadraticExecutor, QuadraticProposer, ScriptedProposer, make_controller

REPO = Path(__file__).resolve().parents[2]


class DelayedExecutor(QuadraticExecutor):
    """The quadratic task, each iteration taking ``delays[iteration]`` seconds (threads run them at once)."""

    def __init__(self, delays: dict[int, float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.delays = delays

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        time.sleep(self.delays.get(ctx.iteration, 0.0))
        return super().execute(proposal, ctx)


class SpreadProposer(QuadraticProposer):
    """The quadratic proposer, stepping further for each candidate already in the batch (and for each
    refusal), so a batch's candidates differ the way an LLM asked with the pending ones in view would."""

    def propose(self, ctx: ProposalContext) -> Proposal:
        base = super().propose(ctx)
        n = len(ctx.pending) + len(ctx.feedback)
        x = round(base.changes["x"] + n * 0.3 * (1 if n % 2 else -1), 6)
        return Proposal(changes={"x": x}, hypothesis=f"move x to {x}", region=f"x:{x}")


def batched(path: Path, *, k: int, executor: Executor | None = None, proposer=None, **kwargs):
    ctl = make_controller(path, executor=executor, proposer=proposer or SpreadProposer(), **kwargs)
    pool = LocalPool(size=k)
    ctl.batch = BatchRunner(ctl, pool, size=k)
    return ctl, pool


def events(ctl, kind: str) -> list[dict]:
    return list(ctl.run.journal.events(kind, loop=ctl.loop))


def decisions(ctl) -> list[tuple]:
    return [(r.iteration, r.proposal.changes.get("x") if r.proposal else None, r.status, r.score, r.best_after)
            for r in ctl.history]


def test_out_of_order_completion_gives_the_same_decisions_as_in_order(tmp_path: Path):
    slow_first = {1: 0.3, 2: 0.15, 3: 0.0, 4: 0.3, 5: 0.15, 6: 0.0}
    slow_last = {1: 0.0, 2: 0.15, 3: 0.3, 4: 0.0, 5: 0.15, 6: 0.3}
    runs = {}
    for name, delays in (("reversed", slow_first), ("in_order", slow_last), ):
        ctl, pool = batched(tmp_path / name, k=3, executor=DelayedExecutor(delays), proposer=SpreadProposer(step=0.7))
        try:
            ctl.ensure_baseline()
            ctl.run_cycle(0, 6)
        finally:
            pool.close()
        runs[name] = ctl
    finished = {name: [e["iteration"] for e in events(ctl, EXECUTED)] for name, ctl in runs.items()}
    assert finished["reversed"] == [3, 2, 1, 6, 5, 4] and finished["in_order"] == [1, 2, 3, 4, 5, 6]
    assert decisions(runs["reversed"]) == decisions(runs["in_order"])
    statuses = [r.status for r in runs["reversed"].history[1:]]
    assert Status.KEEP in statuses and Status.DISCARD in statuses, "the decisions must be non-trivial"
    # records are journaled in proposal order whatever the finish order, each after its own executed event
    assert [r.iteration for r in runs["reversed"].history] == list(range(7))


def test_a_batch_is_decided_against_the_incumbent_its_earlier_trials_left(tmp_path: Path):
    # x = 2 (loss 4) and x = 1 (loss 1) both beat the baseline x = 3 (loss 9); x = 1.5 (2.25) beats 9
    # but not 1: kept only if decided after x = 1 in proposal order, and it is not
    xs = [Proposal(changes={"x": x}, region=f"x={x}") for x in (2.0, 1.0, 1.5)]
    ctl, pool = batched(tmp_path / "r", k=3, proposer=ScriptedProposer(xs), executor=DelayedExecutor({1: 0.2}))
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 3)
    finally:
        pool.close()
    assert [r.status for r in records] == [Status.KEEP, Status.KEEP, Status.DISCARD]
    assert [r.best_before for r in records] == [9.0, 4.0, 1.0]
    assert {r.parent_artifact for r in records} == {ctl.history[0].artifact}  # all built on the batch's start


def test_in_batch_duplicates_are_refused_and_the_proposer_sees_the_pending_candidates(tmp_path: Path):
    same, other = Proposal(changes={"x": 1.0}, region="x:1"), Proposal(changes={"x": 2.0}, region="x:2")
    proposer = ScriptedProposer([same, same, other])
    executor = QuadraticExecutor()
    ctl, pool = batched(tmp_path / "r", k=2, proposer=proposer, executor=executor)
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 2)
    finally:
        pool.close()
    assert [r.proposal.changes["x"] for r in records] == [1.0, 2.0]
    assert sorted(p.changes["x"] for _, p in executor.executed[1:]) == [1.0, 2.0], "the duplicate ran"
    assert any("already in flight in this batch" in reason for reason in records[1].rejections)
    asked = proposer.contexts
    assert asked[0].pending == () and asked[1].pending == (same,) and asked[2].pending == (same,)
    assert asked[2].feedback and "in flight" in asked[2].feedback[-1]


class PendingWatcher(Mechanism):
    """Remembers what each guidance and filter call saw in flight."""

    name = "watcher"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, tuple]] = []

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        self.seen.append(("guidance", ctx.iteration, tuple(p.changes["x"] for p in ctx.pending)))
        return None

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        self.seen.append(("filter", ctx.iteration, tuple(p.changes["x"] for p in ctx.pending)))
        return None


def test_mechanisms_see_the_candidates_in_flight(tmp_path: Path):
    xs = [Proposal(changes={"x": x}, region=f"x={x}") for x in (2.0, 1.0, 1.5)]
    watcher = PendingWatcher()
    ctl, pool = batched(tmp_path / "r", k=3, proposer=ScriptedProposer(xs))
    ctl.attach(watcher)
    try:
        ctl.ensure_baseline()
        ctl.run_cycle(0, 3)
    finally:
        pool.close()
    assert watcher.seen == [("guidance", 1, ()), ("filter", 1, ()), ("guidance", 2, (2.0,)), ("filter", 2, (2.0,)),
                            ("guidance", 3, (2.0, 1.0)), ("filter", 3, (2.0, 1.0))]


def test_a_duplicate_the_proposer_keeps_making_ends_as_a_rejected_slot(tmp_path: Path):
    same = Proposal(changes={"x": 1.0}, region="x:1")
    ctl, pool = batched(tmp_path / "r", k=2, proposer=ScriptedProposer([same]), max_reasks=1)
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 2)
    finally:
        pool.close()
    assert [r.status for r in records] == [Status.KEEP, Status.REJECTED]
    assert records[1].proposal is None and len(records[1].rejections) == 2


def test_a_configuration_measured_in_an_earlier_batch_is_never_run_again(tmp_path: Path):
    xs = [Proposal(changes={"x": x}, region=f"x={x}") for x in (2.0, 1.0, 2.0, 0.5, 1.0, 0.25)]
    executor = QuadraticExecutor()
    ctl, pool = batched(tmp_path / "r", k=2, proposer=ScriptedProposer(xs), executor=executor)
    try:
        ctl.ensure_baseline()
        ctl.run_cycle(0, 2)
        records = ctl.run_cycle(1, 2)
    finally:
        pool.close()
    ran = [p.changes.get("x") for _, p in executor.executed[1:]]
    assert ran == [2.0, 1.0, 0.5, 0.25] or sorted(ran) == [0.25, 0.5, 1.0, 2.0], ran
    assert [r.proposal.changes["x"] for r in records] == [0.5, 0.25]
    assert all(r.info.get("config_key") for r in ctl.history)


def test_a_batch_runs_the_owed_baseline_replicate_first_on_a_new_seed(tmp_path: Path):
    from core.plugins import NoiseAwareDecider
    from tests.core.test_decisions import SeededExecutor

    executor = SeededExecutor(sigma=0.01)
    ctl, pool = batched(tmp_path / "r", k=2, executor=executor, decider=NoiseAwareDecider(baseline_replicates=2),
                        proposer=ScriptedProposer([Proposal(changes={"x": x}, region=f"x={x}") for x in (4.0, 5.0, 6.0)]))
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 4)
    finally:
        pool.close()
    replicates = [r for r in records if r.proposal.is_replicate]
    assert [r.iteration for r in replicates] == [1, 3], "one replicate per batch, in its first slot"
    seeds = [seed for x, seed in executor.runs if x == 3.0]
    assert len(seeds) == 3 and len(set(seeds)) == 3, f"a baseline seed was measured twice: {seeds}"
    assert all(r.decided_by == "replicate" for r in replicates)
    assert sorted(r.info["seed"] for r in replicates) == sorted(s for s in seeds if s is not None)
    assert [r.proposal.changes.get("x") for r in records if not r.proposal.is_replicate] == [4.0, 5.0]


@pytest.mark.parametrize(("k", "budget"), [(2, 5), (3, 7), (4, 2)])
def test_the_trial_count_per_cycle_is_the_same_as_one_at_a_time(tmp_path: Path, k: int, budget: int):
    serial = make_controller(tmp_path / "serial", proposer=SpreadProposer())
    serial.ensure_baseline()
    for cycle in range(2):
        serial.run_cycle(cycle, budget)
    ctl, pool = batched(tmp_path / "batched", k=k)
    try:
        ctl.ensure_baseline()
        for cycle in range(2):
            ctl.run_cycle(cycle, budget)
    finally:
        pool.close()
    assert [r.iteration for r in ctl.history] == [r.iteration for r in serial.history] == list(range(1 + 2 * budget))
    assert [ctl.completed(c) for c in range(2)] == [serial.completed(c) for c in range(2)] == [budget, budget]
    assert len(events(ctl, EXECUTED)) == 2 * budget
    batches = [{e["batch"] for e in events(ctl, "proposal") if e["cycle"] == c and e.get("batch") is not None} for c in range(2)]
    assert [len(b) for b in batches] == [-(-budget // k)] * 2


def test_a_trial_that_raises_is_a_crash_record_and_the_batch_goes_on(tmp_path: Path):
    executor = QuadraticExecutor(script={2: RuntimeError("boom")})
    ctl, pool = batched(tmp_path / "r", k=3, executor=executor)
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 3)
    finally:
        pool.close()
    assert [r.status for r in records][1] is Status.CRASH and "boom" in records[1].error
    assert records[0].finished_ok and records[2].finished_ok


class EnvExecutor(Executor):
    """Runs a child that prints what its slot gave it (GPU, thread budget, cores)."""

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        code = ("import os; print('---'); print('gpu:', os.environ.get('CUDA_VISIBLE_DEVICES', -1)); "
                "print('threads:', os.environ.get('OMP_NUM_THREADS', 0)); print('cores:', len(os.sched_getaffinity(0))); "
                "print('loss:', %r)" % float(proposal.changes.get("x", 3.0)) ** 2)
        log = ctx.trial_dir / "run.log"
        run_command([sys.executable, "-c", code], cwd=ctx.trial_dir, log_path=log, timeout_s=30)
        slot = current_slot()
        return ExecutionResult(status="ok", metrics=parse_summary(read_tail(log)),
                               detail={"seen_slot": slot.index if slot else None})


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_each_slot_gives_its_trial_its_gpu_or_its_thread_budget_and_cores(tmp_path: Path):
    ctl = make_controller(tmp_path / "gpus", executor=EnvExecutor(), proposer=SpreadProposer())
    pool = LocalPool(size=2, gpus=("5", "7"))
    ctl.batch = BatchRunner(ctl, pool, size=2)
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 2)
    finally:
        pool.close()
    assert sorted(r.metrics["gpu"] for r in records) == [5.0, 7.0]
    assert {r.info["slot"]["gpu"] for r in records} == {"5", "7"}
    assert ctl.history[0].finished_ok and ctl.history[0].info["slot"]["index"] == 0, "the baseline runs in a slot too"

    ctl = make_controller(tmp_path / "cpus", executor=EnvExecutor(), proposer=SpreadProposer())
    pool = LocalPool(size=2, threads=1)
    ctl.batch = BatchRunner(ctl, pool, size=2)
    try:
        ctl.ensure_baseline()
        records = ctl.run_cycle(0, 2)
    finally:
        pool.close()
    assert all(r.metrics["threads"] == 1.0 and r.info["slot"]["threads"] == 1 for r in records)
    if len(os.sched_getaffinity(0)) >= 2:
        assert all(r.metrics["cores"] == 1.0 for r in records)
        assert sorted(r.info["slot"]["cpus"][0] for r in records) != [None, None]


def test_settings_record_the_thread_budget_of_a_parallel_run():
    assert RunSettings().trial_threads is None and RunSettings().parallel == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert RunSettings(parallel=2).trial_threads == max(1, cores // 2)
    assert RunSettings(parallel=2, trial_threads=3).trial_threads == 3
    assert RunSettings(parallel=4, gpus="0,1").gpus == ("0", "1")
    again = RunSettings.model_validate(RunSettings(parallel=2, trial_threads=5).model_dump(mode="json"))
    assert again.trial_threads == 5  # resume keeps what the run was started with


# -- SIGKILL mid-batch, then resume ------------------------------------------------------------------
TRIAL = textwrap.dedent("""
    import os, sys, time
    it, x, ledger, slow = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    with open(ledger, "a") as fh:
        fh.write(f"start {it} {os.getpid()}\\n")
    time.sleep(slow if it == 2 else 0.05)
    with open(ledger, "a") as fh:
        fh.write(f"end {it}\\n")
    print("---")
    print(f"loss: {x * x}")
""")


class ProcessExecutor(Executor):
    """Each trial is a child process (iteration 2 sleeps ``slow`` seconds); it logs start and end."""

    def __init__(self, ledger: Path, slow: float) -> None:
        self.ledger, self.slow = ledger, slow

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        x = float(proposal.changes.get("x", 3.0))
        log = ctx.trial_dir / "run.log"
        script = ctx.trial_dir / "trial.py"
        script.write_text(TRIAL)
        cmd = [sys.executable, str(script), str(ctx.iteration), str(x), str(self.ledger), str(self.slow)]
        run_command(cmd, cwd=ctx.trial_dir, log_path=log, timeout_s=120)
        metrics = parse_summary(read_tail(log))
        if "loss" not in metrics:
            return ExecutionResult(status="crash", log_tail=read_tail(log), detail={"error": "no loss"})
        return ExecutionResult(status="ok", metrics=metrics)


class CountingProposer(SpreadProposer):
    def __init__(self, calls: Path) -> None:
        super().__init__(step=0.7)
        self.calls = calls

    def propose(self, ctx: ProposalContext) -> Proposal:
        with open(self.calls, "a") as fh:
            fh.write(f"{ctx.iteration}\n")
        return super().propose(ctx)


def child_main(run_dir: str, ledger: str, calls: str, slow: str) -> None:
    """The child the kill test starts (and SIGKILLs): one batch of three trial processes."""
    ctl = make_controller(Path(run_dir), proposer=CountingProposer(Path(calls)),
                          executor=ProcessExecutor(Path(ledger), float(slow)), fsync=True)
    pool = LocalPool(size=3)
    ctl.batch = BatchRunner(ctl, pool, size=3)
    try:
        ctl.ensure_baseline()
        ctl.run_cycle(0, 3)
    finally:
        pool.close()
        ctl.run.close()


def child(tmp_path: Path, slow: float) -> subprocess.Popen:
    args = [str(tmp_path / "run"), str(tmp_path / "ledger"), str(tmp_path / "calls"), str(slow)]
    code = f"from tests.core.test_parallel import child_main; child_main(*{args!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def journal(tmp_path: Path) -> list[dict]:
    path = tmp_path / "run" / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_mid_batch_then_resume_loses_no_finished_trial_and_repeats_none(tmp_path: Path):
    proc = child(tmp_path, slow=60)
    deadline = time.monotonic() + 60
    while sorted(e["iteration"] for e in journal(tmp_path) if e["type"] == EXECUTED) != [1, 3]:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the fast trials of the batch never finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    proc.stderr.close()
    ledger = (tmp_path / "ledger").read_text().splitlines()
    slow_pid = next(int(line.split()[2]) for line in ledger if line.startswith("start 2 "))
    time.sleep(0.2)
    assert not alive(slow_pid), "the trial in flight outlived its SIGKILLed controller"
    proposed = (tmp_path / "calls").read_text().split()
    before = [e["proposal"] for e in journal(tmp_path) if e["type"] == "proposal" and e.get("batch") == 1]

    resumed = child(tmp_path, slow=0.05)
    assert resumed.wait(60) == 0, resumed.stderr.read().decode()[-3000:]
    resumed.stderr.close()
    events = journal(tmp_path)
    records = [TrialRecord.model_validate(e["record"]) for e in events if e["type"] == "trial"]
    assert [r.iteration for r in records] == [0, 1, 2, 3]
    assert all(r.status in (Status.KEEP, Status.DISCARD) for r in records)
    assert (tmp_path / "calls").read_text().split() == proposed == ["1", "2", "3"], "resume proposed again"
    assert [r.proposal.model_dump(mode="json") for r in records[1:]] == before, "resume ran other candidates"
    ends = [line for line in (tmp_path / "ledger").read_text().splitlines() if line.startswith("end")]
    assert sorted(ends) == ["end 0", "end 1", "end 2", "end 3"], "a finished trial ran again, or one was lost"
    starts = [line.split()[1] for line in (tmp_path / "ledger").read_text().splitlines() if line.startswith("start")]
    assert sorted(starts) == ["0", "1", "2", "2", "3"]  # only the killed one ran twice
    assert sorted(e["iteration"] for e in events if e["type"] == EXECUTED) == [1, 2, 3]


# -- every domain with --parallel 2 ------------------------------------------------------------------
def test_script_opt_runs_with_parallel_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from domains.script_opt.cli import app

    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "fn.py").write_text("X = 3.0  # knob\nY = 2  # knob\nprint(f'loss: {(X - 1.2) ** 2 + 0.1 * (Y - 5) ** 2:.6f}')\n")
    result = CliRunner().invoke(app, ["--target-dir", str(project), "--cmd", "python fn.py", "--metric", "loss",
                                      "--run-dir", str(tmp_path / "run"), "run", "--levels", "1,1.5", "--inner-budget", "2",
                                      "--outer-cycles", "2", "--parallel", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    assert "in flight #1, #2" in result.stdout
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["parallel"] == 2 and settings["trial_threads"] >= 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    trials = [TrialRecord.model_validate(e["record"]) for e in lines if e["type"] == "trial" and e["loop"] == "inner"]
    assert [r.iteration for r in trials] == list(range(5))
    assert {r.info["slot"]["index"] for r in trials[1:]} == {0, 1}
    assert [e["type"] for e in lines if e["type"] in ("config", "config_rejected")], "Level 1.5 acted after the batch"
    assert (tmp_path / "run" / "target.slot1").is_dir(), "the second slot has its own working copy"


def test_executor_ray_without_ray_installed_is_one_line_and_leaves_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import builtins

    from domains.script_opt.cli import app

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "fn.py").write_text("X = 1.0  # knob\nprint(f'loss: {X}')\n")
    result = CliRunner().invoke(app, ["--target-dir", "project", "--cmd", "python fn.py", "--metric", "loss", "--run-dir",
                                      "run", "run", "--levels", "1", "--executor", "ray", "--parallel", "2"])
    assert result.exit_code == 2 and "pip install -e '.[ray]'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_train_opt_runs_with_parallel_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    from domains.train_opt.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("domains.train_opt.report.plot", lambda records, path, title: path)  # matplotlib: seconds
    standin = tmp_path / "clone"
    shutil.copytree(REPO / "tests" / "domains" / "train_opt" / "standin_target", standin,
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = CliRunner().invoke(app, ["--target-dir", str(standin), "--run-dir", str(tmp_path / "run"), "run",
                                      "--levels", "1", "--inner-budget", "2", "--outer-cycles", "1", "--parallel", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    lines = [json.loads(x) for x in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    trials = [TrialRecord.model_validate(e["record"]) for e in lines if e["type"] == "trial" and e["loop"] == "inner"]
    assert [r.iteration for r in trials] == list(range(3)) and all(r.finished_ok for r in trials)
    assert [e["batch"] for e in lines if e["type"] == "proposal" and e.get("batch") is not None] == [1, 1]
    assert {r.info["slot"]["index"] for r in trials[1:]} == {0, 1}
    assert "in flight" in result.stdout


def test_article_opt_runs_with_parallel_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from domains.article_opt.cli import app

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["--run-dir", str(tmp_path / "run"), "run", "--articles", "article1", "--levels", "1",
                                    "--max-inner", "2", "--max-outer", "1", "--parallel", "2"], catch_exceptions=False)
    assert done.exit_code == 0, done.stdout
    lines = [json.loads(x) for x in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    trials = [e for e in lines if e["type"] == "trial" and e["loop"] == "inner.article1"]
    assert [e["record"]["iteration"] for e in trials] == [0, 1, 2]
    assert [e["iteration"] for e in lines if e["type"] == "proposal" and e.get("batch") == 1] == [1, 2]
    refused = CliRunner().invoke(app, ["--run-dir", str(tmp_path / "ray"), "run", "--articles", "article1",
                                       "--executor", "ray"])
    assert refused.exit_code == 2 and "--executor ray" in refused.stderr and not (tmp_path / "ray").exists()


# -- Ray ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # starts a local Ray instance (~10 s)
def test_script_opt_runs_its_batches_as_ray_tasks(tmp_path: Path):
    pytest.importorskip("ray")
    from domains.script_opt.session import ScriptSession, make_settings

    project = tmp_path / "project"
    project.mkdir()
    (project / "fn.py").write_text("import os\nX = 3.0  # knob\nprint('worker:', os.getpid())\nprint(f'loss: {(X - 1.2) ** 2:.6f}')\n")
    settings = make_settings(target_dir=str(project), cmd="python fn.py", metric="loss", levels=("1",),
                             inner_budget=4, outer_cycles=1, parallel=2, executor="ray")
    session = ScriptSession.start(settings, tmp_path / "run")
    try:
        summary = session.run()
    finally:
        session.close()
    assert summary["complete"] and summary["iterations"] == 4
    records = session.inner.history
    assert [r.iteration for r in records] == list(range(5)) and all(r.finished_ok for r in records)
    assert {r.info["slot"]["index"] for r in records[1:]} == {0, 1}
    assert all(r.info["slot"]["threads"] == 1 for r in records)
