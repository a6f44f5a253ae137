"""Offline stand-in handlers for the five pipeline stages and for ``ctx.ask`` of generated stages.

**Stand-in, not an LLM.** Each handler computes a schema-valid answer from the request's
structured context with the plain text measurements of :mod:`.features` and the text operations
of :mod:`.edits`: analysis lists what the detectors find, hypotheses map each finding to an edit
action (down-weighting what the lessons say failed, up-weighting the dimension the outer loop's
guidance names), planning picks a few with the request's seeded ``rng``, assessment checks each
edit against the section, and revision really applies the edits to the text.
"""

from __future__ import annotations

import re
from typing import Any

from domains.article_opt import lessons as lessons_mod
from domains.article_opt.articles import LEAD, split_sections
from domains.article_opt.offline import edits as ops
from domains.article_opt.offline.features import (
    ABSOLUTE,
    CAUSAL,
    COUNTERPOINT,
    HEDGE,
    VAGUE,
    action_items,
    contradictions,
    sentences,
    stems,
)

DIMENSION_ACTION = {
    "clarity": "remove_hedges",
    "rigor": "qualify_claims",
    "internal_consistency": "reconcile_numbers",
    "actionability": "add_actions",
    "insight": "add_counterpoint",
}
BASE_GAIN = {
    "remove_hedges": 1.0, "qualify_claims": 0.8, "reconcile_numbers": 2.0, "add_actions": 2.5,
    "split_sentences": 0.4, "add_counterpoint": 0.5, "clarify_structure": 0.4, "make_specific": 0.6, "other": 0.1,
}
NOTE_ACTION = {"objection": "add_counterpoint", "vague": "make_specific", "contradiction": "reconcile_numbers",
               "unsupported": "qualify_claims", "structure": "clarify_structure", "action": "add_actions"}
NOTE_DIMENSION = {"objection": "insight", "vague": "clarity", "contradiction": "internal_consistency",
                  "unsupported": "rigor", "structure": "clarity", "action": "actionability"}
DIMENSIONS = ("rigor", "clarity", "internal_consistency", "insight", "actionability")


def _last_heading(article: str) -> str:
    body = [s for s in split_sections(article) if s.heading != LEAD]
    return body[-1].heading if body else LEAD


def _section_at(article: str, offset: int) -> str:
    """The heading of the section holding character ``offset`` of the article."""
    end = 0
    for s in split_sections(article):
        end += len(s.text)
        if offset < end:
            return s.heading
    return LEAD


# -- analysis ------------------------------------------------------------------------------------
def analysis(request: Any) -> dict[str, Any]:
    article: str = request.context["article"]
    weaknesses: list[dict[str, Any]] = []
    for s in split_sections(article):
        hedges = HEDGE.findall(s.text)
        if len(hedges) >= 2:
            quote = next((x for x in sentences(s.body) if HEDGE.search(x)), "")
            weaknesses.append({"dimension": "clarity", "section": s.heading, "evidence": quote[:380],
                               "severity": min(3, 1 + len(hedges) // 4)})
        absolute = [x for x in sentences(s.body) if ABSOLUTE.search(x) and "(in the cases described here)" not in x]
        if absolute:
            weaknesses.append({"dimension": "rigor", "section": s.heading, "evidence": absolute[0][:380],
                               "severity": min(3, len(absolute))})
        long = [x for x in sentences(s.body) if len(x.split()) > 30]
        if len(long) >= 2:
            weaknesses.append({"dimension": "clarity", "section": s.heading, "evidence": long[0][:380], "severity": 1})
    for c in contradictions(article):
        weaknesses.append({"dimension": "internal_consistency", "section": _section_at(article, c.second.start),
                           "evidence": c.describe()[:380], "severity": 3})
    if not action_items(article):
        last = _last_heading(article)
        weaknesses.append({"dimension": "actionability", "section": last,
                           "evidence": (sentences(split_sections(article)[-1].body) or [""])[-1][:380], "severity": 3})
    weaknesses.sort(key=lambda w: -w["severity"])
    lead_sentences = sentences(split_sections(article)[0].body) if split_sections(article) else []
    thesis = next((x for x in lead_sentences if re.search(r"\b(argument|case|essay|should)\b", x)),
                  lead_sentences[-1] if lead_sentences else "")
    return {"thesis": thesis[:390], "weaknesses": weaknesses[:12]}


# -- hypotheses ----------------------------------------------------------------------------------
def _guided_dimensions(guidance: str) -> set[str]:
    text = guidance.lower().replace(" ", "_")
    return {d for d in DIMENSIONS if d in text}


def _lesson_factor(lessons: list[str], action: str, section: str) -> float:
    factor = 1.0
    for line in lessons:
        lesson = lessons_mod.parse(line)
        if lesson is None or lesson.action != action or lesson.section != section:
            continue
        factor *= {"discard": 0.35, "crash": 0.2, "rejected": 0.3}.get(lesson.status, 1.0)
    return factor


GUIDED_ACTIONS: tuple[tuple[str, str, str], ...] = (
    # (keywords in the outer loop's guidance, action it unlocks, dimension it serves)
    (r"vague|specific|concrete|qualifier", "make_specific", "clarity"),
    (r"outline|structure|open with|section order|thesis", "clarify_structure", "clarity"),
    (r"objection|red.team|skeptic|counter|argues against", "add_counterpoint", "insight"),
)
EXHAUSTED = 0.15  # an (action, section) whose lesson factor fell below this is not proposed again


def _guided_actions(guidance: str, article: str) -> list[tuple[str, str, str, str]]:
    """Edits the outer loop's guidance asks for that the shipped hypotheses do not propose on
    their own: (dimension, section, action, quote)."""
    found = []
    for keywords, action, dimension in GUIDED_ACTIONS:
        if not re.search(keywords, guidance, re.IGNORECASE):
            continue
        for s in split_sections(article):
            if s.heading == LEAD:
                continue
            sents = sentences(s.body)
            if action == "make_specific":
                quote = next((x for x in sents if VAGUE.search(x)), None)
            elif action == "clarify_structure":
                quote = sents[0] if sents and not stems(s.heading) & stems(sents[0]) else None
            else:
                quote = _unanswered(s.body)
            if quote:
                found.append((dimension, s.heading, action, quote))
    return found


def hypotheses(request: Any) -> dict[str, Any]:
    ctx = request.context
    weaknesses = ctx.get("analysis", {}).get("weaknesses", [])
    lessons = list(ctx.get("lessons", []))
    guidance = ctx.get("guidance", "")
    guided = _guided_dimensions(guidance)
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def add(dimension: str, section: str, action: str, change: str, severity: int) -> None:
        factor = _lesson_factor(lessons, action, section)
        if factor < EXHAUSTED:
            return
        gain = BASE_GAIN.get(action, 0.1) * severity * factor
        if dimension in guided:
            gain *= 1.6
        key = (action, section)
        if key not in out or out[key]["expected_gain"] < gain:
            out[key] = {"dimension": dimension, "section": section, "action": action, "change": change[:290],
                        "expected_gain": round(min(gain, 10.0), 3)}

    for w in weaknesses:
        action = DIMENSION_ACTION[w["dimension"]]
        if w["dimension"] == "clarity" and len(w["evidence"].split()) > 30 and not HEDGE.search(w["evidence"]):
            action = "split_sentences"
        if action == "add_counterpoint":
            continue  # the shipped pipeline answers objections only when asked to (guidance, a stage)
        add(w["dimension"], w["section"], action, f"{action.replace('_', ' ')}: {w['evidence'][:200]}", w["severity"])
    for dimension, section, action, quote in _guided_actions(guidance, ctx.get("article", "")):
        add(dimension, section, action, f"{action.replace('_', ' ')} (outer guidance): {quote[:200]}", 2)
    for note in ctx.get("notes", []):
        kind = note.get("kind", "note")
        if kind in NOTE_ACTION:
            add(NOTE_DIMENSION[kind], note.get("section", ""), NOTE_ACTION[kind],
                f"{kind}: {note.get('quote', '')[:200]}", 2)
    if not out:
        sections = ctx.get("sections", [LEAD])
        out[("other", sections[-1])] = {"dimension": "clarity", "section": sections[-1], "action": "other",
                                        "change": "no promising edit left: every known fix was tried", "expected_gain": 0.0}
    ranked = sorted(out.values(), key=lambda h: -h["expected_gain"])
    return {"hypotheses": ranked[:10]}


# -- planning ------------------------------------------------------------------------------------
def planning(request: Any) -> dict[str, Any]:
    ctx = request.context
    rng = request.rng
    pool = list(ctx.get("hypotheses", {}).get("hypotheses", []))
    k = min(int(ctx.get("max_edits", 3)), rng.choice([1, 2, 2, 3]), len(pool))
    scored = sorted(pool, key=lambda h: -h["expected_gain"] * rng.uniform(0.6, 1.4))
    chosen = scored[: max(k, 1)]
    edits = [{"section": h["section"], "action": h["action"], "dimension": h["dimension"],
              "instruction": h["change"][:390]} for h in chosen]
    return {"edits": edits, "rationale": f"offline stand-in: top {len(edits)} of {len(pool)} hypotheses by "
                                         "expected gain with seeded jitter"}


# -- assessment ----------------------------------------------------------------------------------
def _edit_applies(edit: dict[str, Any], article: str) -> str | None:
    """``None`` when the edit has something to do in its section, else the reason it has not."""
    section = next((s for s in split_sections(article) if s.heading == edit["section"]), None)
    if section is None:
        return f"no section named {edit['section']!r}"
    action = edit["action"]
    if action == "remove_hedges" and not HEDGE.search(section.text):
        return "the section has no hedges left"
    if action == "qualify_claims" and not ABSOLUTE.search(section.text):
        return "the section makes no sweeping claim"
    if action == "reconcile_numbers" and not ops.reconcile_numbers(section.text, article)[1]:
        return "no contradictory figure in this section"
    if action == "add_actions" and action_items(article):
        return "the conclusion already lists actions"
    if action == "split_sentences" and not ops.split_long_sentences(section.text)[1]:
        return "no overlong sentence in this section can be split"
    if action == "add_counterpoint" and not _unanswered(section.body):
        return "every strong claim in this section is already answered"
    if action == "other":
        return "no concrete change to apply"
    return None


def _unanswered(body: str) -> str | None:
    """The first strong or causal claim not already followed by a counterpoint."""
    sents = sentences(body)
    return next((x for i, x in enumerate(sents) if (ABSOLUTE.search(x) or CAUSAL.search(x))
                 and not COUNTERPOINT.search(x)
                 and not (i + 1 < len(sents) and COUNTERPOINT.search(sents[i + 1]))), None)


def assessment(request: Any) -> dict[str, Any]:
    ctx = request.context
    article = ctx["article"]
    approved, rejected = [], []
    for i, edit in enumerate(ctx.get("plan", {}).get("edits", [])):
        reason = _edit_applies(edit, article)
        if reason is None:
            approved.append(i)
        else:
            rejected.append({"index": i, "reason": reason})
    risks = ["narrowing claims adds qualifiers, which can read as hedging"] if any(
        e.get("action") == "qualify_claims" for e in ctx.get("plan", {}).get("edits", [])) else []
    return {"approved": approved, "rejected": rejected, "risks": risks}


# -- revision ------------------------------------------------------------------------------------
def _apply(text: str, heading: str, article: str, edits: list[dict[str, Any]], notes: list[dict[str, Any]],
           *, is_conclusion: bool) -> tuple[str, list[str]]:
    changes: list[str] = []
    for edit in edits:
        action = edit.get("action")
        if action == "remove_hedges":
            text, done = ops.remove_hedges(text)
        elif action == "qualify_claims":
            text, done = ops.qualify_claims(text)
        elif action == "reconcile_numbers":
            text, done = ops.reconcile_numbers(text, article)
        elif action == "add_actions" and is_conclusion:
            text, done = ops.add_actions(text, article)
        elif action == "split_sentences":
            text, done = ops.split_long_sentences(text)
        elif action == "add_counterpoint":
            text, done = ops.add_counterpoint(text, _unanswered(text) or "", "")
        elif action == "clarify_structure":
            text, done = ops.clarify_structure(text, heading, "")
        elif action == "make_specific":
            quote = next((x for x in sentences(text) if VAGUE.search(x)), "")
            text, done = ops.make_specific(text, quote)
        else:
            done = []
        changes.extend(done)
    for note in notes:
        kind, quote, suggestion = note.get("kind"), note.get("quote", ""), note.get("suggestion", "")
        if kind == "objection":
            text, done = ops.add_counterpoint(text, quote, suggestion)
        elif kind == "vague":
            text, done = ops.make_specific(text, quote)
        elif kind == "contradiction":
            text, done = ops.reconcile_numbers(text, article)
        elif kind == "unsupported":
            target = next((x for x in sentences(text) if quote and (quote in x or x in quote)), None)
            done = []
            if target is not None:
                new, done = ops.qualify_claims(target)
                text = text.replace(target, new, 1)
        elif kind == "structure":
            text, done = ops.clarify_structure(text, heading, suggestion)
        elif kind == "action" and is_conclusion:
            text, done = ops.add_actions(text, article)
        else:
            done = []
        changes.extend(f"[{note.get('from', 'note')}] {c}" for c in done)
    return text, changes


def revision(request: Any) -> dict[str, Any]:
    ctx = request.context
    article, heading, text = ctx["article"], ctx["heading"], ctx["text"]
    edits, notes = list(ctx.get("edits", [])), list(ctx.get("notes", []))
    if heading != "(all)":
        new, changes = _apply(text, heading, article, edits, notes, is_conclusion=bool(ctx.get("is_conclusion")))
        return {"text": new, "changes": changes[:10]}
    parts = split_sections(text)
    last = parts[-1].heading if parts else ""
    out, changes = [], []
    for s in parts:
        mine = [e for e in edits if e.get("section") == s.heading]
        my_notes = [n for n in notes if n.get("section") == s.heading]
        new, done = _apply(s.text, s.heading, article, mine, my_notes, is_conclusion=s.heading == last)
        out.append(new)
        changes.extend(done)
    return {"text": "".join(out), "changes": changes[:10]}


# -- ctx.ask of generated stages -----------------------------------------------------------------
def custom_stage(request: Any) -> dict[str, Any]:
    """Findings chosen by keywords of the generated stage's instruction."""
    ctx = request.context
    article, instruction = ctx["article"], ctx.get("instruction", "").lower()
    items: list[dict[str, str]] = []
    for s in split_sections(article):
        for x in sentences(s.body):
            if re.search(r"objection|counter|skeptic|sceptic|red.team", instruction) and ABSOLUTE.search(x):
                items.append({"kind": "objection", "section": s.heading, "quote": x[:590],
                              "suggestion": "A fair objection is that this claim rests on the cases described "
                                            f"here, not on a systematic study of {sorted(stems(x))[0] if stems(x) else 'them'}."})
            elif re.search(r"vague|specific|hedg", instruction) and len(HEDGE.findall(x)) + len(VAGUE.findall(x)) >= 2:
                items.append({"kind": "vague", "section": s.heading, "quote": x[:590], "suggestion": "cut or make concrete"})
    if re.search(r"number|consisten|contradict", instruction):
        for c in contradictions(article):
            items.append({"kind": "contradiction", "section": _section_at(article, c.second.start),
                          "quote": c.second.text, "suggestion": f"use {c.first.core}"})
    return {"items": items[:20], "summary": f"offline stand-in: {len(items)} findings for '{instruction[:80]}'"}
