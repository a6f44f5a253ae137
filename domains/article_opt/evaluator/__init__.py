"""The rubric and the judge (see :mod:`.judge` for the isolation rule)."""

from domains.article_opt.evaluator.judge import (
    JUDGE_PURPOSE,
    ArticleEvaluator,
    Judge,
    JudgeInput,
    JudgeScores,
)
from domains.article_opt.evaluator.rubric import RUBRIC, Rubric

__all__ = ["JUDGE_PURPOSE", "RUBRIC", "ArticleEvaluator", "Judge", "JudgeInput", "JudgeScores", "Rubric"]
