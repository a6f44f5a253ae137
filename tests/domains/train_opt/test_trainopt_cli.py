"""The train_opt command line: user mistakes are one line on stderr and exit 2 with nothing left behind;
``once``, ``run``, ``bilevel``, ``resume`` and ``report`` work on the stand-in target.

The README's invocation is run verbatim as a subprocess (global options before the command); the rest
goes through typer's CliRunner in-process, which is quicker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domains.train_opt.cli import app

STANDIN = Path(__file__).parent / "standin_target"
REPO = Path(__file__).resolve().parents[3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "clone"
    shutil.copytree(STANDIN, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke the CLI in-process from an empty working directory (so a default runs/ would show up there)."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    invoke.cwd = work
    return invoke


def _one_line_error(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _nothing_left_behind(work: Path) -> None:
    runs = work / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.iterdir())


# -- user mistakes -----------------------------------------------------------------------------------


def test_an_unknown_provider_is_one_line_with_a_suggestion(cli, standin):
    line = _one_line_error(cli("--target-dir", standin, "--provider", "deepseak", "bilevel"))
    assert "unknown provider 'deepseak'" in line and "did you mean 'deepseek'" in line
    _nothing_left_behind(cli.cwd)


def test_a_provider_with_no_close_match_lists_the_known_ones(cli, standin):
    line = _one_line_error(cli("--target-dir", standin, "--provider", "nosuch", "bilevel"))
    assert "unknown provider 'nosuch'" in line and "offline" in line
    _nothing_left_behind(cli.cwd)


def test_readme_invocation_without_a_key_names_the_variable_and_leaves_no_run(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k and not k.startswith(("OPENAI", "ANTHROPIC"))}
    env["PYTHONPATH"] = str(REPO)
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "domains.train_opt.cli", "--provider", "deepseek", "bilevel",
         "--inner-budget", "5", "--outer-cycles", "2"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DEEPSEEK_API_KEY" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    _nothing_left_behind(work)


def test_a_missing_key_with_an_explicit_run_dir_leaves_no_run_dir(cli, standin, tmp_path):
    run_dir = tmp_path / "would-be-run"
    line = _one_line_error(cli("--provider", "deepseek", "--target-dir", standin, "--run-dir", run_dir,
                               "bilevel", "--inner-budget", "5", "--outer-cycles", "2"))
    assert "DEEPSEEK_API_KEY" in line
    assert not run_dir.exists()


def test_a_target_dir_that_does_not_exist_is_refused(cli, tmp_path):
    line = _one_line_error(cli("--target-dir", tmp_path / "nonexistent", "bilevel"))
    assert "nonexistent" in line and "train.py" in line
    _nothing_left_behind(cli.cwd)


@pytest.mark.parametrize("levels", ["2,9", "1.5,2", "one"])
def test_invalid_levels_are_refused(cli, standin, levels):
    line = _one_line_error(cli("--target-dir", standin, "bilevel", "--levels", levels))
    assert "--levels" in line


def test_resuming_a_directory_that_does_not_exist_is_refused(cli, tmp_path):
    line = _one_line_error(cli("resume", tmp_path / "nonexistent"))
    assert "nonexistent" in line


@pytest.mark.parametrize(("option", "value"), [("--inner-budget", "-1"), ("--outer-cycles", "0")])
def test_an_invalid_budget_is_refused(cli, standin, option, value):
    line = _one_line_error(cli("--target-dir", standin, "bilevel", option, value))
    assert option.lstrip("-").replace("-", "_") in line
    _nothing_left_behind(cli.cwd)


def test_report_of_a_directory_without_a_journal_is_refused(cli, tmp_path):
    line = _one_line_error(cli("report", tmp_path))
    assert "journal" in line


# -- commands on the stand-in ------------------------------------------------------------------------


def test_once_runs_one_baseline_trial(cli, standin, tmp_path):
    run_dir = tmp_path / "once"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "once")
    assert result.exit_code == 0, result.stderr
    assert "baseline" in result.stdout and "0.993203" in result.stdout
    assert "offline stand-in" in result.stdout
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    trials = [e for e in events if e["type"] == "trial"]
    assert len(trials) == 1 and trials[0]["record"]["status"] == "keep"
    assert (run_dir / "best_train.py").read_text() == (standin / "train.py").read_text()


def test_run_with_levels_1_is_level_1_only(cli, standin, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "run", "--levels", "1", "--inner-budget", "3",
                 "--outer-cycles", "1")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "trial" and e["loop"] == "inner" for e in events) == 4
    assert not any(e["type"] in ("config", "config_rejected") or e.get("loop") == "mechanism" for e in events)
    for i in range(4):  # one progress line per trial
        assert f"#  {i} c0" in result.stdout


@pytest.fixture
def bilevel_run(cli, standin, tmp_path) -> Path:
    run_dir = tmp_path / "bilevel"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "--seed", "1",
                 "bilevel", "--inner-budget", "2", "--outer-cycles", "2")
    assert result.exit_code == 0, result.stderr
    assert "best train.py vs. original" in result.stdout
    return run_dir


def test_report_writes_markdown_and_png(cli, bilevel_run):
    for name in ("REPORT.md", "val_bpb.png"):
        (bilevel_run / name).unlink()
    result = cli("report", bilevel_run)
    assert result.exit_code == 0, result.stderr
    report = (bilevel_run / "REPORT.md").read_text()
    assert (bilevel_run / "val_bpb.png").read_bytes()[:8] == PNG_MAGIC
    assert "baseline val_bpb: 0.993203" in report
    assert "deterministic stand-in, not an LLM" in report
    assert "## Level 1.5 configuration patches" in report and "## Level 2 mechanisms" in report
    assert report.count("\n| ") >= 1 + 2 * 2  # a table row per trial
    assert "![val_bpb per iteration](val_bpb.png)" in report


def test_resuming_a_finished_run_runs_nothing_again(cli, bilevel_run):
    journal = bilevel_run / "journal.jsonl"
    trials_before = journal.read_text().count('"type":"trial"')
    result = cli("resume", bilevel_run)
    assert result.exit_code == 0, result.stderr
    assert journal.read_text().count('"type":"trial"') == trials_before


def test_a_run_dir_that_holds_a_run_is_not_overwritten(cli, standin, bilevel_run):
    line = _one_line_error(cli("--target-dir", standin, "--run-dir", bilevel_run, "once"))
    assert "resume" in line
