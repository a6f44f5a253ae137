"""Coordinate (pattern) search with adaptive step sizes, as a proposer.

Diagnosis it addresses — *drift*: the proposer's moves have no memory — it tries a direction, drops
it, comes back to it later, and never follows a direction that paid — so a simple compass search
(move one parameter, keep what helps, halve the step where both directions fail) beats it.

How: each parameter has a step (``start_step`` steps; a step is a doubling on a log scale and an
eighth of the range on a linear one). Read from the whole history — the proposer's trials count as
evidence too — a one-parameter move that was kept grows that parameter's step (× ``grow``, at most
``max_step``) and is repeated at once in the same direction (the *pattern move*); a pattern move
that fails takes the growth back. A move that was not kept marks its direction tried from the
current incumbent; when both directions of a parameter have been tried without a keep its step
shrinks (× ``shrink``). A parameter whose step fell below ``min_step`` rests until the incumbent
moves again. Every keep clears the tried marks: from a new incumbent every direction is worth a
try again.

``propose`` makes the next move: the pattern move if the last keep left one; else the other
direction of a parameter whose first direction just failed; else an untried direction of the
parameter moved least recently (a sweep over the coordinates; ties broken by a draw from
``ctx.seed``, never by file order) — the direction that was last kept for it first, or the one
opposite to its last failure — skipping configurations already measured. When every
parameter rests it returns ``None`` and the proposer is asked instead. A choice or bool parameter
has one direction, ``set`` (another option). With ``every`` > 1 it proposes on every ``every``-th
iteration only.

The space is the ``space`` parameter (JSON, as for the surrogate template) or
``ctx.search["params"]``; without one the mechanism defers to the proposer. Stateless: the steps
are recomputed from ``ctx.history`` each call, so resume needs nothing.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

import random
from typing import Any

from core.mechanism import Mechanism, ParamSpace, merge_params, tie_break
from core.records import Proposal, ProposalContext, Status

PARAMS = {
    "space": "",  # JSON of the parameter space; "" = ctx.search["params"] (none: defer to the proposer)
    "start_step": 1.0,  # initial step of every parameter, in steps
    "grow": 2.0,  # step factor after a kept move on that parameter (>= 1)
    "shrink": 0.5,  # step factor once both directions failed (< 1)
    "min_step": 0.25,  # below this a parameter rests until the incumbent moves
    "max_step": 4.0,  # steps never grow beyond this
    "every": 1,  # propose on every `every`-th iteration; the others are left to the proposer
}


class PatternSearchMechanism(Mechanism):
    """Compass search around the incumbent: follow what paid, halve the step where nothing does."""

    name = "pattern"
    description = ("Coordinate/pattern search with adaptive steps: repeat a kept move with a larger step, "
                   "try each parameter's untried direction, halve a step when both directions failed.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if not 0 < merged["min_step"] <= merged["start_step"] <= merged["max_step"]:
            raise ValueError("parameters must satisfy 0 < min_step <= start_step <= max_step")
        if merged["grow"] < 1:
            raise ValueError("parameter 'grow' must be >= 1")
        if not 0 < merged["shrink"] < 1:
            raise ValueError("parameter 'shrink' must be in (0, 1)")
        if merged["every"] < 1:
            raise ValueError("parameter 'every' must be >= 1")
        super().__init__(**merged)
        ParamSpace.of(merged["space"])  # a malformed space fails here, not at the first proposal

    def state(self, space: ParamSpace, ctx: ProposalContext) -> tuple[dict[str, float], dict[str, set[str]], tuple[str, str] | None]:
        """``(step per parameter, directions tried from the incumbent, pattern move or None)``."""
        steps, tried, pattern, _ = self._state(space, ctx)
        return steps, tried, pattern

    def _state(self, space: ParamSpace, ctx: ProposalContext):
        p = self.params
        steps = {name: p["start_step"] for name in space.dims}
        tried: dict[str, set[str]] = {name: set() for name in space.dims}
        last: dict[str, int] = {name: -1 for name in space.dims}  # when each parameter last moved
        lean: dict[str, str] = {}  # the direction each parameter's evidence points to
        pattern: tuple[str, str] | None = None
        for index, (before, config, record) in enumerate(space.walk(ctx.history)):
            moved = [n for n in space.dims if config[n] != before[n]]
            for name in moved:
                last[name] = index
            if record.status is Status.KEEP:
                for name in space.dims:
                    tried[name].clear()
                    if steps[name] < p["min_step"]:
                        steps[name] = p["min_step"]  # a resting parameter gets another chance from here
                pattern = None
                if len(moved) == 1:
                    name = moved[0]
                    steps[name] = min(p["max_step"], steps[name] * p["grow"])
                    pattern = (name, _direction(space, name, before[name], config[name]))
                    lean[name] = pattern[1]
                continue
            if len(moved) != 1:
                continue
            name = moved[0]
            way = _direction(space, name, before[name], config[name])
            tried[name].add(way)
            lean[name] = {"up": "down", "down": "up"}.get(way, way)
            if pattern == (name, way):
                pattern = None
                steps[name] = max(p["start_step"], steps[name] / p["grow"])  # the larger step did not pay
            if tried[name] >= _ways(space, name):
                steps[name] *= p["shrink"]
                tried[name].clear()
        return steps, tried, pattern, (last, lean)

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        space = ParamSpace.of(self.params["space"], ctx)
        if space is None or ctx.iteration % self.params["every"]:
            return None
        names = space.names(ctx)
        if not names:
            return None
        steps, tried, pattern, (last, lean) = self._state(space, ctx)
        current = space.incumbent(ctx.history)
        seen = space.measured(ctx)
        rng = random.Random(ctx.seed)
        scale = ctx.guidance.constraints.step_scale or 1.0
        chance = tie_break(names, ctx.seed)
        options: list[tuple[str, str, str]] = []
        if pattern is not None and pattern[0] in names:
            options.append((pattern[0], pattern[1], "pattern move: repeat the kept move with a larger step"))
        # a half-tried parameter first (finish its pair), then the least recently moved one
        for name in sorted(names, key=lambda n: (not tried[n], last[n], chance[n])):
            if steps[name] < self.params["min_step"]:
                continue
            ways = sorted(_ways(space, name) - tried[name])
            random.Random(f"{ctx.seed}:{name}").shuffle(ways)  # no evidence: chance decides, not habit
            ways.sort(key=lambda w: w != lean.get(name))
            options += [(name, way, "untried direction from the incumbent") for way in ways]
        for name, way, why in options:
            sign = -1.0 if way == "down" else 1.0
            new = space.move(name, current[name], sign * steps[name] * scale, rng)
            changes = {name: new}
            if new == current[name] or space.key({**current, **changes}) in seen:
                continue
            return space.proposal(current, changes, f"[pattern] {name} {current[name]!r} → {new!r} "
                                                    f"(step {steps[name]:g}; {why})")
        return None


def _ways(space: ParamSpace, name: str) -> set[str]:
    return {"set"} if space.dims[name]["kind"] in ("choice", "bool") else {"up", "down"}


def _direction(space: ParamSpace, name: str, old: Any, new: Any) -> str:
    if space.dims[name]["kind"] in ("choice", "bool"):
        return "set"
    return "up" if new > old else "down"
