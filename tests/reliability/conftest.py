"""Shared pieces of the reliability suite: the fault-plan stand-in target, journal checks, the CLI.

Every fault test ends by checking the run's *end state* with :func:`journal_sound` (every line parses,
``seq`` is dense, each loop's iterations are dense with no duplicate) and, where trials ran, by
matching the stand-in's own ledger of executions against the journal (:func:`executions`): a trial
the journal records as run started exactly once; none ran that the journal does not hold.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.records import TrialRecord

HERE = Path(__file__).parent
STANDIN = HERE / "standin"
REPO = HERE.parents[1]
STANDIN_ENV = ("STANDIN_LEDGER", "STANDIN_PLAN", "STANDIN_SLEEP", "STANDIN_PIDS", "STANDIN_DUMP_ENV")


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """A private copy of the stand-in target (the user's clone)."""
    path = tmp_path / "clone"
    shutil.copytree(STANDIN, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``plan({3: "crash_mid"})`` makes the stand-in's 3rd invocation misbehave; the ledger of its
    executions is at ``plan.ledger``. Trials see it through the environment they inherit."""
    for name in STANDIN_ENV:
        monkeypatch.delenv(name, raising=False)
    ledger, pids, plan_path = tmp_path / "ledger.txt", tmp_path / "pids.txt", tmp_path / "plan.json"
    monkeypatch.setenv("STANDIN_LEDGER", str(ledger))
    monkeypatch.setenv("STANDIN_PIDS", str(pids))
    monkeypatch.setenv("STANDIN_PLAN", str(plan_path))
    plan_path.write_text("{}")

    def set_plan(faults: dict[int, str]) -> None:
        plan_path.write_text(json.dumps({str(k): v for k, v in faults.items()}))

    set_plan.ledger = ledger
    set_plan.pids = pids
    set_plan.path = plan_path
    return set_plan


# -- journal checks ---------------------------------------------------------------------------------


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every journal line, strictly: a line that does not parse fails the test."""
    events = []
    for number, line in enumerate((Path(run_dir) / "journal.jsonl").read_text().splitlines(), start=1):
        assert line.strip(), f"blank journal line {number}"
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"journal line {number} is not JSON: {line[:200]!r}") from exc
    return events


def trials(events: list[dict[str, Any]], loop: str = "inner") -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in events if e["type"] == "trial" and e["loop"] == loop]


def journal_sound(run_dir: Path) -> list[dict[str, Any]]:
    """Parse the journal and check its invariants; return the events."""
    events = read_events(run_dir)
    assert [e["seq"] for e in events] == list(range(len(events))), "journal seq is not dense"
    for loop in {e["loop"] for e in events if e["type"] == "trial"}:
        iterations = [r.iteration for r in trials(events, loop)]
        duplicates = [i for i, n in Counter(iterations).items() if n > 1]
        assert not duplicates, f"loop {loop}: iterations journaled twice: {duplicates}"
        assert iterations == list(range(len(iterations))), f"loop {loop}: iterations not dense: {iterations}"
    return events


def executions(ledger: Path) -> list[str]:
    """The stand-in's ``start`` lines: one per trial process that actually began."""
    if not ledger.exists():
        return []
    return [line for line in ledger.read_text().splitlines() if line.startswith("start")]


def ran(records: list[TrialRecord]) -> list[TrialRecord]:
    """Records of trials whose process was started (the executor wrote their train.py)."""
    return [r for r in records if r.artifact]


# -- processes --------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domains.train_opt.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
