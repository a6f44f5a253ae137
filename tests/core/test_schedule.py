"""The one bilevel schedule (core.schedule.BilevelRun) through its smallest domain, script_opt:
client settings, resume overrides, the cycle gain both outer levels are scored by, and a Level-2
design that fails to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import domains.script_opt.session as script_session
from core.errors import ConfigError
from core.level2 import BeatsParent, cycle_gain
from core.records import Proposal, Status, TrialRecord
from domains.script_opt.session import ScriptSession, make_settings

SCRIPT = "X = 3.0  # the knob\nprint(f'loss: {(X - 1.2) ** 2:.6f}')\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "fn.py").write_text(SCRIPT)
    return path


def settings(project: Path, **values: Any):
    return make_settings(target_dir=str(project), cmd="python fn.py", metric="loss", **values)


def test_request_timeout_reaches_every_client_and_none_leaves_the_provider_default(project, tmp_path, monkeypatch):
    seen: list[dict[str, Any]] = []
    real = script_session.make_client

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(script_session, "make_client", spy)
    ScriptSession.start(settings(project, request_timeout_s=123.0), tmp_path / "a").close()
    assert {k["level"] for k in seen} == {"inner", "outer", "mechanism"}
    assert all(k["timeout_s"] == 123.0 for k in seen)
    seen.clear()
    ScriptSession.start(settings(project), tmp_path / "b").close()
    assert seen and all("timeout_s" not in k for k in seen)


def test_resume_may_raise_limits_and_journals_the_change_but_not_reshape_the_search(project, tmp_path):
    ScriptSession.start(settings(project, max_calls=1), tmp_path / "run").close()
    session = ScriptSession.resume(tmp_path / "run", {"max_calls": 50, "max_cost_usd": None})
    try:
        assert session.settings.max_calls == 50
        (changed,) = session.rundir.journal.events("settings_changed")
        assert changed["changes"] == {"max_calls": 50} and changed["previous"] == {"max_calls": 1}
    finally:
        session.close()
    with pytest.raises(ConfigError, match="resume cannot change seed"):
        ScriptSession.resume(tmp_path / "run", {"seed": 3})


def _record(loop: str, iteration: int, cycle: int, before: float, after: float) -> TrialRecord:
    return TrialRecord(loop=loop, iteration=iteration, cycle=cycle, status=Status.DISCARD, proposal=Proposal(),
                       best_before=before, best_after=after)


class _Loop:
    def __init__(self, direction: str, records: list[TrialRecord]) -> None:
        self.direction = direction
        self._records = records

    def records(self, cycle: int) -> list[TrialRecord]:
        return [r for r in self._records if r.cycle == cycle]


def test_cycle_gain_is_per_iteration_signed_by_direction_and_averaged_over_loops():
    down = _Loop("minimize", [_record("a", 1, 0, 1.0, 0.9), _record("a", 2, 0, 0.9, 0.8)])
    up = _Loop("maximize", [_record("b", 1, 0, 5.0, 5.0), _record("b", 2, 0, 5.0, 5.4)])
    assert cycle_gain([down], 0) == pytest.approx(0.1)
    assert cycle_gain([up], 0) == pytest.approx(0.2)
    assert cycle_gain([down, up], 0) == pytest.approx(0.15)
    assert cycle_gain([down, up], 1) is None
    assert BeatsParent().decide(0.01, None, None) and not BeatsParent().decide(0.0, None, None)


def test_a_design_that_fails_to_load_is_a_crash_and_its_cycle_still_runs(project, tmp_path, monkeypatch):
    from domains.script_opt import levels

    real = levels.MechanismDesigner.propose

    def broken(self, ctx):
        proposal = real(self, ctx)
        return proposal.model_copy(update={"payload": "import os\n" + proposal.payload})

    monkeypatch.setattr(levels.MechanismDesigner, "propose", broken)
    session = ScriptSession.start(settings(project, inner_budget=2, outer_cycles=2, levels=("1", "2")), tmp_path / "r")
    try:
        summary = session.run()
    finally:
        session.close()
    design = session.level2.history[-1]
    assert design.status is Status.CRASH and "load failed at policy" in design.error
    assert summary["complete"] and len(session.inner.records(1)) == 2


def test_resuming_another_domains_run_is_a_one_line_error(project, tmp_path):
    from core.errors import UserError
    from domains.article_opt.session import ArticleSession

    ScriptSession.start(settings(project), tmp_path / "run").close()
    with pytest.raises(UserError, match="does not hold a run of article_opt") as info:
        ArticleSession.resume(tmp_path / "run")
    assert "\n" not in str(info.value)


def test_level_2_puts_the_design_on_trial_ahead_of_earlier_keeps_and_resume_restores_that_order(
        project, tmp_path, monkeypatch):
    # every design kept, so cycle 2's design runs beside cycle 1's: it must be first in line (a first-
    # answer hook reaches it before the earlier keep), and a resumed run must stand the same way
    monkeypatch.setattr(BeatsParent, "decide", lambda self, score, incumbent, ctx: True)
    monkeypatch.setattr(BeatsParent, "judge", lambda self, evidence, ctx: ("keep", {"rule": "test: keep every design"}))
    run = tmp_path / "r"
    session = ScriptSession.start(settings(project, inner_budget=2, outer_cycles=3, levels=("1", "2")), run)
    try:
        session.run()
        kept = [r.info["mechanism"] for r in session.level2.history if r.status is Status.KEEP and r.info.get("mechanism")]
        order = [m.name for m in session.inner.mechanisms if m.origin == "generated"]
    finally:
        session.close()
    assert len(kept) == 2 and order == kept[::-1], (kept, order)  # the later design first
    again = ScriptSession.resume(run)
    try:
        assert [m.name for m in again.inner.mechanisms if m.origin == "generated"] == order
    finally:
        again.close()


@pytest.mark.parametrize(("decision", "budget", "retests"), [("noise-aware", 4, 1), ("strict", 4, 0), ("noise-aware", 1, 0)])
def test_level_2_retests_an_inconclusive_paired_trial_only_under_the_noise_aware_rule(project, tmp_path, decision,
                                                                                         budget, retests):
    # a one-iteration cycle cannot be split into arms: no paired trial, no retest
    session = ScriptSession.start(settings(project, decision=decision, inner_budget=budget, outer_cycles=3,
                                           levels=("1", "2")), tmp_path / "r")
    try:
        assert session.level2.decider.max_retests == retests
        assert session.level2.cycles == 3  # a retest takes the next cycle, while the run has one
    finally:
        session.close()


class _Clock:
    """``time`` for core.schedule and core.inner_loop: monotonic() reads ``now`` (the wall-time limit
    is then a matter of records, not of the machine's speed)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


# the limit passes after `cut_after` iterations of cycle 0 (Level 2's baseline: the parent set's
# cycle) or of cycle 1 (the first design's trial)
@pytest.mark.parametrize(("cycle", "cut_after"), [(0, 2), (1, 1), (1, 3)])
def test_a_level_2_trial_cut_short_by_the_wall_time_limit_is_judged_only_after_resume_finishes_its_cycle(
        project, tmp_path, monkeypatch, cycle, cut_after):
    import core.inner_loop
    import core.schedule

    clock = _Clock()
    monkeypatch.setattr(core.schedule, "time", clock)
    monkeypatch.setattr(core.inner_loop, "time", clock)
    run = tmp_path / "r"
    session = ScriptSession.start(settings(project, inner_budget=4, outer_cycles=3, levels=("1", "2"), wall_time_s=100.0),
                                  run)

    def expire(loop: str, record: TrialRecord) -> None:
        if loop != "mechanism" and record.cycle == cycle and len(session.inner.records(cycle)) == cut_after:
            clock.now = 1_000.0  # past the limit: the inner loop stops before its next iteration

    session.on_record = expire
    try:
        summary = session.run()
        judged = [r for r in session.level2.history if r.cycle == cycle]
    finally:
        session.close()
    assert summary["stopped"] == "wall-time limit reached" and not summary["complete"]
    assert judged == []  # not judged on the part of the cycle that ran
    clock.now = 0.0
    again = ScriptSession.resume(run, {"wall_time_s": 100.0})
    try:
        summary = again.run()
        (record,) = [r for r in again.level2.history if r.cycle == cycle]
    finally:
        again.close()
    assert summary["complete"]
    assert len(again.inner.records(cycle)) == 4  # the cycle finished under the same design, nothing run twice
    if cycle == 0:  # the parent set's cycle: its gain is the whole cycle's
        assert record.proposal.is_baseline and record.metrics["gain"] == cycle_gain([again.inner], 0)
    elif record.status is not Status.CRASH:
        assert record.metrics["design_iterations"] + record.metrics["parent_iterations"] == 4


@pytest.mark.parametrize("settings_text", [None, "not json", '{"seed": "x"}'])
def test_a_refused_resume_or_report_leaves_the_folder_as_it_was(tmp_path, settings_text):
    # a folder with a journal (its last line torn) that is not a script_opt run: resume and report
    # refuse it in one line, and neither trims the journal nor leaves a lock file behind
    from typer.testing import CliRunner

    from core.errors import BilevelError
    from domains.script_opt.cli import app

    folder = tmp_path / "not-a-run"
    folder.mkdir()
    journal = b'{"a": 1}\n{"b": 2}\nhello world'
    (folder / "journal.jsonl").write_bytes(journal)
    if settings_text is not None:
        (folder / "settings.json").write_text(settings_text)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(BilevelError) as info:
        ScriptSession.resume(folder)
    assert "\n" not in str(info.value)
    apps = [app]
    if settings_text is None:  # no settings.json: no domain's run, whichever domain is asked
        from domains.article_opt.cli import app as article_app
        from domains.train_opt.cli import app as train_app

        apps += [train_app, article_app]
    for cli in apps:
        for args in (["resume", str(folder)], ["report", str(folder)]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 2, (args, result.output)
    assert (folder / "journal.jsonl").read_bytes() == journal
    assert sorted(p.name for p in folder.iterdir()) == before
