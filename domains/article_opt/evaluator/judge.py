"""The article evaluator: a judge scores an article against the rubric.

Isolation is enforced by type. :class:`JudgeInput` — everything the judge ever sees — has two
fields, the article and the rubric (``extra="forbid"``): there is no field that could carry
lessons, outer guidance, stage outputs or mechanism state, and the request sent to the judge's
model is rendered from a ``JudgeInput`` alone. :class:`ArticleEvaluator` adapts it to the core's
:class:`~core.plugins.Evaluator`, reading only ``EvalInput.artifact_text``. The judge may use its
own provider and model (``--judge-provider``/``--judge-model``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from core.plugins import Evaluator
from core.records import EvalInput, Evaluation
from domains.article_opt.evaluator.rubric import RUBRIC, Rubric
from domains.article_opt.prompts import render

JUDGE_PURPOSE = "article.judge"


class JudgeInput(BaseModel):
    """The judge's whole input: the article text and the rubric. Nothing else, by construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    article: str
    rubric: Rubric


class DimensionScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0, le=10)
    reason: str = Field("", max_length=1500)


def scores_schema(rubric: Rubric) -> type[BaseModel]:
    """A reply model with exactly one required field per rubric dimension (no overall field: the
    overall score is computed in code)."""
    fields: dict[str, Any] = {name: (DimensionScore, ...) for name in rubric.names}
    return create_model("JudgeScores", __config__=ConfigDict(extra="forbid"), **fields)


JudgeScores = scores_schema(RUBRIC)


class Judge:
    """Scores one :class:`JudgeInput` with ``llm`` (a client of :mod:`core.llm_client`)."""

    def __init__(self, llm: Any, *, rubric: Rubric = RUBRIC) -> None:
        self.llm = llm
        self.rubric = rubric
        self.schema = JudgeScores if rubric is RUBRIC else scores_schema(rubric)

    def score(self, inp: JudgeInput) -> Evaluation:
        messages = render("judge", document=inp.article, rubric=inp.rubric.render())
        reply = self.llm.structured(purpose=JUDGE_PURPOSE, schema=self.schema, messages=messages,
                                    context=inp.model_dump(mode="json"))
        scores = {name: float(getattr(reply, name).score) for name in inp.rubric.names}
        return Evaluation(score=inp.rubric.overall(scores), details=scores)


class ArticleEvaluator(Evaluator):
    """Core evaluator plug-in: builds a :class:`JudgeInput` from the artifact text only."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    def evaluate(self, inp: EvalInput) -> Evaluation:
        if not inp.artifact_text or not inp.artifact_text.strip():
            raise ValueError("the executor produced no article text to judge")
        return self.judge.score(JudgeInput(article=inp.artifact_text, rubric=self.judge.rubric))
