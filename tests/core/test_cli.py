"""The CLI factory (core.cli) through script_opt's app: global options in any position and form, the
exit status of a stopped run, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import EXIT_STOPPED
from domains.script_opt.cli import app

SCRIPT = "X = 3.0  # the knob\nprint(f'loss: {(X - 1.2) ** 2:.6f}')\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "project"
    path.mkdir()
    (path / "fn.py").write_text(SCRIPT)
    return path


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("order", ["before", "after", "mixed"])
def test_global_options_work_before_after_and_around_the_command(project: Path, tmp_path: Path, order: str):
    run_dir = tmp_path / order
    globals_ = ["--target-dir", project, "--cmd", "python fn.py", "--metric=loss", "--seed=7", "--run-dir", run_dir, "-v"]
    command = ["run", "--levels", "1", "--inner-budget", "1", "--outer-cycles", "1"]
    args = {"before": [*globals_, *command], "after": [*command, *globals_],
            "mixed": [*globals_[:4], *command[:3], *globals_[4:], *command[3:]]}[order]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    settings = json.loads((run_dir / "settings.json").read_text())
    assert (settings["seed"], settings["metric"], settings["levels"]) == (7, "loss", ["1"])


def test_a_run_stopped_by_its_budget_exits_with_the_stopped_status(project: Path, tmp_path: Path):
    result = invoke("--target-dir", project, "--cmd", "python fn.py", "--metric", "loss", "--run-dir", tmp_path / "r",
                    "run", "--levels", "1", "--inner-budget", "3", "--outer-cycles", "1", "--max-calls", "1")
    assert result.exit_code == EXIT_STOPPED == 75, result.stdout
    assert "stopped:" in result.stdout and "resume" in result.stdout


def test_a_value_that_looks_like_a_command_name_is_not_taken_for_the_command(project: Path, tmp_path: Path):
    # the working directory is tmp_path: "--run-dir run" names the folder ./run, the command is "once"
    result = invoke("--target-dir", project, "--cmd", "python fn.py", "--metric", "loss", "--run-dir", "run", "once")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["inner_budget"] == 0
    result = invoke("once", "--run-dir", "bilevel", "--target-dir", project, "--cmd", "python fn.py", "--metric", "loss")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "bilevel" / "settings.json").is_file()
