"""The article-revision pipeline: five shipped stages plus any Level 2 injects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domains.article_opt.pipeline.contract import (
    Finding,
    Findings,
    SectionView,
    Stage,
    StageContext,
    contract_check,
)
from domains.article_opt.pipeline.pipeline import PassResult, Pipeline, Slot, StageFailure
from domains.article_opt.pipeline.stages import SHIPPED, SHIPPED_NAMES

__all__ = [
    "SHIPPED",
    "SHIPPED_NAMES",
    "Finding",
    "Findings",
    "PassResult",
    "Pipeline",
    "SectionView",
    "Slot",
    "Stage",
    "StageContext",
    "StageFailure",
    "build_pipeline",
    "contract_check",
]


def build_pipeline(llm: Any, *, on_event: Callable[[dict[str, Any]], None] | None = None,
                   stage_timeout_s: float = 10.0) -> Pipeline:
    """Analysis → Hypotheses → Planning → Assessment → Revision, all asking ``llm``."""
    return Pipeline([cls(llm) for cls in SHIPPED], llm=llm, on_event=on_event, stage_timeout_s=stage_timeout_s)
