"""Source templates the offline stand-in stage designer fills in (``{{param}}`` placeholders).

Each template is a complete generated stage against :mod:`domains.article_opt.pipeline.contract`.
They are what provider ``offline`` answers to a stage-design request; a real model writes its own
source against the same contract. Filled-in sources are written only to the run directory.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

# template → (default stage name, class name, the dimension it is meant to help, where it goes)
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "counter_argument": ("counter_argument", "CounterArgumentStage", "insight", "planning"),
    "evidence_audit": ("evidence_audit", "EvidenceAuditStage", "rigor", "planning"),
    "specificity_pass": ("specificity_pass", "SpecificityPassStage", "clarity", "planning"),
    "outline_checker": ("outline_checker", "OutlineCheckerStage", "clarity", "planning"),
    "consistency_check": ("consistency_check", "ConsistencyCheckStage", "internal_consistency", "planning"),
}
DEFAULT_PARAMS = {"max_items": 3, "min_fuzz": 2}


def render(template: str, **params: object) -> str:
    name, class_name, _, _ = TEMPLATES[template]
    values = {**DEFAULT_PARAMS, "name": name, "class_name": class_name, **params}
    text = (HERE / f"{template}.py.tmpl").read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"template {template} needs parameter {key!r}")
        return str(values[key])

    return re.sub(r"\{\{(\w+)\}\}", fill, text)
