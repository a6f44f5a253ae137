"""Output models of the five shipped stages. The LLM client validates every structured reply
against these (one repair round inside the client); :mod:`.validate` adds the checks a schema
cannot express (a plan must name real sections, a revision must keep every heading)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Dimension = Literal["rigor", "clarity", "internal_consistency", "insight", "actionability"]
EditAction = Literal[
    "remove_hedges", "qualify_claims", "reconcile_numbers", "add_actions", "split_sentences",
    "add_counterpoint", "clarify_structure", "make_specific", "other",
]
EDIT_ACTIONS: tuple[str, ...] = (
    "remove_hedges", "qualify_claims", "reconcile_numbers", "add_actions", "split_sentences",
    "add_counterpoint", "clarify_structure", "make_specific", "other",
)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _first(n: int) -> Any:
    """A before-validator that keeps the first ``n`` items of a list: a model that lists more than
    asked is trimmed, not sent back for repair."""
    def cut(value: Any) -> Any:
        return value[:n] if isinstance(value, list) else value
    return cut


class Weakness(Out):
    dimension: Dimension
    section: str = Field(description="heading of the section, '(lead)' for the introduction")
    evidence: str = Field(max_length=1500, description="a short verbatim quote showing the weakness")
    severity: int = Field(ge=1, le=3)


class AnalysisOut(Out):
    thesis: str = Field(max_length=1000)
    weaknesses: list[Weakness] = Field(max_length=12)

    _trim = field_validator("weaknesses", mode="before")(_first(12))


class Hypothesis(Out):
    dimension: Dimension
    section: str
    change: str = Field(max_length=800, description="the change to make, in one sentence")
    action: EditAction
    expected_gain: float = Field(ge=0, le=10, description="expected rise of that dimension's score")


class HypothesesOut(Out):
    hypotheses: list[Hypothesis] = Field(min_length=1, max_length=10)

    _trim = field_validator("hypotheses", mode="before")(_first(10))


class Edit(Out):
    section: str
    action: EditAction
    dimension: Dimension
    instruction: str = Field(max_length=1000)


class PlanOut(Out):
    edits: list[Edit] = Field(min_length=1, max_length=5)
    rationale: str = Field("", max_length=1000)

    _trim = field_validator("edits", mode="before")(_first(5))


class Rejection(Out):
    index: int = Field(ge=0)
    reason: str = Field(max_length=800)


class AssessmentOut(Out):
    approved: list[int] = Field(description="indices into the plan's edits that should be applied")
    rejected: list[Rejection] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list, max_length=5)

    _trim = field_validator("risks", mode="before")(_first(5))


class SectionRevision(Out):
    """One call's answer for one section (or the whole article when it is short)."""

    text: str = Field(description="the full revised text, starting with the same heading line")
    changes: list[str] = Field(default_factory=list, max_length=10)

    _trim = field_validator("changes", mode="before")(_first(10))


class RevisionOut(Out):
    text: str
    changes: list[str] = Field(default_factory=list)
    sections_revised: list[str] = Field(default_factory=list)
