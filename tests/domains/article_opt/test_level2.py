"""Level 2: generated stages are loaded through the staged hot-loader, injected, called, and kept
only when their cycle beat the parent's; everything generated stays in the run directory."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import domains.article_opt as package
from core.errors import MechanismError
from core.level2 import BeatsParent, GainOverParent
from core.loader import MechanismLoader
from core.records import EvalInput, Status
from domains.article_opt.evaluator import RUBRIC
from domains.article_opt.mechanism_research import LOOP, STAGE_CONTRACT
from domains.article_opt.session import ArticleSession
from domains.article_opt.stage_templates import TEMPLATES
from domains.article_opt.stage_templates import render as render_template

MARKER_STAGE = textwrap.dedent('''
    """A test stage: asks the revision to add one marked sentence to the closing section."""
    from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext


    class MarkerStage(Stage):
        name = "marker"

        def run(self, ctx: StageContext) -> Findings:
            last = ctx.sections[-1]
            first = last.text.split("\\n", 2)[2].split(". ")[0]
            return Findings(items=[Finding(kind="objection", section=last.heading, quote=first,
                                           suggestion=f"MARKER {ctx.iteration} holds.")])
''')


def _design(source: str, name: str, after: str = "planning") -> Any:
    def design(request: Any) -> dict[str, Any]:
        return {"name": name, "after": after, "rationale": "test design", "source": source}
    return design


def _judge_markers(request: Any) -> dict[str, Any]:
    score = min(10.0, 4.0 + 0.5 * request.context["article"].count("MARKER"))
    return {d: {"score": score, "reason": "scripted"} for d in RUBRIC.names}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_offline_template_passes_the_policy_and_the_contract_check(tmp_path: Path, template: str) -> None:
    loaded = MechanismLoader(tmp_path, contract=STAGE_CONTRACT).load(render_template(template))
    assert loaded.name == TEMPLATES[template][0] and loaded.hooks_overridden == ("run",)
    assert loaded.path.startswith("mechanisms/")


def test_stage_contract_rejects_a_wrong_return_type_and_a_forbidden_import(tmp_path: Path) -> None:
    loader = MechanismLoader(tmp_path, contract=STAGE_CONTRACT)
    wrong = MARKER_STAGE.replace("return Findings(items=[", "return ([").replace(")])", ")], 1)")
    with pytest.raises(MechanismError) as info:
        loader.load(wrong)
    assert info.value.stage == "contract" and info.value.rule == "check-failed"
    with pytest.raises(MechanismError) as info:
        loader.load("import os\n" + MARKER_STAGE)
    assert info.value.stage == "policy" and "os" in str(info.value)
    with pytest.raises(MechanismError, match="exactly one Stage subclass"):
        loader.load("from domains.article_opt.pipeline.contract import Stage\n")


def test_generated_stage_is_injected_called_and_kept_when_its_cycle_beats_the_parent(make_session, swap_handler) -> None:
    swap_handler("article.design_stage", _design(MARKER_STAGE, "marker"))
    swap_handler("article.judge", _judge_markers)
    session = make_session(max_inner=2, max_outer=2, levels=("1", "2"))
    session.run()
    journal = session.rundir.journal
    (injected,) = journal.events("stage_injected")
    assert injected["name"] == "marker" and injected["cycle"] == 1
    assert injected["pipeline"].index("marker") == injected["pipeline"].index("planning") + 1
    assert (session.rundir.path / injected["path"]).is_file()
    calls = [e["calls"].get("marker", 0) for e in journal.events("pipeline_pass", cycle=1)]
    assert sum(calls) == 2  # once per iteration of the cycle
    assert all(e["calls"].get("marker", 0) == 0 for e in journal.events("pipeline_pass", cycle=0))
    record = session.level2.history[-1]
    assert record.status is Status.KEEP and record.metrics["stage_calls"] == 2
    assert record.metrics["gain"] > record.metrics["parent_gain"] == 0.0
    assert "marker" in session.pipeline.names and next(journal.events("stage_kept"))["name"] == "marker"
    best = session.rundir.abs(session.inner["article1"].incumbent).read_text()
    assert "MARKER" in best


def test_generated_stage_that_does_not_beat_the_parent_is_removed(make_session, swap_handler) -> None:
    flat = {d: {"score": 5.0, "reason": "flat"} for d in RUBRIC.names}
    swap_handler("article.design_stage", _design(MARKER_STAGE, "marker"))
    swap_handler("article.judge", lambda request: flat)
    session = make_session(max_inner=2, max_outer=2, levels=("1", "2"))
    session.run()
    record = session.level2.history[-1]
    assert record.status is Status.DISCARD and record.metrics["stage_calls"] == 2
    assert "marker" not in session.pipeline.names
    (reverted,) = session.rundir.journal.events("stage_reverted")
    assert reverted["name"] == "marker" and reverted["stage_calls"] == 2


def test_a_design_that_fails_the_policy_crashes_level2_but_the_cycle_still_runs(make_session, swap_handler) -> None:
    swap_handler("article.design_stage", _design("import subprocess\n" + MARKER_STAGE, "marker"))
    session = make_session(max_inner=2, max_outer=2, levels=("1", "2"))
    session.run()
    record = session.level2.history[-1]
    assert record.status is Status.CRASH and "policy" in record.error
    (failed,) = session.rundir.journal.events("stage_load_failed")
    assert failed["load_stage"] == "policy"
    assert len(session.inner["article1"].records(1)) == 2  # the inner loop went on with the parent pipeline
    assert session.pipeline.names == ["analysis", "hypotheses", "planning", "assessment", "revision"]


def test_a_generated_stage_that_raises_during_the_cycle_is_ejected_and_level2_records_a_crash(
        make_session, swap_handler) -> None:
    raising = MARKER_STAGE.replace("last = ctx.sections[-1]", "last = ctx.sections[-1]\n        if ctx.iteration:\n"
                                   "            raise RuntimeError('stage broke')")
    swap_handler("article.design_stage", _design(raising, "marker"))
    session = make_session(max_inner=2, max_outer=2, levels=("1", "2"))
    session.run()
    record = session.level2.history[-1]
    assert record.status is Status.CRASH and "ejected" in record.error and "stage broke" in record.error
    assert "marker" not in session.pipeline.names
    assert [r.status for r in session.inner["article1"].records(1)] != [Status.CRASH, Status.CRASH]


def test_generated_sources_live_only_in_the_run_directory(make_session) -> None:
    package_dir = Path(package.__file__).parent
    before = {p for p in package_dir.rglob("*") if p.is_file()}
    session = make_session(max_inner=1, max_outer=2, levels=("1", "2"))
    session.run()
    after = {p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert after <= before
    sources = list((session.rundir.path / "mechanisms").glob("*.py"))
    assert sources and all(len(p.stem) == 16 for p in sources)


def test_a_kept_stage_is_injected_again_on_resume(make_session, swap_handler, tmp_path: Path) -> None:
    swap_handler("article.design_stage", _design(MARKER_STAGE, "marker"))
    swap_handler("article.judge", _judge_markers)
    session = make_session(max_inner=1, max_outer=2, levels=("1", "2"), run_dir=tmp_path / "kept")
    session.run()
    session.close()
    resumed = ArticleSession.resume(tmp_path / "kept")
    try:
        assert "marker" in resumed.pipeline.names
    finally:
        resumed.close()


def test_gain_over_parent_scores_the_difference_and_keeps_only_a_positive_one() -> None:
    evaluation = GainOverParent().evaluate(EvalInput(metrics={"gain": 0.3, "parent_gain": 0.1}))
    assert evaluation.score == pytest.approx(0.2)
    assert BeatsParent().decide(0.2, None, None) and not BeatsParent().decide(0.0, 5.0, None)


def test_level2_runs_on_the_same_controller_with_the_library_tabu_list_attached(make_session) -> None:
    session = make_session(max_inner=1, max_outer=3, levels=("1", "2"))
    session.run()
    assert session.level2.loop == LOOP
    assert [m.name for m in session.level2.mechanisms] == ["tabu"]
    names = [r.proposal.region for r in session.level2.history if r.proposal and r.proposal.origin != "baseline"]
    assert len(names) == len(set(names)) == 2  # no design proposed twice
    assert any(r.hook_calls.get("tabu") for r in session.level2.history)


def test_every_event_of_an_all_levels_article_run_has_a_typed_model(make_session) -> None:
    from core.events import EVENTS

    session = make_session(max_inner=1, max_outer=2)
    session.run()
    assert {e["type"] for e in session.rundir.journal.events()} <= set(EVENTS)
