"""The judge sees the article and the rubric, nothing else: proven by type and by capture."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.records import EvalInput
from domains.article_opt.evaluator import RUBRIC, ArticleEvaluator, Judge, JudgeInput, JudgeScores
from domains.article_opt.evaluator.rubric import Rubric
from domains.article_opt.lessons import extract as extract_lessons
from domains.article_opt.offline.judge import judge_handler

FORBIDDEN = ("lesson", "guidance", "override", "stage", "output", "plan", "mechanism", "history", "feedback", "note")


def test_judge_input_type_has_only_article_and_rubric_fields() -> None:
    assert set(JudgeInput.model_fields) == {"article", "rubric"}
    assert JudgeInput.model_config["extra"] == "forbid"
    assert JudgeInput.model_config["frozen"] is True


def test_judge_input_rejects_lessons_guidance_and_stage_outputs() -> None:
    for field in ("lessons", "guidance", "stage_outputs", "overrides"):
        with pytest.raises(ValidationError):
            JudgeInput(article="x", rubric=RUBRIC, **{field: "keep answering objections"})


def test_no_field_reachable_from_the_judge_input_can_carry_search_state() -> None:
    def fields(model: type) -> set[str]:
        names = set(model.model_fields)
        for info in model.model_fields.values():
            inner = getattr(info.annotation, "__args__", (info.annotation,))
            for t in inner:
                if isinstance(t, type) and hasattr(t, "model_fields"):
                    names |= fields(t)
        return names

    reachable = fields(JudgeInput) | fields(Rubric)
    assert not [n for n in reachable for bad in FORBIDDEN if bad in n.lower()], reachable


def test_judge_reply_schema_has_no_overall_field_and_rejects_one() -> None:
    assert set(JudgeScores.model_fields) == set(RUBRIC.names)
    reply = {d: {"score": 5.0, "reason": ""} for d in RUBRIC.names}
    JudgeScores.model_validate(reply)
    with pytest.raises(ValidationError):
        JudgeScores.model_validate({**reply, "overall": 10.0})


class CapturingLLM:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def structured(self, *, purpose: str, schema: type, messages: list[dict[str, str]], context: dict[str, Any]) -> Any:
        self.calls.append({"purpose": purpose, "messages": messages, "context": context})
        return schema.model_validate({d: {"score": 4.0 + i, "reason": ""} for i, d in enumerate(RUBRIC.names)})


def test_overall_score_is_computed_in_code_from_the_dimension_scores() -> None:
    llm = CapturingLLM()
    evaluation = ArticleEvaluator(Judge(llm)).evaluate(EvalInput(artifact_text="# T\n\nText.\n", metrics={"x": 1.0}))
    assert evaluation.details == {d: 4.0 + i for i, d in enumerate(RUBRIC.names)}
    assert evaluation.score == RUBRIC.overall(evaluation.details) == pytest.approx(6.0)


def test_the_judge_request_is_built_from_article_and_rubric_only() -> None:
    llm = CapturingLLM()
    ArticleEvaluator(Judge(llm)).evaluate(EvalInput(artifact_text="# T\n\nThe essay.\n", metrics={"lessons": 3.0}))
    (call,) = llm.calls
    assert set(call["context"]) == {"article", "rubric"}
    assert "lessons" not in " ".join(m["content"] for m in call["messages"])


def test_a_whole_run_never_shows_lessons_or_overrides_to_the_judge(make_session, swap_handler) -> None:
    seen: list[dict[str, Any]] = []

    def spy(request: Any) -> dict[str, Any]:
        seen.append({"context": dict(request.context), "messages": request.messages})
        return judge_handler(request)

    swap_handler("article.judge", spy)
    session = make_session(max_inner=3, max_outer=2, levels=("1", "1.5"))
    session.run()
    journal = session.rundir.journal
    lessons = [line for ctl in session.inner.values() for line in extract_lessons(tuple(ctl.history))]
    overrides = [text for e in journal.events("outer_patch") for text in e["overrides"].values()]
    assert lessons and overrides, "the run must have produced lessons and outer overrides to test against"
    assert len(seen) == 1 + 3 * 2  # the baseline and every revision
    for call in seen:
        assert set(call["context"]) == {"article", "rubric"}
        text = " ".join(m["content"] for m in call["messages"])
        assert not any(line in text for line in lessons)
        assert not any(o[:60] in text for o in overrides)
