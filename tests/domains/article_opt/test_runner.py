"""Level 1: a revision is kept only when the overall score rises; otherwise the article is restored."""

from __future__ import annotations

from typing import Any

from core.records import Status
from domains.article_opt.evaluator import RUBRIC
from domains.article_opt.lessons import extract, parse
from domains.article_opt.offline import stages as offline_stages


def _judge_by_marks(request: Any) -> dict[str, Any]:
    """Overall = 5 + (number of 'Better.' marks) - (number of 'Worse.' marks), on every dimension."""
    text = request.context["article"]
    score = 5.0 + text.count("Better.") - text.count("Worse.")
    return {d: {"score": max(0.0, min(10.0, score)), "reason": "scripted"} for d in RUBRIC.names}


def _scripted_revision(marks: list[str]) -> Any:
    def revise(request: Any) -> dict[str, Any]:
        if request.context.get("retry_error") is None:
            revise.calls += 1
        mark = marks[min(revise.calls - 1, len(marks) - 1)]
        return {"text": request.context["text"].rstrip("\n") + f" {mark}\n", "changes": [mark]}
    revise.calls = 0
    return revise


def _one_section_plan(request: Any) -> dict[str, Any]:
    out = offline_stages.planning(request)
    return {**out, "edits": out["edits"][:1]}


def test_keep_only_on_improvement_and_restore_the_working_article_otherwise(make_session, swap_handler) -> None:
    swap_handler("article.judge", _judge_by_marks)
    swap_handler("article.planning", _one_section_plan)
    swap_handler("article.revision", _scripted_revision(["Better.", "Worse.", "Same.", "Better."]))
    session = make_session(max_inner=4, max_outer=1, levels=("1",))
    states: list[str] = []
    session.on_record = lambda loop, r: states.append(
        (session.rundir.path / "working" / "article1.md").read_text() if r.iteration else "")
    session.run()
    history = session.inner["article1"].history
    assert [r.status for r in history] == [Status.KEEP, Status.KEEP, Status.DISCARD, Status.DISCARD, Status.KEEP]
    assert [r.score for r in history] == [5.0, 6.0, 5.0, 6.0, 7.0]
    kept_1 = session.rundir.abs(history[1].artifact).read_text()
    # after the worse and the equal revision, the working article is the last kept one
    assert states[2] == kept_1 and states[3] == kept_1
    # and the next revision started from it, not from the discarded text
    final = session.rundir.abs(history[4].artifact).read_text()
    assert "Worse." not in final and "Same." not in final and final.count("Better.") == 2
    assert history[4].parent_artifact == history[1].artifact


def test_lessons_name_each_planned_edit_and_its_outcome(make_session, swap_handler) -> None:
    swap_handler("article.judge", _judge_by_marks)
    swap_handler("article.planning", _one_section_plan)
    swap_handler("article.revision", _scripted_revision(["Better.", "Worse."]))
    session = make_session(max_inner=2, max_outer=1, levels=("1",))
    session.run()
    lines = extract(tuple(session.inner["article1"].history))
    parsed = [parse(line) for line in lines]
    assert all(p is not None for p in parsed)
    assert {p.status for p in parsed} == {"keep", "discard"}
    assert any("overall 6.00 -> 5.00" in line for line in lines)


def test_lessons_reach_the_proposal_stages(make_session, swap_handler) -> None:
    seen: list[list[str]] = []

    def spy(request: Any) -> dict[str, Any]:
        seen.append(list(request.context["lessons"]))
        return offline_stages.hypotheses(request)

    swap_handler("article.hypotheses", spy)
    session = make_session(max_inner=3, max_outer=1, levels=("1",))
    session.run()
    assert seen[0] == [] and seen[-1] and all(parse(line) for line in seen[-1])
