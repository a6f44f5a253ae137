"""UCB1 bandit: spend the next tries on the parameters that have paid.

Diagnosis it addresses — *plateau*: no keep for a while, and the proposer spreads its tries evenly
(or at random) instead of returning to the parameters whose moves were kept.

How: every parameter is an arm. An arm is pulled whenever a finished, non-baseline record's
proposal touched it; its reward is 1 for a keep and 0 otherwise (``reward="improvement"``: the
kept relative gain divided by ``gain_scale``, capped at 1). ``guidance`` ranks the arms by UCB1,
``mean + exploration * sqrt(ln(total pulls) / pulls)``, an untried arm counting as infinitely
promising, and prefers the ``top_k`` best (``Constraints.prefer_params`` plus a line of text).
Ties (every untried arm, arms with equal records) are broken by a draw from ``ctx.seed``, never by
the order the parameters appear in the file: a file-order preference would make the bandit's wins a
confound of where a constant happens to be written.

Arms: the parameters a proposal touched are read from its region, ``"+"``-joined parts of the form
``NAME:DIRECTION`` (DIRECTION in up/down/set, e.g. ``"DEPTH:down+MATRIX_LR:up"`` → DEPTH,
MATRIX_LR); a part whose qualifier is not a direction names a discrete choice and is its own arm
(Level 2's ``"template:tabu"``). A proposal without a region falls back to its ``changes`` keys.
``ctx.search["active_params"]``, when present, adds arms that were never tried. So the same code
ranks hyperparameters at Level 1 and mechanism templates at Level 2.

Stateless: everything is recomputed from ``ctx.history`` (and the tie-breaks from ``ctx.seed``) on
each call, so resume needs nothing.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

import math
from typing import Any

from core.mechanism import Mechanism, merge_params, tie_break, touched
from core.records import Constraints, Guidance, ProposalContext, TrialRecord

PARAMS = {
    "top_k": 2,  # how many arms are preferred each iteration
    "exploration": 1.4,  # UCB1 exploration weight (sqrt(2) is the textbook value)
    "reward": "keep",  # "keep": 1 per keep; "improvement": kept relative gain / gain_scale, capped at 1
    "gain_scale": 0.01,  # relative gain that earns a full reward when reward="improvement"
    "window": 0,  # only the last `window` records count (0 = the whole history)
}

_REWARDS = ("keep", "improvement")


def _reward(record: TrialRecord, ctx: ProposalContext, mode: str, gain_scale: float) -> float:
    if not record.kept:
        return 0.0
    if mode == "keep" or record.score is None or record.best_before is None:
        return 1.0
    gain = record.best_before - record.score if ctx.direction == "minimize" else record.score - record.best_before
    relative = gain / max(abs(record.best_before), 1e-12)
    return min(1.0, max(0.0, relative / gain_scale))


class BanditMechanism(Mechanism):
    """Prefers the parameters with the best upper confidence bound on their keep rate."""

    name = "bandit"
    description = "UCB1 over parameters: prefer the top_k arms by keep rate plus an exploration bonus."

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if merged["top_k"] < 1:
            raise ValueError("parameter 'top_k' must be >= 1")
        if merged["exploration"] < 0:
            raise ValueError("parameter 'exploration' must be >= 0")
        if merged["reward"] not in _REWARDS:
            raise ValueError(f"parameter 'reward' must be one of {list(_REWARDS)}, got {merged['reward']!r}")
        if merged["gain_scale"] <= 0:
            raise ValueError("parameter 'gain_scale' must be > 0")
        if merged["window"] < 0:
            raise ValueError("parameter 'window' must be >= 0 (0 = whole history)")
        super().__init__(**merged)

    def ranking(self, ctx: ProposalContext) -> list[tuple[str, float, int, float]]:
        """Arms as ``(name, ucb, pulls, total reward)``, best first; untried arms (ucb = inf) lead;
        ties are broken by a draw from ``ctx.seed`` (see the module docstring)."""
        pulls: dict[str, int] = {}
        rewards: dict[str, float] = {}
        for name in ctx.search.get("active_params", []) or []:
            pulls.setdefault(str(name), 0)
            rewards.setdefault(str(name), 0.0)
        records = [r for r in ctx.history if r.proposal is not None and not r.proposal.is_baseline]
        if self.params["window"]:
            records = records[-self.params["window"]:]
        for record in records:
            reward = _reward(record, ctx, self.params["reward"], self.params["gain_scale"])
            for arm in touched(record.proposal):
                pulls[arm] = pulls.get(arm, 0) + 1
                rewards[arm] = rewards.get(arm, 0.0) + reward
        total = sum(pulls.values())
        chance = tie_break(list(pulls), ctx.seed)
        ranked = []
        for arm, n in pulls.items():
            if n == 0:
                ucb = math.inf
            else:
                ucb = rewards[arm] / n + self.params["exploration"] * math.sqrt(math.log(max(total, 1)) / n)
            ranked.append((arm, round(ucb, 12) if n else ucb, n, rewards[arm]))
        ranked.sort(key=lambda item: (-item[1], chance[item[0]]))
        return ranked

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        ranked = self.ranking(ctx)
        if not ranked:
            return None
        top = ranked[: self.params["top_k"]]
        parts = []
        for arm, ucb, n, reward in top:
            if n == 0:
                parts.append(f"{arm} (untried)")
            else:
                parts.append(f"{arm} (reward {reward:g}/{n} tries, ucb {ucb:.2f})")
        text = ("Bandit (UCB1 over parameters): spend the next tries on " + ", ".join(parts)
                + "; untried arms first, then those whose moves were kept most often.")
        return Guidance(text=text, constraints=Constraints(prefer_params=tuple(arm for arm, _, _, _ in top)))
