"""Offline stand-in handlers for Level 1.5 (outer analysis) and Level 2 (stage design).

**Stand-in, not an LLM.** The outer analyzer picks the reference framework matching the weakest
criterion of the score trace (or prompt optimisation when shipped stages keep failing), moving on
to the next weakest criterion when the same choice did not pay last cycle, and copies that
framework's own guidance line into the stage overrides. The stage designer fills in a source
template from :mod:`domains.article_opt.stage_templates` aimed at the weakest criterion that has a
template not tried yet. Both are deterministic functions of the request context (ties broken with
the request's seeded ``rng``).
"""

from __future__ import annotations

from typing import Any

from domains.article_opt.stage_templates import TEMPLATES
from domains.article_opt.stage_templates import render as render_template

DIMENSION_FRAMEWORK = {
    "rigor": "evidence-grounding",
    "clarity": "specificity",
    "internal_consistency": "consistency-check",
    "insight": "red-team",
    "actionability": "actionable-ending",
}
SHIPPED = ("analysis", "hypotheses", "planning", "assessment", "revision")


def _ranked_dimensions(dimensions: dict[str, dict[str, float]], rng: Any) -> list[str]:
    return sorted(dimensions, key=lambda d: (dimensions[d]["score"], rng.random()))


def outer_analysis(request: Any) -> dict[str, Any]:
    ctx = request.context
    frameworks = {f["name"]: f for f in ctx["frameworks"]}
    stages = [s for s in ctx["stages"] if s in SHIPPED] or list(ctx["stages"])
    failing = [f["stage"] for f in ctx.get("failures", []) if f.get("type") == "stage_failed" and f.get("stage") in SHIPPED]
    previous = ctx.get("previous", [])
    if failing and "prompt-optimization" in frameworks:
        stage = max(set(failing), key=failing.count)
        fw = frameworks["prompt-optimization"]
        return {"strategy": fw["name"],
                "diagnosis": f"offline stand-in: stage {stage} failed {failing.count(stage)} time(s) recently; "
                             f"{fw['when']}",
                "overrides": [{"stage": stage, "instruction": "Answer exactly in the required form: keep every "
                               "heading line unchanged, return the complete text, name only existing sections. "
                               + fw["guidance"]}]}
    dims = ctx.get("dimensions", {})
    ranked = _ranked_dimensions(dims, request.rng) if dims else ["actionability"]
    choice = ranked[0]
    last = previous[-1] if previous else None
    if last is not None and len(ranked) > 1:
        last_dim = next((d for d, f in DIMENSION_FRAMEWORK.items() if f == last["strategy"]), None)
        if last_dim == choice and dims.get(choice, {}).get("last_cycle_gain", 0.0) <= 0.0:
            choice = ranked[1]  # the same medicine did not work last cycle: treat the next weakest
    name = DIMENSION_FRAMEWORK.get(choice)
    fw = frameworks.get(name) if name else None
    if fw is None:
        fw = next(iter(frameworks.values()))
    score = dims.get(choice, {}).get("score", 0.0)
    gain = dims.get(choice, {}).get("last_cycle_gain", 0.0)
    overrides = [
        {"stage": "hypotheses", "instruction": f"Prioritise {choice}: {fw['guidance']}"},
        {"stage": "planning", "instruction": f"Choose the edits that raise {choice} first. {fw['does']}"},
        {"stage": "revision", "instruction": fw["guidance"]},
    ]
    return {"strategy": fw["name"],
            "diagnosis": f"offline stand-in: {choice} is the weakest criterion ({score:.1f}/10, {gain:+.2f} last "
                         f"cycle); {fw['when']}",
            "overrides": [o for o in overrides if o["stage"] in stages]}


def design_stage(request: Any) -> dict[str, Any]:
    ctx = request.context
    taken = set(ctx.get("stages", [])) | {t["name"] for t in ctx.get("tried", [])} | set(ctx.get("avoid", []))
    taken |= {f.split(":")[0].strip() for f in ctx.get("feedback", [])}
    taken |= {name for f in ctx.get("feedback", []) for name in TEMPLATES if name in f}
    dims = ctx.get("dimensions", {})
    ranked = _ranked_dimensions(dims, request.rng) if dims else ["insight"]
    order = [t for d in ranked for t, meta in TEMPLATES.items() if meta[2] == d]
    order += [t for t in TEMPLATES if t not in order]
    template = next((t for t in order if TEMPLATES[t][0] not in taken), None)
    stage_name, _, dimension, after = TEMPLATES[template or "counter_argument"]
    if template is None:  # every template tried: a variant with a fresh name and a wider net
        template = "counter_argument"
        stage_name = f"counter_argument_{len(taken)}"
        source = render_template(template, name=stage_name, max_items=5)
    else:
        source = render_template(template)
    if after not in ctx.get("stages", []):
        after = ctx["stages"][0]
    return {"name": stage_name, "after": after,
            "rationale": f"offline stand-in designer: template '{template}' aimed at {dimension}, the weakest "
                         f"criterion with an untried template",
            "source": source}
