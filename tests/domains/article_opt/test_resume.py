"""Resume after an interruption or a kill: no iteration lost, none run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.state import RunDir
from domains.article_opt.offline import stages as offline_stages
from domains.article_opt.session import ArticleSession

ROOT = Path(__file__).resolve().parents[3]


def _check_complete(run_dir: Path, *, articles: int, max_inner: int, max_outer: int) -> list[dict[str, Any]]:
    run = RunDir.open(run_dir)
    try:
        trials = [e for e in run.journal.events("trial") if e["loop"].startswith("inner.")]
        per_loop = Counter(e["loop"] for e in trials)
        assert len(per_loop) == articles
        for loop, n in per_loop.items():
            iterations = [e["record"]["iteration"] for e in trials if e["loop"] == loop]
            assert iterations == list(range(n)), f"{loop}: iterations must be dense and unique"
            assert n == 1 + max_inner * max_outer
        assert run.journal.last("run_finished") is not None
        return trials
    finally:
        run.close()


def test_resume_after_an_interrupt_reexecutes_the_journaled_candidate_once(make_session, swap_handler, tmp_path) -> None:
    calls = {"n": 0}

    def interrupting(request: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of an iteration's execution
        return offline_stages.revision(request)

    swap_handler("article.revision", interrupting)
    session = make_session(max_inner=3, max_outer=2, levels=("1", "1.5", "2"), run_dir=tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        session.run()
    session.close()
    journal_before = [json.loads(line) for line in (tmp_path / "r" / "journal.jsonl").read_text().splitlines()]
    stopped = [e for e in journal_before if e["type"] == "stopped"]
    assert stopped and stopped[0]["loop"] == "inner.article1"
    interrupted = stopped[0]["iteration"]

    swap_handler("article.revision", offline_stages.revision)
    resumed = ArticleSession.resume(tmp_path / "r")
    resumed.run()
    resumed.close()
    _check_complete(tmp_path / "r", articles=1, max_inner=3, max_outer=2)
    run = RunDir.open(tmp_path / "r")
    try:
        passes = [e["phase"] for e in run.journal.events("pipeline_pass", loop="inner.article1", iteration=interrupted)]
        assert passes.count("propose") == 1  # the journaled candidate was not proposed again ...
        assert passes.count("execute") == 1  # ... only executed again (the cut-short execution left no pass)
        proposals = [e["proposal"] for e in run.journal.events("proposal", loop="inner.article1", iteration=interrupted)]
        assert all(p == proposals[0] for p in proposals)
    finally:
        run.close()


@pytest.mark.parametrize("kill_after", [4])
def test_resume_after_sigkill_of_the_cli(tmp_path: Path, kill_after: int) -> None:
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "domains.article_opt.cli", "--run-dir", str(run_dir), "run",
               "--articles", "article1,article3", "--max-inner", "3", "--max-outer", "3"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    journal = run_dir / "journal.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count('"type":"trial"') >= kill_after:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert '"type":"run_finished"' not in journal.read_text()

    resumed = subprocess.run([sys.executable, "-m", "domains.article_opt.cli", "resume", str(run_dir)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _check_complete(run_dir, articles=2, max_inner=3, max_outer=3)
    assert (run_dir / "best" / "article1.md").is_file() and (run_dir / "best" / "article3.md").is_file()


def test_a_run_stopped_by_its_call_budget_resumes_with_a_larger_one_and_finishes(make_session, tmp_path) -> None:
    session = make_session(max_inner=2, max_outer=2, levels=("1", "1.5"), max_calls=6, run_dir=tmp_path / "r")
    summary = session.run()
    assert not summary["complete"] and "budget" in summary["stopped"]
    session.close()
    resumed = ArticleSession.resume(tmp_path / "r", {"max_calls": 10_000})
    try:
        finished = resumed.run()
        assert finished["complete"] and finished["stopped"] is None
        (changed,) = resumed.rundir.journal.events("settings_changed")
        assert changed["changes"] == {"max_calls": 10_000} and changed["previous"] == {"max_calls": 6}
        assert all(len(ctl.records(c)) == 2 for ctl in resumed.inner.values() for c in (0, 1))
    finally:
        resumed.close()
