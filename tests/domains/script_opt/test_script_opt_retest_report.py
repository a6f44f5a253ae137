"""script_opt's report and progress lines say what Level 2 did with a design: an inconclusive trial
is "retested next cycle", its retest is marked as one, each line gives the two gains the verdict
compared; and a run stopped by the wall-time limit says how to give it more time."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import pytest
from typer.testing import CliRunner

from core.level2 import BeatsParent
from domains.script_opt.cli import app

SCRIPT = "X = 3.0  # the knob\nprint(f'loss: {(X - 1.2) ** 2:.6f}')\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "fn.py").write_text(SCRIPT)
    return path


def _args(project: Path, run: Path, *more: str) -> list[str]:
    return ["--target-dir", str(project), "--cmd", "python fn.py", "--metric", "loss", "--run-dir", str(run),
            "bilevel", "--inner-budget", "2", "--outer-cycles", "3", "--levels", "1,2", *more]


def test_the_report_and_the_progress_lines_show_a_retest_as_one(project, tmp_path, monkeypatch):
    # every first trial inconclusive, every retest kept: cycle 1 is retested in cycle 2
    def judge(self, evidence, ctx):
        n = len(evidence.candidate)
        verdict = "retest" if n == 1 and evidence.can_retest else "keep"
        return verdict, {"rule": "test", "trials": n, "reason": f"test: mean of {n} trial(s) {fmean(evidence.candidate):.3g}"}

    monkeypatch.setattr(BeatsParent, "judge", judge)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, _args(project, run))
    assert result.exit_code == 0, result.output
    assert "inconclusive: retest next cycle" in result.output
    assert "vs its parent's" in result.output  # the two numbers the verdict compared
    report = (run / "REPORT.md").read_text(encoding="utf-8")
    lines = [line for line in report.splitlines() if line.startswith("- cycle ")]
    first, second = lines  # cycle 1: the design's first trial; cycle 2: its retest
    assert "inconclusive: retested next cycle" in first and "(retest)" not in first
    assert "(retest) kept" in second and "mean of 2 trial(s)" in second
    assert all("its gain" in line and "vs its parent's" in line for line in (first, second))


class _Ticking:
    """monotonic() one second later at every call: a wall-time limit passes after a few trials."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_run_stopped_by_the_wall_time_limit_says_how_to_give_it_more(project, tmp_path, monkeypatch):
    import core.inner_loop
    import core.schedule

    clock = _Ticking()
    monkeypatch.setattr(core.schedule, "time", clock)
    monkeypatch.setattr(core.inner_loop, "time", clock)
    result = CliRunner().invoke(app, _args(project, tmp_path / "run", "--wall-time", "6"))
    assert result.exit_code == 75, result.output
    assert "wall-time limit reached" in result.output and "--wall-time SECONDS" in result.output
