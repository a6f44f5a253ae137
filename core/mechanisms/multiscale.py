"""Multi-scale bandit: UCB1 over (parameter, step size) arms — which knob, and how far to turn it.

Diagnosis it addresses — *scale*: the search moves every parameter by about the same amount, so it
either overshoots where a fine move is needed or crawls where a large one would pay; a bandit over
parameters alone (the ``bandit`` template) cannot learn *how far* to move.

How: every parameter has two arms, a ``small`` and a ``large`` move (in steps: a doubling on a log
scale, an eighth of the range on a linear one); a choice or bool parameter has one arm, ``set``.
Every finished one-parameter record of the history pulls the arm it matches — its move's size,
measured from the incumbent it started from, is classed small or large by the geometric midpoint —
and earns 1 if kept, else 0; crashes count as pulls without reward. Arms are ranked by
``mean + exploration * sqrt(ln(total pulls) / pulls)``, an untried arm first, ties broken by a
draw from ``ctx.seed`` (never by file order).

``mode="propose"``: ``propose`` moves the best arm's parameter by its size from the incumbent, in
the direction of its last kept move, else away from its last failed one (else a direction drawn
from ``ctx.seed``), skipping measured
configurations and falling through to the next arm; ``None`` when no arm can move. With ``every``
> 1 it proposes on every ``every``-th iteration only. ``mode="guidance"``: ``guidance`` hands the
best arm to the proposer instead (``Constraints.prefer_params`` and ``step_scale``, plus a line of
text), and ``propose`` stays silent — for an LLM proposer that should keep the pen.

The space is the ``space`` parameter (JSON, as for the surrogate template) or
``ctx.search["params"]``; without one the mechanism does nothing. Stateless: recomputed from
``ctx.history`` each call.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

import math
import random
from typing import Any

from core.mechanism import Mechanism, ParamSpace, merge_params, tie_break
from core.records import Constraints, Guidance, Proposal, ProposalContext, Status

PARAMS = {
    "space": "",  # JSON of the parameter space; "" = ctx.search["params"] (none: do nothing)
    "small": 0.5,  # size of a small move, in steps
    "large": 2.0,  # size of a large move, in steps
    "exploration": 1.0,  # UCB1 exploration weight
    "mode": "propose",  # "propose": supply the candidate; "guidance": prefer the arm's parameter and scale
    "every": 1,  # propose on every `every`-th iteration; the others are left to the proposer
}

_MODES = ("propose", "guidance")
_FAILED = (Status.CRASH, Status.FAIL, Status.TIMEOUT)


class MultiScaleBanditMechanism(Mechanism):
    """UCB1 over (parameter × small/large move) arms."""

    name = "multiscale"
    description = ("Multi-scale bandit: UCB1 over (parameter, small/large step) arms; proposes (or prefers) "
                   "the best arm's move, with seeded tie-breaks.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if not 0 < merged["small"] < merged["large"]:
            raise ValueError("parameters must satisfy 0 < small < large")
        if merged["exploration"] < 0:
            raise ValueError("parameter 'exploration' must be >= 0")
        if merged["mode"] not in _MODES:
            raise ValueError(f"parameter 'mode' must be one of {list(_MODES)}, got {merged['mode']!r}")
        if merged["every"] < 1:
            raise ValueError("parameter 'every' must be >= 1")
        super().__init__(**merged)
        ParamSpace.of(merged["space"])  # a malformed space fails here, not at the first proposal

    def _arm(self, space: ParamSpace, name: str, old: Any, new: Any) -> str:
        if space.dims[name]["kind"] in ("choice", "bool"):
            return "set"
        size = abs(space.coordinate(name, new) - space.coordinate(name, old))
        return "small" if size < math.sqrt(self.params["small"] * self.params["large"]) else "large"

    def ranking(self, space: ParamSpace, ctx: ProposalContext) -> list[tuple[str, str, float, int, float]]:
        """Arms as ``(parameter, "small"|"large"|"set", ucb, pulls, reward)``, best first."""
        names = space.names(ctx)
        pulls: dict[tuple[str, str], int] = {}
        rewards: dict[tuple[str, str], float] = {}
        for name in names:
            for size in (("set",) if space.dims[name]["kind"] in ("choice", "bool") else ("small", "large")):
                pulls[(name, size)] = 0
                rewards[(name, size)] = 0.0
        for before, config, record in space.walk(ctx.history):
            moved = [n for n in space.dims if config[n] != before[n]]
            if len(moved) != 1 or not (record.finished_ok or record.status in _FAILED):
                continue
            arm = (moved[0], self._arm(space, moved[0], before[moved[0]], config[moved[0]]))
            if arm in pulls:
                pulls[arm] += 1
                rewards[arm] += 1.0 if record.kept else 0.0
        total = max(1, sum(pulls.values()))
        chance = tie_break([f"{n}/{s}" for n, s in pulls], ctx.seed)
        ranked = []
        for (name, size), n in pulls.items():
            ucb = math.inf if n == 0 else round(
                rewards[(name, size)] / n + self.params["exploration"] * math.sqrt(math.log(total) / n), 12)
            ranked.append((name, size, ucb, n, rewards[(name, size)]))
        ranked.sort(key=lambda a: (-a[2], chance[f"{a[0]}/{a[1]}"]))
        return ranked

    def _direction(self, space: ParamSpace, ctx: ProposalContext, name: str) -> float:
        """The way the evidence on ``name`` points: its last kept move's, else away from its last
        failed move, else a draw from ``ctx.seed``."""
        moves = [(config[name] > before[name], record.kept) for before, config, record in space.walk(ctx.history)
                 if config[name] != before[name] and space.dims[name]["kind"] not in ("choice", "bool")]
        kept = [up for up, k in moves if k]
        if kept:
            return 1.0 if kept[-1] else -1.0
        if moves:
            return -1.0 if moves[-1][0] else 1.0
        return 1.0 if random.Random(f"{ctx.seed}:{name}").random() < 0.5 else -1.0

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        space = ParamSpace.of(self.params["space"], ctx)
        if self.params["mode"] != "guidance" or space is None:
            return None
        ranked = self.ranking(space, ctx)
        if not ranked:
            return None
        name, size, ucb, n, reward = ranked[0]
        tried = "untried" if n == 0 else f"kept {reward:g} of {n}, ucb {ucb:.2f}"
        if size == "set":
            return Guidance(text=f"Multi-scale bandit: the most promising move is another option of {name} ({tried}).",
                            constraints=Constraints(prefer_params=(name,)))
        scale = self.params[size]
        way = "up" if self._direction(space, ctx, name) > 0 else "down"
        text = (f"Multi-scale bandit: the most promising move is a {size} change of {name} ({tried}): "
                f"move {name} {way} by about {scale:g} step(s).")
        other = f"{name}:{'down' if way == 'up' else 'up'}"
        return Guidance(text=text, constraints=Constraints(prefer_params=(name,), step_scale=scale,
                                                           avoid_regions=(other,)))

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        space = ParamSpace.of(self.params["space"], ctx)
        if self.params["mode"] != "propose" or space is None or ctx.iteration % self.params["every"]:
            return None
        current = space.incumbent(ctx.history)
        seen = space.measured(ctx)
        rng = random.Random(ctx.seed)
        for name, size, ucb, n, reward in self.ranking(space, ctx):
            sign = self._direction(space, ctx, name)
            for way in (sign, -sign):
                new = space.move(name, current[name], way * self.params.get(size, 1.0), rng)
                if new == current[name] or space.key({**current, name: new}) in seen:
                    continue
                tried = "untried" if n == 0 else f"kept {reward:g} of {n}"
                return space.proposal(current, {name: new}, f"[multiscale] {size} move of {name}: "
                                                            f"{current[name]!r} → {new!r} (arm {tried}, ucb {ucb:.3g})")
        return None
