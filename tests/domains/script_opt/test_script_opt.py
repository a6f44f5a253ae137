"""script_opt: any script that prints a metric, through the Domain protocol, all three levels.

The target is a ten-line script whose ``loss`` depends on three constants; a trial takes a few tens
of milliseconds, the researcher is the offline stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.records import Status, TrialRecord
from domains.script_opt.cli import app
from domains.script_opt.session import ScriptSession, make_settings

REPO = Path(__file__).resolve().parents[3]
SCRIPT = '''import os

X = 3.0  # the main knob
Y = 2  # an integer knob
FLAG = False  # a switch
NAME = "not a number: never edited"

seed = int(os.environ.get("BILEVEL_SEED", "0"))
loss = (X - 1.2) ** 2 + 0.1 * (Y - 5) ** 2 + (0.0 if FLAG else 0.3)
print(f"seed: {seed}")
print(f"loss: {loss:.6f}")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "fn.py").write_text(SCRIPT)
    return path


def records(session, loop: str = "inner") -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in session.rundir.journal.events("trial", loop=loop)]


def run(project: Path, run_dir: Path, **values) -> tuple[ScriptSession, dict]:
    settings = make_settings(target_dir=str(project), cmd="python fn.py", metric="loss", **values)
    session = ScriptSession.start(settings, run_dir)
    try:
        return session, session.run()
    finally:
        session.close()


@pytest.fixture(scope="module")
def three_levels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    project = tmp / "project"
    project.mkdir()
    (project / "fn.py").write_text(SCRIPT)
    session, summary = run(project, tmp / "run", inner_budget=3, outer_cycles=3, seed=0)
    return session, summary, project


def test_script_opt_runs_every_level_and_improves_the_metric(three_levels):
    session, summary, project = three_levels
    assert summary["complete"] and summary["stopped"] is None
    assert summary["best"] < summary["baseline"] == pytest.approx(3.24 + 0.9 + 0.3)
    inner = records(session)
    assert [r.iteration for r in inner] == list(range(1 + 3 * 3))
    assert set(session.domain.constants) == {"X", "Y", "FLAG"}  # the string constant is not a knob
    best = (session.rundir.path / "best_fn.py").read_text()
    assert best == session.rundir.abs(session.inner.incumbent).read_text() and best != SCRIPT
    assert (project / "fn.py").read_text() == SCRIPT, "the user's script was written"


def test_script_opt_level_1_5_patches_are_scored_by_the_cycle_they_govern(three_levels):
    session, _, _ = three_levels
    journal = session.rundir.journal
    patches = [e["cycle"] for e in journal.events() if e["type"] in ("config", "config_rejected")]
    verdicts = list(journal.events("level15_verdict"))
    assert patches == [0, 1]
    applied = {e["cycle"] for e in journal.events("config")}
    assert [v["cycle"] for v in verdicts] == sorted(applied) and all(v["governed"] == v["cycle"] + 1 for v in verdicts)
    for verdict in verdicts:
        assert verdict["kept"] == (verdict["gain"] > verdict["parent_gain"])
        assert verdict["kept"] or "restored" in verdict
    # the patch reached the proposer: later proposals obey its frozen constants
    for event in journal.events("config"):
        frozen = set(event["config"]["frozen_params"])
        for record in records(session):
            if record.cycle == event["cycle"] + 1 and record.proposal and not record.proposal.is_baseline:
                assert not frozen & set(record.proposal.changes)


def test_script_opt_level_2_attaches_a_generated_mechanism_whose_hooks_run(three_levels):
    session, summary, _ = three_levels
    designs = records(session, "mechanism")[1:]
    assert [d.cycle for d in designs] == [1, 2]
    inner = records(session)
    for design in designs:
        assert design.status in (Status.KEEP, Status.DISCARD), design.error
        assert design.proposal.region.startswith("template:") and design.info["worker_pid"]
        name = design.info["mechanism"]
        calls = [sum(n for hook, n in r.hook_calls.get(name, {}).items() if hook != "observe")
                 for r in inner if r.cycle == design.cycle]
        # a paired trial: the design steers one iteration of the first pair, its parent set the other
        assert len(calls) == 3 and (calls[0] > 0) != (calls[1] > 0), (name, calls)
        assert design.metrics["gain"] == design.metrics["design_gain"]
    assert [m["cycle"] for m in summary["mechanisms"]] == [1, 2]


def test_script_opt_resume_of_a_finished_run_runs_nothing(three_levels):
    session, _, _ = three_levels
    before = len(records(session))
    resumed = ScriptSession.resume(session.rundir.path)
    try:
        assert resumed.run()["complete"]
    finally:
        resumed.close()
    assert len(records(resumed)) == before


def test_a_metric_regex_reads_the_metric_from_free_text(project: Path, tmp_path: Path):
    (project / "fn.py").write_text(SCRIPT.replace('print(f"loss: {loss:.6f}")', 'print(f"final loss was {loss:.6f}!")'))
    session, summary = run(project, tmp_path / "run", metric_regex=r"final loss was ([0-9.]+)", levels=("1",),
                           inner_budget=2, outer_cycles=1)
    assert summary["baseline"] == pytest.approx(4.44)
    assert summary["counts"]["crash"] == 0


def test_params_limit_the_search_to_the_named_constants(project: Path, tmp_path: Path):
    session, _ = run(project, tmp_path / "run", params=("Y",), levels=("1",), inner_budget=3, outer_cycles=1)
    changed = {k for r in records(session)[1:] if r.proposal for k in r.proposal.changes}
    assert changed == {"Y"}


def test_two_runs_with_different_seeds_give_the_script_different_seeds(project: Path, tmp_path: Path):
    seen = []
    for seed in (3, 4):
        session, _ = run(project, tmp_path / f"s{seed}", seed=seed, levels=("1",), inner_budget=0, outer_cycles=1)
        seen.append((session.rundir.path / "trials" / "inner" / "00000" / "run.log").read_text().split()[1])
    assert seen == ["3", "4"]


@pytest.mark.parametrize(("args", "message"), [
    (["run"], "--target-dir is required"),
    (["--target-dir", "{project}", "run"], "--cmd is required"),
    (["--target-dir", "{project}", "--cmd", "bash run.sh", "once"], "--file"),
    (["--target-dir", "{project}", "--cmd", "python fn.py", "--params", "X,NOPE", "once"], "NOPE"),
    (["--target-dir", "{project}", "--cmd", "python fn.py", "--metric-regex", "(", "once"], "--metric-regex"),
])
def test_user_mistakes_are_one_line_and_exit_2(project: Path, tmp_path: Path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [a.replace("{project}", str(project)) for a in args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_cli_runs_all_levels_with_options_after_the_command(project: Path, tmp_path: Path):
    run_dir = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "domains.script_opt.cli", "run", "--inner-budget", "2", "--outer-cycles", "2",
         "--target-dir", str(project), "--cmd", "python fn.py", "--metric", "loss", "--run-dir", str(run_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "L2" in result.stdout and "L1.5" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] and summary["best"] <= summary["baseline"]


def test_every_event_of_a_three_level_run_has_a_typed_model(three_levels):
    from core.events import EVENTS

    session, _, _ = three_levels
    assert {e["type"] for e in session.rundir.journal.events()} <= set(EVENTS)


def test_report_writes_the_summary_and_the_diff_of_the_best_script(three_levels):
    session, summary, _ = three_levels
    (session.rundir.path / "REPORT.md").unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["report", str(session.rundir.path)])
    assert result.exit_code == 0, result.stderr
    report = (session.rundir.path / "REPORT.md").read_text()
    assert f"best {summary['best']}" in report and "## Level 1.5 verdicts" in report and "```diff" in report
