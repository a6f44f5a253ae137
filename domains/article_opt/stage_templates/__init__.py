"""Stage templates the offline stand-in stage designer fills in.

Each template is a real, linted Python module: a complete generated stage against
:mod:`domains.article_opt.pipeline.contract`, with its knobs (the stage's ``name``, ``max_items``,
...) in a module-level ``PARAMS`` literal, rendered by :func:`core.templates.render` — the same
function that renders the mechanism templates. They are what provider ``offline`` answers to a
stage-design request; a real model writes its own source against the same contract. Rendered
sources are written only to the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import templates

HERE = Path(__file__).resolve().parent

# template → (default stage name, class name, the dimension it is meant to help, where it goes)
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "counter_argument": ("counter_argument", "CounterArgumentStage", "insight", "planning"),
    "evidence_audit": ("evidence_audit", "EvidenceAuditStage", "rigor", "planning"),
    "specificity_pass": ("specificity_pass", "SpecificityPassStage", "clarity", "planning"),
    "outline_checker": ("outline_checker", "OutlineCheckerStage", "clarity", "planning"),
    "consistency_check": ("consistency_check", "ConsistencyCheckStage", "internal_consistency", "planning"),
}


def render(template: str, **params: Any) -> str:
    """The source of stage template ``template`` with ``params`` over its ``PARAMS`` defaults."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown stage template {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    return templates.render(HERE / f"{template}.py", params, name=template)
