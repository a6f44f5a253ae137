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

from core.records import Status, TrialRecord
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


# -- one CLI for every domain: global options anywhere, stops, markup, the seed -----------------------


def test_global_options_after_the_command_are_accepted(cli, standin, tmp_path):
    run_dir = tmp_path / "after"
    result = cli("bilevel", "--inner-budget", "1", "--outer-cycles", "1", "--target-dir", standin,
                 "--run-dir", run_dir, "--seed", "5")
    assert result.exit_code == 0, result.stderr
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["seed"] == 5 and settings["target_dir"] == str(standin) and settings["inner_budget"] == 1


def test_budget_flags_keep_both_spellings(cli, standin, tmp_path):
    run_dir = tmp_path / "spelled"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "run", "--levels", "1", "--max-inner", "1",
                 "--max-outer", "1")
    assert result.exit_code == 0, result.stderr
    settings = json.loads((run_dir / "settings.json").read_text())
    assert (settings["inner_budget"], settings["outer_cycles"]) == (1, 1)


def test_run_without_levels_runs_every_level(cli, standin, tmp_path):
    run_dir = tmp_path / "all"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "run", "--inner-budget", "1", "--outer-cycles", "2")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    assert any(e["type"] == "config" for e in events) and any(e.get("loop") == "mechanism" for e in events)


def test_time_budget_with_a_target_dir_is_an_error_not_ignored(cli, standin):
    line = _one_line_error(cli("--target-dir", standin, "--time-budget", "5", "once"))
    assert "--time-budget" in line and "bundled" in line
    _nothing_left_behind(cli.cwd)


def test_resume_refuses_options_that_shape_the_search(cli, bilevel_run):
    line = _one_line_error(cli("resume", bilevel_run, "--provider", "openai"))
    assert "--provider" in line and "settings.json" in line


def test_a_run_stopped_by_its_llm_budget_exits_75_and_resume_with_a_larger_budget_finishes(cli, standin, tmp_path):
    run_dir = tmp_path / "budget"
    result = cli("--target-dir", standin, "--run-dir", run_dir, "run", "--levels", "1", "--inner-budget", "3",
                 "--outer-cycles", "1", "--max-calls", "1")
    assert result.exit_code == 75, (result.stdout, result.stderr)
    assert "stopped:" in result.stdout and "budget" in result.stdout and f"resume {run_dir}" in result.stdout
    resumed = cli("resume", run_dir, "--max-calls", "100")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["complete"]


def test_a_provider_outage_exits_75_and_prints_the_crashes_that_caused_it(cli, standin, tmp_path, monkeypatch):
    from core.errors import ProviderError
    from domains.train_opt import offline

    def down(request):
        raise ProviderError("HTTP 503 from [inner] upstream")

    monkeypatch.setattr(offline, "propose", down)  # what the session registers for the proposer's purpose
    try:
        result = cli("--target-dir", standin, "--run-dir", tmp_path / "outage", "run", "--levels", "1",
                     "--inner-budget", "5", "--outer-cycles", "1")
    finally:
        monkeypatch.undo()
        offline.register()
    assert result.exit_code == 75, (result.stdout, result.stderr)
    crash_lines = [line for line in result.stdout.splitlines() if line.startswith("#") and " crash " in line]
    assert len(crash_lines) == 3, result.stdout  # all three, the one that triggered the stop too
    assert all("[inner]" in line for line in crash_lines), "rich markup ate the bracketed text"
    assert "provider failed 3 iterations in a row" in result.stdout


def test_record_lines_show_bracketed_text_literally():
    from rich.text import Text

    from core.records import Proposal
    from domains.train_opt.cli import record_line

    record = TrialRecord(loop="inner", iteration=3, cycle=0, status=Status.CRASH, error="[inner] [bold]boom[/bold]",
                         proposal=Proposal(changes={"LR": 0.1}, region="[LR]"))
    assert "[inner] [bold]boom[/bold]" in Text.from_markup(record_line("inner", record)).plain


SEED_TARGET = '''import os

LR = 0.5  # learning rate
SEED = int(os.environ.get("BILEVEL_SEED", "42"))  # a target with its own seed constant reads the run's seed

print("---")
print(f"val_bpb: {(LR - 0.3) ** 2 + 1:.6f}")
print(f"seed: {SEED}")
'''


@pytest.mark.parametrize("seeds", [(1, 2)])
def test_two_runs_with_different_seeds_train_with_different_seeds(cli, tmp_path, seeds):
    target = tmp_path / "seeded"
    target.mkdir()
    (target / "train.py").write_text(SEED_TARGET)
    received = []
    for seed in seeds:
        run_dir = tmp_path / f"seed{seed}"
        result = cli("--target-dir", target, "--run-dir", run_dir, "--seed", seed, "once")
        assert result.exit_code == 0, result.stderr
        received.append((run_dir / "trials" / "inner" / "00000" / "run.log").read_text().split("seed: ")[1].split()[0])
    assert received == [str(s) for s in seeds]
