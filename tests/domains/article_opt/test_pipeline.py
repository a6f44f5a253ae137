"""The pipeline: validation, one retry, failure as a crash, section-by-section revision, injection."""

from __future__ import annotations

from typing import Any

import pytest

from core.records import Status
from domains.article_opt.articles import ARTICLES_DIR, split_sections
from domains.article_opt.offline import stages as offline_stages
from domains.article_opt.pipeline import Findings, Pipeline, Stage, StageContext, StageFailure, build_pipeline
from domains.article_opt.pipeline.validate import InvalidOutput, check_revision
from domains.article_opt.runner import stage_context
from domains.article_opt.session import ArticleSession

from .conftest import SHORT_ARTICLE


def _drop_heading(request: Any) -> dict[str, Any]:
    text = request.context["text"]
    return {"text": "\n".join(line for line in text.splitlines() if not line.startswith("## ")) + "\n", "changes": []}


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("revised, message", [
    ("", "empty"),
    (SHORT_ARTICLE.replace("## Later\n", ""), "dropped or renamed headings"),
    (SHORT_ARTICLE.replace("## Later", "## Afterwards"), "dropped or renamed headings"),
    (SHORT_ARTICLE[: len(SHORT_ARTICLE) // 3], "dropped or renamed headings"),
    (SHORT_ARTICLE.split("## Conclusion")[0] + "## Conclusion\n\nTesting is", "stops mid-sentence"),
])
def test_revision_check_rejects_empty_lost_headings_truncation(revised: str, message: str) -> None:
    with pytest.raises(InvalidOutput, match=message):
        check_revision(SHORT_ARTICLE, revised)


def test_revision_check_rejects_reordered_headings_and_a_truncated_body() -> None:
    parts = split_sections(SHORT_ARTICLE)
    swapped = parts[0].text + parts[2].text + parts[1].text + parts[3].text
    with pytest.raises(InvalidOutput, match="reordered"):
        check_revision(SHORT_ARTICLE, swapped)
    skeleton = "\n\n".join(line for line in SHORT_ARTICLE.splitlines() if line.startswith("#")) + "\n\nEnd."
    with pytest.raises(InvalidOutput, match="truncated"):
        check_revision(SHORT_ARTICLE, skeleton)


# -- retry and failure ------------------------------------------------------------------------------
def test_invalid_revision_twice_crashes_the_iteration_and_leaves_the_article_unchanged(make_session, swap_handler) -> None:
    swap_handler("article.revision", _drop_heading)
    session = make_session(max_inner=1, max_outer=1, levels=("1",))
    session.run()
    ctl = session.inner["article1"]
    baseline, record = ctl.history
    assert record.status is Status.CRASH
    assert "revision" in record.error and "heading" in record.error
    assert record.info["stage"] == "revision"
    assert record.artifact is None and ctl.incumbent == baseline.artifact
    original = (session.rundir.path / "originals" / "article1.md").read_text()
    assert (session.rundir.path / "working" / "article1.md").read_text() == original
    failures = list(session.rundir.journal.events("stage_failed", stage="revision"))
    assert [f["attempt"] for f in failures] == [1, 2]


def test_a_stage_that_fails_once_is_retried_with_the_error_and_the_iteration_goes_on(make_session, swap_handler) -> None:
    seen_errors: list[Any] = []

    def flaky(request: Any) -> dict[str, Any]:
        seen_errors.append(request.context.get("retry_error"))
        if len(seen_errors) == 1:
            return _drop_heading(request)
        return offline_stages.revision(request)

    swap_handler("article.revision", flaky)
    session = make_session(max_inner=1, max_outer=1, levels=("1",))
    session.run()
    record = session.inner["article1"].history[-1]
    assert record.status in (Status.KEEP, Status.DISCARD)
    assert seen_errors[0] is None and "heading" in seen_errors[1]
    (failure,) = session.rundir.journal.events("stage_failed")
    assert failure["attempt"] == 1 and failure["loop"] == "inner.article1"


def test_invalid_structured_output_twice_crashes_in_the_propose_phase(make_session, swap_handler) -> None:
    calls: list[int] = []

    def bad_plan(request: Any) -> dict[str, Any]:
        calls.append(1)
        return {"edits": [{"section": "No such section", "action": "remove_hedges", "dimension": "clarity",
                           "instruction": "x"}]}

    swap_handler("article.planning", bad_plan)
    session = make_session(max_inner=1, max_outer=1, levels=("1",))
    session.run()
    record = session.inner["article1"].history[-1]
    assert record.status is Status.CRASH and "planning" in record.error and "do not exist" in record.error
    assert len(calls) == 2  # one try, one retry with the error
    assert (session.rundir.path / "working" / "article1.md").read_text() == \
        (session.rundir.path / "originals" / "article1.md").read_text()


# -- section-by-section revision ----------------------------------------------------------------------
def test_long_articles_are_revised_per_section_and_untouched_sections_stay_verbatim(swap_handler) -> None:
    from core.llm_client import make_client

    article = split_sections((ARTICLES_DIR / "article1.md").read_text(encoding="utf-8"))
    text = "".join(s.text for s in article)
    revised_headings: list[str] = []

    def spy(request: Any) -> dict[str, Any]:
        revised_headings.append(request.context["heading"])
        return offline_stages.revision(request)

    swap_handler("article.revision", spy)
    pipeline = build_pipeline(make_client("offline"))
    plan = {"edits": [{"section": "Choosing what to measure", "action": "remove_hedges", "dimension": "clarity",
                       "instruction": "cut the hedges"}]}
    result = pipeline.run(stage_context(text), phase="execute", outputs={"planning": plan})
    assert revised_headings == ["Choosing what to measure"]
    new = {s.heading: s.text for s in split_sections(result.outputs["revision"]["text"])}
    for section in article:
        if section.heading == "Choosing what to measure":
            assert new[section.heading] != section.text
        else:
            assert new[section.heading] == section.text


# -- injection and ejection ---------------------------------------------------------------------------
class Noting(Stage):
    name = "noting"

    def run(self, ctx: StageContext) -> Findings:
        return Findings(summary=f"saw {len(ctx.sections)} sections")


class Broken(Stage):
    name = "broken"

    def run(self, ctx: StageContext) -> Findings:
        raise RuntimeError("boom")


def test_inject_stage_places_it_after_the_named_stage_and_remove_stage_takes_it_out() -> None:
    from core.llm_client import make_client

    pipeline = build_pipeline(make_client("offline"))
    pipeline.inject_stage(Noting(), after="planning")
    assert pipeline.names == ["analysis", "hypotheses", "planning", "noting", "assessment", "revision"]
    with pytest.raises(ValueError, match="already"):
        pipeline.inject_stage(Noting(), after="analysis")
    with pytest.raises(ValueError, match="cannot inject after"):
        pipeline.inject_stage(Broken(), after="nowhere")
    with pytest.raises(ValueError, match="shipped"):
        pipeline.remove_stage("analysis")
    pipeline.remove_stage("noting")
    assert "noting" not in pipeline.names


def test_a_generated_stage_that_raises_is_ejected_and_the_pass_goes_on() -> None:
    events: list[dict[str, Any]] = []
    pipeline = Pipeline([Noting(), ], on_event=events.append)
    pipeline.inject_stage(Broken(), after="noting")
    pipeline.slots[-1].origin = "generated"
    result = pipeline.run(StageContext(article=SHORT_ARTICLE))
    assert "noting" in result.outputs and "broken" not in result.outputs
    assert pipeline.names == ["noting"]
    assert [e["type"] for e in events] == ["stage_failed", "stage_ejected"]
    assert "boom" in events[-1]["reason"]


def test_a_shipped_stage_that_raises_twice_raises_stage_failure() -> None:
    class Shipped(Broken):
        name = "shipped_broken"

    pipeline = Pipeline([Shipped()])
    with pytest.raises(StageFailure) as info:
        pipeline.run(StageContext(article=SHORT_ARTICLE))
    assert info.value.stage == "shipped_broken" and pipeline.calls["shipped_broken"] == 2


def test_session_refuses_to_start_without_leaving_a_run_dir(tmp_path) -> None:
    from core.errors import UserError
    from domains.article_opt.session import make_settings

    with pytest.raises(UserError, match="unknown article"):
        ArticleSession.start(make_settings(articles=("no_such_article",)), tmp_path / "r")
    assert not (tmp_path / "r").exists()
