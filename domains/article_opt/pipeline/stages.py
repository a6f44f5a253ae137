"""The five shipped stages: Analysis → Hypotheses → Planning → Assessment → Revision.

Each is a small class with one method, ``run(ctx)``, that renders its prompt template and asks the
inner model for its output model. The whole essay is sent only to the stage that reads all of it
(analysis, as the leading ``document`` message providers cache); hypotheses work from the analysis,
assessment sees the sections the plan touches, revision the part it revises. The docstring of each says which parts of the
:class:`~domains.article_opt.pipeline.contract.StageContext` it reads. Output checks beyond the
schema live in :mod:`.validate`; retries and failure handling live in :mod:`.pipeline`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel

from domains.article_opt.articles import LEAD, Section, join_sections, split_sections, title, word_count
from domains.article_opt.pipeline.contract import Stage, StageContext
from domains.article_opt.pipeline.schemas import (
    AnalysisOut,
    AssessmentOut,
    HypothesesOut,
    PlanOut,
    RevisionOut,
    SectionRevision,
)
from domains.article_opt.pipeline.validate import (
    check_assessment,
    check_hypotheses,
    check_plan,
    check_revision,
    check_section_revision,
)
from domains.article_opt.prompts import bullet, render

PURPOSE_PREFIX = "article."
MAX_EDITS = 3
SECTION_MODE_WORDS = 600  # articles longer than this are revised section by section
WHOLE = "(all)"  # the heading a whole-article revision request carries


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False)


def _retry(ctx: StageContext) -> str:
    return f"\nYour previous answer was rejected: {ctx.retry_error}\nFix that and answer again." if ctx.retry_error else ""


def _guidance(ctx: StageContext) -> str:
    return f"\nInstruction from the outer loop for this stage:\n{ctx.guidance}" if ctx.guidance else ""


def section_names(ctx: StageContext) -> list[str]:
    return [s.heading for s in ctx.sections]


class LLMStage(Stage):
    """A shipped stage: holds the inner client it asks."""

    purpose: ClassVar[str] = ""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def ask(self, schema: type[BaseModel], messages: list[dict[str, str]], context: dict[str, Any]) -> Any:
        return self.llm.structured(purpose=PURPOSE_PREFIX + self.name, schema=schema, messages=messages,
                                   context=context)

    def base_context(self, ctx: StageContext) -> dict[str, Any]:
        out = {"lessons": list(ctx.lessons), "guidance": ctx.guidance, "retry_error": ctx.retry_error,
               "iteration": ctx.iteration, "seed": ctx.seed}
        if ctx.attempt:  # a re-ask is a new draw (the offline stand-in keys on iteration and attempt)
            out["attempt"] = ctx.attempt
        return out


class AnalysisStage(LLMStage):
    """Finds weaknesses per rubric criterion. Reads: ``article``, ``lessons``, ``guidance``."""

    name = "analysis"
    description = "find weaknesses per criterion, with verbatim evidence"
    reads = ("article", "lessons", "guidance")
    output = AnalysisOut

    def run(self, ctx: StageContext) -> AnalysisOut:
        messages = render("analysis", document=ctx.article, lessons=bullet(ctx.lessons),
                          guidance=_guidance(ctx), retry=_retry(ctx))
        return self.ask(AnalysisOut, messages, {**self.base_context(ctx), "article": ctx.article})


class HypothesesStage(LLMStage):
    """Turns weaknesses into candidate changes. Reads: ``outputs['analysis']`` (its verbatim
    evidence stands for the essay, which is not sent again), section headings, ``lessons``,
    ``guidance`` (and findings of any stage injected before it)."""

    name = "hypotheses"
    description = "propose changes that would raise the scores"
    reads = ("article", "outputs.analysis", "outputs.<findings>", "sections", "lessons", "guidance")
    output = HypothesesOut

    def run(self, ctx: StageContext) -> HypothesesOut:
        analysis = dict(ctx.outputs.get("analysis", {}))
        notes = notes_of(ctx)
        messages = render("hypotheses", sections=section_names(ctx), analysis=_dump(analysis), notes=_dump(notes),
                          lessons=bullet(ctx.lessons), guidance=_guidance(ctx), retry=_retry(ctx))
        out = self.ask(HypothesesOut, messages, {**self.base_context(ctx), "analysis": analysis, "article": ctx.article,
                                                 "sections": section_names(ctx), "notes": notes})
        check_hypotheses(out, section_names(ctx))
        return out


class PlanningStage(LLMStage):
    """Picks this round's edits. Reads: ``outputs['hypotheses']``, section headings, ``lessons``,
    ``guidance``."""

    name = "planning"
    description = "choose this round's edits and write an instruction for each"
    reads = ("outputs.hypotheses", "sections", "lessons", "guidance")
    output = PlanOut

    def run(self, ctx: StageContext) -> PlanOut:
        hypotheses = dict(ctx.outputs.get("hypotheses", {}))
        messages = render("planning", sections=section_names(ctx), hypotheses=_dump(hypotheses),
                          lessons=bullet(ctx.lessons), guidance=_guidance(ctx), retry=_retry(ctx),
                          max_edits=MAX_EDITS)
        out = self.ask(PlanOut, messages, {**self.base_context(ctx), "hypotheses": hypotheses,
                                           "sections": section_names(ctx), "max_edits": MAX_EDITS})
        check_plan(out, section_names(ctx))
        return out


class AssessmentStage(LLMStage):
    """Approves or rejects each planned edit against the article. Reads: ``article`` (only the
    sections the plan's edits name are sent), ``outputs['planning']``, findings of injected stages,
    ``guidance``."""

    name = "assessment"
    description = "approve or reject each planned edit"
    reads = ("article", "outputs.planning", "outputs.<findings>", "guidance")
    output = AssessmentOut

    def run(self, ctx: StageContext) -> AssessmentOut:
        plan = dict(ctx.outputs.get("planning", {}))
        notes = notes_of(ctx)
        messages = render("assessment", plan=_dump(plan), notes=_dump(notes), title=title(ctx.article),
                          excerpt=touched_sections(ctx.article, plan.get("edits", [])),
                          guidance=_guidance(ctx), retry=_retry(ctx))
        out = self.ask(AssessmentOut, messages, {**self.base_context(ctx), "article": ctx.article,
                                                 "plan": plan, "notes": notes})
        check_assessment(out, len(plan.get("edits", [])))
        return out


class RevisionStage(LLMStage):
    """Applies the approved edits and the findings of injected stages; returns the whole article.

    Reads: ``article``, ``outputs['planning']``, ``outputs['assessment']``, findings of injected
    stages, ``guidance``. An article over ``SECTION_MODE_WORDS`` words is revised one section at a
    time, and only sections with an edit or a finding are sent; every other section is copied
    back verbatim.
    """

    name = "revision"
    description = "apply the approved edits; return the whole article"
    reads = ("article", "outputs.planning", "outputs.assessment", "outputs.<findings>", "guidance")
    output = RevisionOut

    def run(self, ctx: StageContext) -> RevisionOut:
        edits = approved_edits(ctx)
        notes = notes_of(ctx)
        if word_count(ctx.article) <= SECTION_MODE_WORDS:
            revised = self._revise(ctx, WHOLE, "the whole article", ctx.article, edits, notes, is_last=True)
            check_revision(ctx.article, revised.text)
            return RevisionOut(text=revised.text, changes=revised.changes, sections_revised=["(all)"])
        sections = split_sections(ctx.article)
        last_heading = sections[-1].heading if sections else ""
        out_sections: list[Section] = []
        changes: list[str] = []
        touched: list[str] = []
        for section in sections:
            mine = [e for e in edits if e.get("section") == section.heading
                    or (e.get("action") == "add_actions" and section.heading == last_heading and not e.get("section"))]
            my_notes = [n for n in notes if n.get("section") == section.heading]
            if not mine and not my_notes:
                out_sections.append(section)  # untouched: verbatim
                continue
            label = "the introduction" if section.heading == LEAD else f"section '{section.heading}'"
            revised = self._revise(ctx, section.heading, label, section.text, mine, my_notes,
                                   is_last=section.heading == last_heading)
            check_section_revision(section.heading, section.text, revised.text)
            trailing = section.text[len(section.text.rstrip("\n")):]  # keep the blank line before the next heading
            text = revised.text.rstrip("\n") + trailing
            out_sections.append(Section(heading=section.heading, text=text))
            changes.extend(f"{section.heading}: {c}" for c in revised.changes)
            touched.append(section.heading)
        text = join_sections(out_sections)
        check_revision(ctx.article, text)
        return RevisionOut(text=text, changes=changes, sections_revised=touched)

    def _revise(self, ctx: StageContext, heading: str, label: str, text: str, edits: list[dict],
                notes: list[dict], *, is_last: bool = False) -> SectionRevision:
        messages = render("revision", title=title(ctx.article), label=label, edits=_dump(edits),
                          notes=_dump(notes), text=text, guidance=_guidance(ctx), retry=_retry(ctx))
        context = {**self.base_context(ctx), "heading": heading, "text": text, "edits": edits, "notes": notes,
                   "is_conclusion": is_last, "title": title(ctx.article), "article": ctx.article}
        return self.ask(SectionRevision, messages, context)


def touched_sections(article: str, edits: list[dict[str, Any]]) -> str:
    """The sections the edits name, verbatim and in order (the whole article if none matches)."""
    named = {e.get("section") for e in edits}
    picked = [s for s in split_sections(article) if s.heading in named]
    text = join_sections(picked) if picked else article
    return f"<<<TEXT\n{text.strip()}\nTEXT>>>"


def approved_edits(ctx: StageContext) -> list[dict[str, Any]]:
    """The plan's edits the assessment approved (all of them when no assessment ran)."""
    edits = list(ctx.outputs.get("planning", {}).get("edits", []))
    assessment = ctx.outputs.get("assessment")
    if assessment is None:
        return [dict(e) for e in edits]
    return [dict(edits[i]) for i in assessment.get("approved", []) if 0 <= i < len(edits)]


def notes_of(ctx: StageContext) -> list[dict[str, Any]]:
    """Every finding produced by stages other than the shipped five, in pipeline order."""
    found: list[dict[str, Any]] = []
    for name, out in ctx.outputs.items():
        if name in SHIPPED_NAMES:
            continue
        for item in out.get("items", []) or []:
            found.append({**dict(item), "from": name})
    return found


SHIPPED: tuple[type[LLMStage], ...] = (AnalysisStage, HypothesesStage, PlanningStage, AssessmentStage, RevisionStage)
SHIPPED_NAMES: frozenset[str] = frozenset(cls.name for cls in SHIPPED)
