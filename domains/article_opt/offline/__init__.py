"""Offline stand-in handlers for every article_opt request purpose.

**These are a stand-in, not a language model.** With provider ``offline`` every stage, the judge,
the outer analyzer and the stage designer are answered by deterministic Python that reads the
request's structured context and measures or edits real text (:mod:`.features`, :mod:`.edits`).
They exist so the whole three-level machinery runs on any machine; results obtained with them
show that the machinery works, not what a model would achieve, and are labelled as such in every
report.
"""

from __future__ import annotations

from core.llm_client import offline_purposes, register_offline_handler
from domains.article_opt.offline import judge, research, stages

HANDLERS = {
    "article.analysis": stages.analysis,
    "article.hypotheses": stages.hypotheses,
    "article.planning": stages.planning,
    "article.assessment": stages.assessment,
    "article.revision": stages.revision,
    "article.custom_stage": stages.custom_stage,
    "article.judge": judge.judge_handler,
    "article.outer": research.outer_analysis,
    "article.design_stage": research.design_stage,
}


def register() -> None:
    """Register every handler not registered yet (idempotent; a handler a test swapped in stays)."""
    taken = set(offline_purposes())
    for purpose, handler in HANDLERS.items():
        if purpose not in taken:
            register_offline_handler(purpose, handler)
