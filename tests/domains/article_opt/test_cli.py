"""The command line, run as a user runs it: a child process, global options before the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[3]
PROVIDER_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY",
                 "OPENROUTER_API_KEY", "OPENAI_COMPAT_API_KEY", "OPENAI_COMPAT_BASE_URL")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS}
    full = {**base, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "domains.article_opt.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]


def only_run_dir(cwd: Path) -> Path:
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


def test_offline_run_of_the_issue_finishes_fast_with_journal_best_article_and_a_generated_stage(tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli("run", "--articles", "article1", "--max-inner", "5", "--max-outer", "4", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert elapsed < 120
    run_dir = only_run_dir(tmp_path)
    journal = events(run_dir)
    trials = [e for e in journal if e["type"] == "trial" and e["loop"] == "inner.article1"]
    assert len(trials) == 1 + 5 * 4
    assert (run_dir / "best" / "article1.md").is_file() and (run_dir / "REPORT.md").is_file()
    injected = [e for e in journal if e["type"] == "stage_injected"]
    assert injected, "Level 2 must load and inject at least one generated stage"
    verdicts = {e["name"]: e["type"] for e in journal if e["type"] in ("stage_kept", "stage_reverted")}
    assert {e["name"] for e in injected} == set(verdicts)
    for e in injected:
        calls = sum(p["calls"].get(e["name"], 0) for p in journal if p["type"] == "pipeline_pass")
        assert calls >= 5, f"{e['name']} was injected but called {calls} times"
    out = result.stdout
    assert "rubric scores" in out and "score trace" in out and "Level 2" in out and "best article1" in out
    assert "not an LLM" in out or "not a language model" in out


def test_provider_openai_once_verbatim_goes_through_the_real_client(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        result = cli("--provider", "openai", "once", "--article", "article1", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert {"AnalysisOut", "HypothesesOut", "PlanOut", "AssessmentOut", "SectionRevision", "JudgeScores"} <= set(fake.requests)
    journal = events(only_run_dir(tmp_path))
    calls = [e for e in journal if e["type"] == "llm_call"]
    assert calls and {c["provider"] for c in calls} == {"openai"}
    assert all(c["prompt_tokens"] == 100 and c["completion_tokens"] == 20 for c in calls)
    assert "not an LLM" not in result.stdout


def test_provider_openai_full_run_exercises_every_level_through_http(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        result = cli("--provider", "openai", "run", "--articles", "article1", "--max-inner", "5", "--max-outer", "4",
                     cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert {"OuterPatch", "StageDesign", "JudgeScores", "SectionRevision"} <= set(fake.requests)
    journal = events(only_run_dir(tmp_path))
    assert {c["level"] for c in journal if c["type"] == "llm_call"} == {"inner", "outer", "mechanism", "judge"}
    assert any(e["type"] == "stage_injected" for e in journal)


def test_judge_provider_is_separate_from_the_inner_provider(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        result = cli("--judge-provider", "openai", "once", "--article", "article1", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert set(fake.requests) == {"JudgeScores"}
    journal = events(only_run_dir(tmp_path))
    providers = {(c["level"], c["provider"]) for c in journal if c["type"] == "llm_call"}
    assert ("judge", "openai") in providers and ("inner", "offline") in providers


@pytest.mark.parametrize("args, message", [
    (("run", "--articles", "no_such_article"), "unknown article 'no_such_article'"),
    (("--provider", "opnai", "once", "--article", "article1"), "did you mean 'openai'"),
    (("--provider", "openai", "once", "--article", "article1"), "OPENAI_API_KEY is not set"),
    (("--judge-provider", "anthropic", "once", "--article", "article1"), "ANTHROPIC_API_KEY is not set"),
    (("run", "--articles", "article1", "--levels", "2"), "--levels"),
    (("run", "--articles", "article1", "--max-inner", "0"), "max_inner"),
    (("run", "--articles", "article1,no/such/file.md"), "unknown article"),
    (("resume", "no/such/run"), "not a run directory"),
    (("report", "no/such/run"), "not a run directory"),
])
def test_user_errors_are_one_line_exit_2_and_leave_no_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    args: tuple, message: str) -> None:
    from typer.testing import CliRunner

    from domains.article_opt.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_user_error_in_a_real_process_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    result = cli("--provider", "openai", "run", "--articles", "article1", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "OPENAI_API_KEY" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_report_prints_the_summary_of_a_finished_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    assert cli("--run-dir", str(run_dir), "run", "--articles", "article2", "--max-inner", "2", "--max-outer", "1",
               cwd=tmp_path).returncode == 0
    (run_dir / "REPORT.md").unlink()
    result = cli("report", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rubric scores" in result.stdout and (run_dir / "REPORT.md").is_file()
    assert "## Diff: article2" in (run_dir / "REPORT.md").read_text()
