"""Checks a stage's output must pass beyond its schema. Each raises :class:`InvalidOutput` with a
message written for the model: the pipeline retries the stage once with that message."""

from __future__ import annotations

import re

from domains.article_opt.articles import LEAD, headings, word_count
from domains.article_opt.pipeline.schemas import AssessmentOut, HypothesesOut, PlanOut

MIN_KEPT_RATIO = 0.6  # a revised section (or article) shorter than this share of the original is truncated
TERMINAL = re.compile(r"""[.!?:)"'”’*`\]]\s*$""")


class InvalidOutput(ValueError):
    """A stage output that parsed but cannot be used."""


def _known(section: str, known: list[str]) -> bool:
    return section in known or section == ""


def check_hypotheses(out: HypothesesOut, known_sections: list[str]) -> None:
    bad = [h.section for h in out.hypotheses if not _known(h.section, known_sections)]
    if bad:
        raise InvalidOutput(f"hypotheses name sections that do not exist: {bad}; use one of {known_sections}")


def check_plan(out: PlanOut, known_sections: list[str]) -> None:
    bad = [e.section for e in out.edits if not _known(e.section, known_sections)]
    if bad:
        raise InvalidOutput(f"the plan names sections that do not exist: {bad}; use one of {known_sections}")


def check_assessment(out: AssessmentOut, n_edits: int) -> None:
    indices = list(out.approved) + [r.index for r in out.rejected]
    bad = [i for i in indices if not 0 <= i < n_edits]
    if bad:
        raise InvalidOutput(f"assessment refers to edits {bad}, but the plan has edits 0..{n_edits - 1}")
    if set(out.approved) & {r.index for r in out.rejected}:
        raise InvalidOutput("an edit cannot be both approved and rejected")


def check_revision(original: str, revised: str, *, label: str = "the article") -> None:
    """Non-empty, every heading kept in order, no truncation."""
    if not revised.strip():
        raise InvalidOutput(f"the revision of {label} is empty; return the full revised text")
    want = headings(original)
    got = headings(revised)
    missing = [h for h in want if h not in got]
    if missing:
        raise InvalidOutput(f"the revision of {label} dropped or renamed headings {missing}; keep every heading "
                            "line exactly as it was")
    order = [h for h in got if h in want]
    if order != want:
        raise InvalidOutput(f"the revision of {label} reordered headings; keep them in the original order: {want}")
    before, after = word_count(original), word_count(revised)
    if before and after < MIN_KEPT_RATIO * before:
        raise InvalidOutput(f"the revision of {label} looks truncated ({after} words, the original has {before}); "
                            "return the whole text, not an excerpt")
    if not TERMINAL.search(revised.rstrip()):
        raise InvalidOutput(f"the revision of {label} stops mid-sentence; return the complete text")


def check_section_revision(heading: str, original: str, revised: str) -> None:
    label = "the introduction" if heading == LEAD else f"section '{heading}'"
    check_revision(original, revised, label=label)
    if heading != LEAD and not revised.lstrip().startswith(f"## {heading}"):
        raise InvalidOutput(f"the revision of {label} must start with its heading line '## {heading}'")
