"""The offline researcher for train_opt: a deterministic, seeded stand-in for the LLM.

It answers the three request purposes of this domain from the structured context each request
carries — no text is "understood":

* ``train_opt.propose``  a hyperparameter change: picks a parameter by the search strategy, the
  mechanisms' constraints (avoid/prefer params, avoid regions, step scale), the guidance text (a
  parameter it names is preferred, and a ``NAME:up`` / ``NAME:down`` token sets its direction; lines
  that say avoid / do not are skipped) and the record of what was kept, and moves it a seeded random
  step inside its range. Frozen parameters are never touched; a configuration already measured (the
  request's ``measured`` list, or a ``duplicate:`` refusal in the feedback) is never proposed.
* ``train_opt.analyze``  a Level-1.5 config patch from trace statistics, by fixed rules; it never
  freezes a parameter with a direction not tried yet (the request's ``untried``) or tried fewer than
  three times, and its guidance names the directions not tried yet on parameters that have not paid,
  and after keeps every direction that paid (not one past a failed move that way).
* ``train_opt.design_mechanism``  a Level-2 design: a library template, parameterised from the trace,
  skipping designs the feedback rejected. Templates whose measured effect (the menu's ``evidence``:
  paired runs on the benchmark's training targets) says they helped — more wins than losses, a lower
  mean regret, sign test p < ``EVIDENCE_P`` — come first, the largest measured gain first, a gain
  weighted up to twice by the severity (0–1) of the diagnosed bottleneck the template addresses; among
  the rest, the one that addresses the most severe bottleneck.

It exists so every level runs end to end on any machine, and it is what the tests and the committed
CPU results use. Its answers are never an LLM's and are never reported as such.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from core.llm.offline import read_guidance
from core.llm_client import register_offline_handler
from core.records import canonical_json

PURPOSE_PROPOSE = "train_opt.propose"
PURPOSE_ANALYZE = "train_opt.analyze"
PURPOSE_DESIGN = "train_opt.design_mechanism"
# a template counts as measured to help when its paired runs won more than they lost, its mean regret
# fell, and its sign test p is below this: a loose screen that drops coin flips (40/39, p = 1), not a
# significance test — seven templates are screened at once, uncorrected
EVIDENCE_P = 0.5
_WINDOW_VARIANTS = ("L", "SL", "SSL", "SSSL", "SLSL", "LLLL", "SSSS")


def _step(spec: dict[str, Any], value: Any, up: bool, scale: float, rng: random.Random) -> Any:
    kind = spec["kind"]
    low, high = spec.get("low"), spec.get("high")
    if kind == "int":
        if spec.get("pow2"):
            new = value * 2 if up else max(1, value // 2)
        else:
            delta = max(1, round(abs(value) * 0.25 * scale * rng.uniform(0.6, 1.4)))
            new = value + delta if up else value - delta
    elif kind == "float":
        if value > 0 and (spec.get("log") or value < 1):
            factor = math.exp(rng.uniform(0.25, 0.7) * scale)
            new = value * factor if up else value / factor
        else:
            span = (high - low) if low is not None and high is not None else 1.0
            delta = span * 0.1 * scale * rng.uniform(0.5, 1.5)
            new = value + delta if up else value - delta
        new = float(f"{new:.4g}")
    elif kind == "tuple":
        idx = rng.randrange(len(value))
        gap = 1.0 - value[idx]
        moved = value[idx] + gap * 0.5 * scale if up else 1.0 - gap * (1 + 0.5 * scale)
        new = tuple(float(f"{(moved if i == idx else v):.4g}") for i, v in enumerate(value))
    elif kind == "str":
        # the spec's pattern is a constraint the researcher is given: only values it accepts
        pattern = spec.get("pattern")
        listed = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern or "")
        variants = tuple(listed.group(1).split("|")) if listed else _WINDOW_VARIANTS
        options = [v for v in variants if v != value and (not pattern or re.fullmatch(pattern, v))]
        return rng.choice(options) if options else value
    else:
        return not value
    if kind == "tuple":
        lo = low if low is not None else -math.inf
        hi = high if high is not None else math.inf
        return tuple(min(max(v, lo), hi) for v in new)
    if low is not None:
        new = max(new, type(new)(low))
    if high is not None:
        new = min(new, type(new)(high))
    return new


def _direction(name: str, new: Any, old: Any) -> str:
    if isinstance(new, (int, float)) and not isinstance(new, bool):
        return "up" if new > old else "down"
    if isinstance(new, tuple):
        return "up" if sum(new) > sum(old) else "down"
    return "set"


def propose(request: Any) -> dict[str, Any]:
    ctx, rng = request.context, request.rng
    params: dict[str, dict[str, Any]] = ctx["params"]
    cons = ctx.get("constraints", {})
    avoid_params = set(cons.get("avoid_params", ()))
    avoid_regions = set(cons.get("avoid_regions", ()))
    feedback = tuple(ctx.get("feedback", ()))
    scale = float(cons.get("step_scale") or ctx.get("step_scale", 1.0))
    active = [p for p in ctx["active_params"] if p in params and p not in avoid_params] or list(ctx["active_params"])
    stats: dict[str, dict[str, Any]] = ctx.get("param_stats", {})
    guided, guided_dirs = read_guidance(str(ctx.get("guidance_text") or ""), active)
    prefer = list(dict.fromkeys([p for p in cons.get("prefer_params", ()) if p in active] + guided))
    strategy = ctx.get("strategy", "explore")
    measured = {canonical_json(m) for m in ctx.get("measured", ())}
    refused = [line for line in feedback if line.startswith(("duplicate:", "infeasible:"))]

    def known(changes: dict[str, Any]) -> bool:
        """Already measured, or refused this iteration: the controller would refuse it."""
        key = canonical_json(changes)
        return key in measured or any(key in line for line in refused)

    def pick() -> str:
        if prefer and rng.random() < 0.7:
            return rng.choice(prefer)
        if strategy == "exploit":
            kept = [p for p in active if stats.get(p, {}).get("keeps", 0) > 0]
            if kept and rng.random() < 0.7:
                return rng.choice(kept)
        if strategy in ("explore", "focused") and rng.random() < 0.6:
            fewest = min(stats.get(p, {}).get("tries", 0) for p in active)
            return rng.choice([p for p in active if stats.get(p, {}).get("tries", 0) == fewest])
        return rng.choice(active)

    for _attempt in range(24):
        n = 1 + (rng.random() < 0.3) * (int(ctx.get("max_changes", 1)) - 1)
        names = list(dict.fromkeys(pick() for _ in range(n)))
        changes: dict[str, Any] = {}
        for name in names:
            spec, value = params[name], params[name]["value"]
            last = guided_dirs.get(name) or stats.get(name, {}).get("kept_direction")
            up = (last == "up") if last in ("up", "down") and rng.random() < 0.7 else rng.random() < 0.5
            new = _step(spec, value, up, scale, rng)
            if new != value:
                changes[name] = new
        if not changes:
            continue
        region = "+".join(f"{n}:{_direction(n, v, params[n]['value'])}" for n, v in sorted(changes.items()))
        if region in avoid_regions or any(region in line for line in feedback):
            continue
        if known(changes):
            continue
        words = ", ".join(f"{n} {params[n]['value']!r} → {v!r}" for n, v in changes.items())
        return {"changes": changes, "hypothesis": f"[offline stand-in] {strategy}: try {words}"}
    # every draw was avoided, measured or refused: any single step not known yet, over every active
    # parameter (those a mechanism asked to avoid too) and both directions, then two steps at once
    # (the nearest neighbours may all be measured already), before a blind random step
    moves = [(name, up) for name in ctx["active_params"] if name in params for up in (True, False)]
    rng.shuffle(moves)
    for steps, (name, up) in [(k, m) for k in (1, 2) for m in moves]:
        new = params[name]["value"]
        for _ in range(steps):
            new = _step(params[name], new, up, scale, rng)
        if new != params[name]["value"] and not known({name: new}):
            return {"changes": {name: new},
                    "hypothesis": f"[offline stand-in] every preferred move was avoided or measured; try {name} → {new!r}"}
    name = rng.choice(active)
    return {"changes": {name: _step(params[name], params[name]["value"], rng.random() < 0.5, scale, rng)},
            "hypothesis": "[offline stand-in] every preferred region is tabu; random step"}


def analyze(request: Any) -> dict[str, Any]:
    ctx = request.context
    stats, config = ctx["stats"], ctx["config"]
    per_param: dict[str, dict[str, Any]] = stats.get("per_param", {})
    active = list(config["active_params"])
    patch: dict[str, Any] = {"freeze": [], "unfreeze": [], "reason": ""}
    reasons = []
    untried: dict[str, list[str]] = ctx.get("untried", {})
    # never freeze a parameter with a direction not tried yet: it may be the one that helps
    dead = sorted((p for p in active if per_param.get(p, {}).get("tries", 0) >= 3 and per_param[p].get("keeps", 0) == 0
                   and not untried.get(p)), key=lambda p: -per_param[p]["tries"])
    room = max(0, len(active) - config.get("min_active", 3))
    patch["freeze"] = dead[: min(config.get("max_freeze_per_cycle", 2), room)]
    if patch["freeze"]:
        reasons.append(f"{', '.join(patch['freeze'])} tried repeatedly without a keep")
    plateau = stats.get("plateau", 0)
    if plateau >= 3 and config.get("frozen_params"):
        patch["unfreeze"] = list(config["frozen_params"])[:2]
        reasons.append(f"no keep in the last {plateau} trials: bring back frozen parameters")
    if stats.get("crash_rate", 0) > 0.3:
        patch["step_scale"] = max(0.25, config.get("step_scale", 1.0) * 0.5)
        reasons.append(f"crash rate {stats['crash_rate']:.0%}: smaller steps")
    fresh = [p for p in active if per_param.get(p, {}).get("tries", 0) == 0]
    halves = [f"{p}:{d[0]}" for p, d in untried.items() if p in active and p not in fresh and len(d) == 1]
    if stats.get("keeps", 0) > 0 and plateau < 3:
        # follow every direction that paid (not only the best parameter's: over-concentrating on one
        # knob leaves the others untuned), and keep exploring while some parameter is still untried
        # ... except where a move that way has already failed (an edge: a divergence, out of memory)
        paid = [f"{p}:{e['kept_direction']}" for p, e in sorted(per_param.items())
                if p in active and e.get("keeps", 0) > 0 and e.get("kept_direction") in ("up", "down")
                and e["kept_direction"] not in e.get("crashed_directions", ())]
        patch["strategy"] = "explore" if fresh else "exploit"
        # an untried direction is worth a try where that parameter has not paid yet (the other way
        # from a direction that paid is usually back downhill)
        open_halves = [h for h in halves if per_param.get(h.split(":")[0], {}).get("keeps", 0) == 0]
        parts = [f"Not tried yet: {', '.join(open_halves[:4])}." if open_halves else "",
                 f"Try parameters not yet explored: {', '.join(fresh[:4])}." if fresh else "",
                 f"Keeps came from moving {', '.join(paid)}: continue those directions." if paid else ""]
        patch["guidance"] = " ".join(p for p in parts if p)
        reasons.append("recent keeps: follow the directions that paid")
    else:
        patch["strategy"] = "explore"
        parts = [f"Try parameters not yet explored: {', '.join(fresh[:4])}." if fresh else "",
                 f"Not tried yet: {', '.join(halves[:4])}." if halves else ""]
        patch["guidance"] = " ".join(p for p in parts if p)
        reasons.append("no recent keeps: explore")
    if stats.get("repeats", 0) >= 2:
        reasons.append(f"{stats['repeats']} repeated regions")
    patch["reason"] = "[offline stand-in] " + "; ".join(reasons)
    return patch


def design(request: Any) -> dict[str, Any]:
    ctx, rng = request.context, request.rng
    diagnosis: dict[str, float] = ctx["diagnosis"]
    templates: dict[str, dict[str, Any]] = ctx["templates"]
    avoid = set(ctx.get("constraints", {}).get("avoid_regions", ()))
    avoid.update(f"template:{t}" for t in ctx.get("rejected_templates", ()))
    for line in ctx.get("feedback", ()):
        for name in templates:
            if f"template:{name}" in line:
                avoid.add(f"template:{name}")

    evidence = {t: templates[t].get("evidence") or {} for t in templates}
    helped = {t for t, e in evidence.items() if float(e.get("delta_regret", 0.0)) < 0
              and e.get("won", 0) > e.get("lost", 0) and float(e.get("p_sign", 1.0)) < EVIDENCE_P}

    def rank(t: str) -> tuple[bool, float, float, str]:
        severity = diagnosis.get(templates[t]["addresses"], 0.0)
        delta = float(evidence[t].get("delta_regret", 0.0))
        if t in helped:  # the measured gain, up to doubled when it addresses the diagnosed bottleneck
            return (False, delta * (1.0 + severity), -severity, t)
        return (True, -severity, delta, t)

    ranked = sorted(templates, key=rank)
    choices = [t for t in ranked if f"template:{t}" not in avoid] or ranked
    name = choices[0] if rng.random() < 0.85 or len(choices) == 1 else choices[1]
    defaults = dict(templates[name].get("default_params", {}))
    budget = int(ctx.get("inner_budget", 5))
    tuned = {k: v for k, v in defaults.items()}
    for key, value in defaults.items():
        if key in ("tenure", "patience", "window") and isinstance(value, int):
            tuned[key] = max(2, min(value, budget + 1))
    why = templates[name]["addresses"]
    top = max(diagnosis, key=lambda k: (diagnosis[k], k)) if diagnosis else why
    mine = evidence[name]
    if name in helped:
        reason = (f"measured to help (Δregret {mine['delta_regret']:+.4f}, won/lost {mine['won']}/"
                  f"{mine['lost']}); it addresses '{why}' ({diagnosis.get(why, 0):.2f})")
    else:
        shown = f", measured Δregret {mine['delta_regret']:+.4f}" if mine else ", not measured"
        reason = f"it addresses '{why}' ({diagnosis.get(why, 0):.2f}){shown}"
    return {"template": name, "params": tuned, "source": None,
            "rationale": f"[offline stand-in] template {name}: {reason}; most severe bottleneck '{top}' "
                         f"({diagnosis.get(top, 0):.2f})"}


def register() -> None:
    register_offline_handler(PURPOSE_PROPOSE, propose, replace=True)
    register_offline_handler(PURPOSE_ANALYZE, analyze, replace=True)
    register_offline_handler(PURPOSE_DESIGN, design, replace=True)
