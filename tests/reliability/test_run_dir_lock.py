"""Two processes on one run directory: the second refuses at once with a one-line message naming the
holder, and the first finishes with a journal that has no line of anyone else's in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import RunDirError
from core.state import RunDir
from tests.reliability.conftest import cli_env, journal_sound, run_cli, trials

TRIALS = 2  # the first run's trials wait at a gate the test opens once the three attempts were refused


def test_a_second_cli_on_a_running_run_dir_refuses_and_never_writes(standin: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    gate = tmp_path / "gate"
    env = cli_env(STANDIN_GATE=str(gate))  # the first run holds the run dir however slow the machine is
    first = subprocess.Popen(
        [sys.executable, "-m", "domains.train_opt.cli", "--target-dir", str(standin), "--run-dir", str(run_dir),
         "run", "--levels", "1", "--inner-budget", str(TRIALS), "--outer-cycles", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "journal.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started"
            time.sleep(0.05)
        attempts = [
            ["resume", run_dir],
            ["--target-dir", standin, "--run-dir", run_dir, "run", "--inner-budget", "1"],
            ["resume", run_dir, "--max-calls", "5"],
        ]
        for args in attempts:
            size = (run_dir / "journal.jsonl").stat().st_size
            second = run_cli(*args, cwd=tmp_path, env=env, timeout=60)
            assert second.returncode == 2, (args, second.stdout[-1000:], second.stderr[-1000:])
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
            assert f"pid {first.pid}" in lines[0] or "already holds a run" in lines[0], lines[0]
            assert first.poll() is None, "the first run ended before the second was refused"
            assert (run_dir / "journal.jsonl").stat().st_size >= size
        gate.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read().decode()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    events = journal_sound(run_dir)
    assert len(trials(events)) == 1 + TRIALS
    assert [e["type"] for e in events].count("run_started") == 1 and "run_resumed" not in [e["type"] for e in events]
    assert "max_calls" not in (run_dir / "settings.json").read_text().replace('"max_calls": null', "")


def test_the_lock_holds_within_one_process_too(tmp_path: Path):
    with RunDir.create(tmp_path / "run") as run:
        run.journal.append({"type": "probe"})
        with pytest.raises(RunDirError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
            RunDir.open(tmp_path / "run")
    with RunDir.open(tmp_path / "run") as again:  # released on close
        assert len(again.journal) == 1
