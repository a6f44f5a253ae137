"""Offline stand-in handlers for script_opt: simple, documented rules — **not an LLM**.

* propose: one active constant not tried without a keep in its last few tries — preferring those the
  guidance names (Level 1.5's and the mechanisms' text, ``NAME:up``/``NAME:down`` setting the
  direction) and the preferred ones — moved up or down by a factor that grows with the step scale
  (ints by at least 1, bools flipped); the direction follows the guidance, else the last kept move of
  that constant, else a coin; never a configuration already measured (``measured``, or a
  ``duplicate:`` refusal in the feedback);
* analyze: freeze constants tried at least twice this cycle without a keep, never one with a
  direction not tried yet (``untried``); exploit (smaller steps) after a cycle with keeps, explore
  (larger steps) after one without, naming the untried directions in the guidance;
* design: the library template addressing the largest diagnosed weakness, among those not tried yet.

Every draw comes from the request's seeded ``rng``, so the same seed gives the same run.
"""

from __future__ import annotations

from typing import Any

from core.llm.offline import read_guidance
from core.llm_client import register_offline_handler
from core.mechanisms import TEMPLATES
from core.records import canonical_json
from domains.script_opt.levels import PURPOSE_ANALYZE, PURPOSE_DESIGN
from domains.script_opt.runner import PURPOSE_PROPOSE


def _move(value: Any, kind: str, up: bool, scale: float, rng: Any) -> Any:
    if kind == "bool":
        return not value
    factor = 1.0 + 0.5 * scale * rng.uniform(0.5, 1.5)
    if kind == "int":
        step = max(1, round(abs(value) * (factor - 1.0)))
        return value + step if up else value - step
    if value == 0:
        return 0.1 * scale if up else -0.1 * scale
    new = value * factor if (up == (value > 0)) else value / factor
    return float(f"{new:.4g}")


def propose(request: Any) -> dict[str, Any]:
    ctx, rng = request.context, request.rng
    constants = ctx["constants"]
    history = ctx.get("history", [])
    recent_bad = {n for h in history[-4:] if h["status"] != "keep" for n in h["changes"]}
    avoid = {region.split(":")[0] for region in ctx.get("avoid_regions", [])}
    names = sorted(constants)
    guided, directions = read_guidance(str(ctx.get("guidance") or ""), names)
    wished = [n for n in dict.fromkeys([*ctx.get("prefer", ()), *guided]) if n in constants]
    fresh = [n for n in names if n not in recent_bad and n not in avoid] or names
    measured = {canonical_json(m) for m in ctx.get("measured", ())}
    refused = [line for line in ctx.get("feedback", ()) if line.startswith(("duplicate:", "infeasible:"))]
    scale = float(ctx.get("step_scale", 1.0))
    for attempt in range(12):
        pool = [n for n in wished if n not in avoid] if wished and rng.random() < 0.7 else fresh
        name = rng.choice(pool or fresh)
        kept = [h["changes"][name] for h in history if h["status"] == "keep" and name in h["changes"]]
        value = constants[name]["value"]
        if name in directions and not isinstance(value, bool):
            up = directions[name] == "up"
        elif kept and not isinstance(value, bool) and kept[-1] != value:
            up = kept[-1] > value
        else:
            up = rng.random() < 0.5
        new = _move(value, constants[name]["kind"], up, scale * (1 + attempt // 4), rng)
        key = canonical_json({name: new})
        if key not in measured and not any(key in line for line in refused):
            break  # not measured yet (after 12 tries the controller refuses it and asks again)
    return {"changes": {name: new},
            "hypothesis": f"[offline stand-in] move {name} {'up' if up else 'down'} from {value!r}"}


def analyze(request: Any) -> dict[str, Any]:
    ctx = request.context
    config, cycle_stats = ctx["config"], ctx["cycle_stats"]
    keeps = sum(s["keeps"] for s in cycle_stats.values())
    room = len(config["active_params"]) - config["min_active"]
    untried = ctx.get("untried", {})
    failing = sorted(n for n, s in cycle_stats.items() if s["tries"] >= 2 and s["keeps"] == 0
                     and n in config["active_params"] and not untried.get(n))
    freeze = failing[: max(0, min(config["max_freeze_per_cycle"], room))]
    unfreeze = list(config["frozen_params"][:1]) if not freeze and not keeps else []
    strategy = "exploit" if keeps else "explore"
    halves = [f"{n}:{d[0]}" for n, d in untried.items() if len(d) == 1]  # one direction tried, the other not
    return {"freeze": freeze, "unfreeze": unfreeze, "strategy": strategy,
            "step_scale": 0.5 if keeps else 1.5, "max_changes": 1,
            "guidance": "Refine around the incumbent." if keeps else " ".join(
                ["Try constants not tried yet."] + ([f"Not tried yet: {', '.join(halves[:4])}."] if halves else [])),
            "reason": f"[offline stand-in] {keeps} keep(s) last cycle; freeze {freeze or 'none'}"}


def design(request: Any) -> dict[str, Any]:
    ctx = request.context
    tried = {t["region"] for t in ctx.get("tried", [])} | set(ctx.get("avoid", []))
    diagnosis = ctx.get("diagnosis", {})
    order = sorted(TEMPLATES, key=lambda t: (-diagnosis.get(TEMPLATES[t]["addresses"], 0.0), t))
    name = next((t for t in order if f"template:{t}" not in tried), order[0])
    return {"template": name, "params": {}, "source": None,
            "rationale": f"[offline stand-in] template {name} addresses '{TEMPLATES[name]['addresses']}' "
                         f"({diagnosis.get(TEMPLATES[name]['addresses'], 0.0):.2f})"}


def register() -> None:
    register_offline_handler(PURPOSE_PROPOSE, propose, replace=True)
    register_offline_handler(PURPOSE_ANALYZE, analyze, replace=True)
    register_offline_handler(PURPOSE_DESIGN, design, replace=True)
