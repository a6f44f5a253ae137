"""Offline stand-in judge: rubric scores computed from measurable text features.

**A stand-in, not an LLM's judgment.** Each dimension is a clipped linear function of counts from
:mod:`.features` (per 1,000 words where length would otherwise matter), capped so that piling up
one feature cannot max a score, and with a repetition penalty so boilerplate does not pay:

- rigor: evidence markers up, sweeping absolutes down, counterpoints up (capped);
- clarity: hedge and vague-word density down, sentence length far from ~18 words down, long
  sentences down, sections that open with their point up, repeated sentences and stock phrases
  (a six-word phrase used three times or more) down;
- internal consistency: contradictory quantities and repeated sentences down;
- insight: causal connectives and counterpoints up (capped), repeated sentences and stock phrases down;
- actionability: imperative list items in the closing section up, time-bound ones up.

It reads only the article text (the request context is the judge's input: article + rubric).
"""

from __future__ import annotations

from typing import Any

from domains.article_opt.offline.features import Features, measure


def _clip(x: float) -> float:
    return round(min(10.0, max(0.0, x)), 2)


def dimension_scores(f: Features) -> dict[str, float]:
    evidence = min(f.per_1k(f.evidence), 15.0) / 15.0
    absolutes = min(f.per_1k(f.absolutes), 10.0)
    hedges = min(f.per_1k(f.hedges), 16.0)
    vague = min(f.per_1k(f.vague), 10.0)
    counter = min(f.counterpoints, 5)
    stock = min(f.boilerplate, 10)
    causal = min(f.per_1k(f.causal), 8.0)
    rigor = 5.5 + 2.5 * evidence - 0.35 * absolutes + 0.35 * counter
    clarity = (8.6 - 0.22 * hedges - 0.15 * vague - 0.12 * abs(f.mean_sentence_words - 18.0)
               - 4.0 * f.long_sentence_share + 1.0 * f.topic_sentences - 0.5 * f.duplicates - 0.15 * stock)
    consistency = 9.5 - 2.5 * f.contradictions - 0.5 * f.duplicates
    insight = 4.0 + 0.3 * causal + 0.45 * counter - 0.6 * f.duplicates - 0.2 * stock
    actionability = 1.5 + 1.3 * min(f.actions, 5) + 0.5 * min(f.timed_actions, 3)
    return {
        "rigor": _clip(rigor),
        "clarity": _clip(clarity),
        "internal_consistency": _clip(consistency),
        "insight": _clip(insight),
        "actionability": _clip(actionability),
    }


REASONS = {
    "rigor": "{evidence} evidence markers, {absolutes} sweeping absolutes, {counterpoints} counterpoints",
    "clarity": "{hedges} hedges, {vague} vague phrases, mean sentence {mean:.1f} words, "
               "{topic:.0%} of sections open with their point, {stock} stock phrases",
    "internal_consistency": "{contradictions} contradictory quantities, {duplicates} repeated sentences",
    "insight": "{causal} causal connectives, {counterpoints} counterpoints",
    "actionability": "{actions} action items in the closing section ({timed} time-bound)",
}


def judge_handler(request: Any) -> dict[str, Any]:
    """Handler for purpose ``article.judge``."""
    article = request.context["article"]
    f = measure(article)
    scores = dimension_scores(f)
    values = {"evidence": f.evidence, "absolutes": f.absolutes, "counterpoints": f.counterpoints, "hedges": f.hedges,
              "vague": f.vague, "mean": f.mean_sentence_words, "topic": f.topic_sentences,
              "contradictions": f.contradictions, "duplicates": f.duplicates, "stock": f.boilerplate, "causal": f.causal,
              "actions": f.actions, "timed": f.timed_actions}
    dims = [d["name"] for d in request.context["rubric"]["dimensions"]]
    return {name: {"score": scores.get(name, 5.0), "reason": "offline stand-in: " + REASONS.get(name, "").format(**values)}
            for name in dims}
