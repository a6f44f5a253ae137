"""The trial executor against the stand-in target: ok, crash, FAIL and timeout are told apart, the
child's process group dies on a timeout, secrets never reach the child, every trial leaves its files.

The stand-in (standin_target/) follows the autoresearch contract without torch: a trial takes a few
tens of milliseconds. It is copied to ``tmp_path`` first, as a session copies a target into its run.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from core.plugins import ExecContext
from core.records import Proposal
from domains.train_opt import target as tgt
from domains.train_opt.executor import TrainExecutor, parse_summary, read_tail

STANDIN = Path(__file__).parent / "standin_target"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory laid out like a session's: ``target/`` (the working copy) and ``original_train.py``."""
    run = tmp_path / "run"
    shutil.copytree(STANDIN, run / "target", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(STANDIN / "train.py", run / "original_train.py")
    return run


def make_executor(run: Path, timeout_s: float = 30.0) -> TrainExecutor:
    return TrainExecutor(workdir=run / "target", original=run / "original_train.py", timeout_s=timeout_s)


def execute(executor: TrainExecutor, run: Path, changes: dict, iteration: int = 1, incumbent: str | None = None):
    trial_dir = run / "trials" / "inner" / f"{iteration:05d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExecContext(loop="inner", iteration=iteration, cycle=0, run_dir=run, trial_dir=trial_dir, incumbent=incumbent)
    return executor.execute(Proposal(changes=changes), ctx), trial_dir


def test_ok_trial_parses_the_summary_and_keeps_its_files(run_dir: Path):
    result, trial = execute(make_executor(run_dir), run_dir, {"MATRIX_LR": 0.06})
    assert result.status == "ok", result.log_tail
    assert result.metrics["val_bpb"] == pytest.approx(0.986359, abs=1e-6)
    assert result.metrics["num_steps"] == 10 and result.metrics["depth"] == 8
    assert result.artifact == "trials/inner/00001/train.py"
    assert {p.name for p in trial.iterdir()} >= {"train.py", "diff.patch", "run.log"}
    assert tgt.values((trial / "train.py").read_text())["MATRIX_LR"] == 0.06
    assert (run_dir / "target" / "train.py").read_text() == (trial / "train.py").read_text()
    patch = (trial / "diff.patch").read_text()
    assert "-MATRIX_LR = 0.04  #" in patch and "+MATRIX_LR = 0.06  #" in patch
    assert len([ln for ln in patch.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]) == 2
    assert result.duration_s > 0


def test_baseline_trial_runs_the_original_unchanged(run_dir: Path):
    result, trial = execute(make_executor(run_dir), run_dir, {}, iteration=0)
    assert result.status == "ok"
    assert result.metrics["val_bpb"] == pytest.approx(0.993203, abs=1e-6)
    assert (trial / "train.py").read_text() == (run_dir / "original_train.py").read_text()
    assert (trial / "diff.patch").read_text() == ""


def test_the_parent_is_the_incumbent_not_the_original(run_dir: Path):
    executor = make_executor(run_dir)
    first, _ = execute(executor, run_dir, {"MATRIX_LR": 0.06}, iteration=1)
    second, trial = execute(executor, run_dir, {"DEPTH": 10}, iteration=2, incumbent=first.artifact)
    values = tgt.values((trial / "train.py").read_text())
    assert (values["MATRIX_LR"], values["DEPTH"]) == (0.06, 10)
    patch = (trial / "diff.patch").read_text()
    assert "DEPTH" in patch and "MATRIX_LR" not in patch  # the diff is against the parent


def test_progress_lines_with_carriage_returns_are_tolerated(run_dir: Path):
    result, trial = execute(make_executor(run_dir), run_dir, {})
    raw = (trial / "run.log").read_bytes()
    assert raw.count(b"\r") >= 10  # the stand-in overwrote its progress line ten times
    assert result.status == "ok" and "val_bpb" in result.metrics
    assert "\r" not in result.log_tail
    assert "step 00009" in result.log_tail and "step 00003" not in result.log_tail  # last state only


def test_a_crash_without_a_val_bpb_line_keeps_the_traceback(run_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STANDIN_CRASH", "1")
    result, trial = execute(make_executor(run_dir), run_dir, {"DEPTH": 9})
    assert result.status == "crash"
    assert "val_bpb" not in result.metrics
    assert "no val_bpb line" in result.detail["error"] and "exit 1" in result.detail["error"]
    assert "RuntimeError: stand-in crash requested" in result.log_tail
    assert "Traceback" in result.log_tail
    assert (trial / "run.log").exists() and (trial / "train.py").exists()


def test_an_assertion_in_the_target_is_a_crash(run_dir: Path):
    # TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN: 2**19 / (512 * 2048) is not
    result, _ = execute(make_executor(run_dir), run_dir, {"DEVICE_BATCH_SIZE": 512})
    assert result.status == "crash"
    assert "AssertionError" in result.log_tail


def test_a_fail_line_with_exit_1_is_a_fail_not_a_crash(run_dir: Path):
    result, _ = execute(make_executor(run_dir), run_dir, {"MATRIX_LR": 0.9})
    assert result.status == "fail"
    assert "FAIL reported" in result.detail["error"] and "exit 1" in result.detail["error"]
    assert result.log_tail.rstrip().endswith("FAIL")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_hung_trial_times_out_and_its_whole_process_group_is_killed(run_dir: Path):
    # DEPTH == 31 makes the stand-in start a grandchild that ignores SIGTERM, then hang
    started = time.monotonic()
    result, trial = execute(make_executor(run_dir, timeout_s=1.5), run_dir, {"DEPTH": 31})
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert "killed after 1.5s" in result.detail["error"]
    assert elapsed < 15
    log = (trial / "run.log").read_text()
    pgid = int(re.search(r"pgid: (\d+)", log).group(1))
    grandchild = int(re.search(r"grandchild_pid: (\d+)", log).group(1))
    deadline = time.monotonic() + 5
    while (_alive(grandchild) or _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild survived the timeout"
    assert _group_members(pgid) == []
    assert "grandchild_pid" in result.log_tail  # the log tail is kept for the next proposal


def test_api_keys_do_not_reach_the_child(run_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sentinel-openai")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sentinel-deepseek")
    monkeypatch.setenv("HF_TOKEN", "sentinel-hf")
    monkeypatch.setenv("MY_SERVICE_SECRET", "sentinel-secret")
    result, trial = execute(make_executor(run_dir), run_dir, {})
    assert result.status == "ok"
    assert result.metrics["secret_env_vars"] == 0
    log = (trial / "run.log").read_text()
    assert "secret-looking environment variables: none" in log
    assert "sentinel" not in log


def test_a_rejected_edit_is_a_crash_that_runs_nothing(run_dir: Path):
    before = (run_dir / "target" / "train.py").read_text()
    result, trial = execute(make_executor(run_dir), run_dir, {"MATRIX_LR": "0.1; import os"})
    assert result.status == "crash"
    assert result.detail["error"].startswith("edit rejected:")
    assert (run_dir / "target" / "train.py").read_text() == before
    assert not (trial / "run.log").exists()


def test_parse_summary_reads_only_the_lines_after_the_last_separator():
    out = ("step 1\rstep 2\rstep 3\n---\nval_bpb: 9.0\n"  # an earlier, abandoned summary
           "loss: nan\n---\nval_bpb: 0.997900\ntraining_seconds: 300.1\nnote: not-a-number\n")
    assert parse_summary(out) == {"val_bpb": 0.9979, "training_seconds": 300.1}
    assert parse_summary("no summary at all\n") == {}


def test_read_tail_keeps_the_last_state_of_overwritten_lines(tmp_path: Path):
    log = tmp_path / "run.log"
    log.write_bytes(b"start\n" + b"".join(b"\rstep %d" % i for i in range(1000)) + b"\n---\nval_bpb: 1.0\n")
    tail = read_tail(log, n=200)
    assert tail.endswith("---\nval_bpb: 1.0\n")
    assert "step 999" in tail and "step 998" not in tail
    assert len(tail) <= 200
