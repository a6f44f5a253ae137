"""Orthogonal exploration: after a run of failures in one corner, move to untouched parameters.

Diagnosis it addresses — *narrow*: the search concentrates on a few parameters (or, at Level 2, a
few templates) and keeps failing there while others are left alone.

How: look at the last ``patience`` finished, non-baseline records. The search is *circling* when
none of them was kept and they revisited what they touched — they name fewer distinct parameters
than there were proposals (with one-parameter proposals: some parameter was tried at least twice
in the window; ``LR:up, LR:down, WD:up`` circles, ``LR, WD, DEPTH`` does not). The union of what
they touched is then *over-explored*. Then, and only while some parameter outside that set exists
(from ``ctx.search["active_params"]``, else everything the history ever touched):

- ``guidance`` prefers those other parameters, least recently touched first, ties (e.g. never
  touched) broken by a draw from ``ctx.seed`` rather than by file order
  (``Constraints.prefer_params`` plus a line of text);
- ``filter`` rejects — never rewrites — a candidate that touches only over-explored parameters,
  with a reason listing the others. A candidate that adds a fresh parameter passes. It refuses at
  most ``max_refusals`` candidates per iteration: a proposer that insists after being told gets its
  candidate run, rather than the iteration being lost to a REJECTED record (on a three-parameter
  target an unlimited filter lost a third of the trial budget that way).

(An earlier rule also required the window's proposals to overlap pairwise; with one-parameter
proposals that meant three failures on the *same* parameter in a row, which practically never
happened, so the mechanism was called every iteration and changed nothing.)

What a proposal touched is read from its region: ``NAME:DIRECTION`` parts give NAME (DIRECTION in
up/down/set), any other part is a discrete choice taken whole (Level 2's ``"template:tabu"``); no
region falls back to the ``changes`` keys. Stateless: recomputed from ``ctx.history`` each call.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

from typing import Any

from core.mechanism import Mechanism, merge_params, tie_break, touched
from core.records import Constraints, FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

PARAMS = {
    "patience": 3,  # failed proposals in a row, revisiting what they touched, before the search is called narrow
    "max_listed": 6,  # at most this many untried parameters are named in text and reasons
    "max_refusals": 1,  # candidates refused per iteration at most; then the proposer's choice runs (0 = no limit)
}


class OrthogonalExplorationMechanism(Mechanism):
    """Steers away from an over-explored set of parameters once it stops paying."""

    name = "orthogonal"
    description = ("Orthogonal exploration: after `patience` failed proposals that revisit the same parameters, "
                   "prefer the other parameters and reject candidates that stay inside the over-explored set.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if merged["patience"] < 2:
            raise ValueError("parameter 'patience' must be >= 2 (one proposal cannot revisit anything)")
        if merged["max_listed"] < 1:
            raise ValueError("parameter 'max_listed' must be >= 1")
        if merged["max_refusals"] < 0:
            raise ValueError("parameter 'max_refusals' must be >= 0 (0 = no limit)")
        super().__init__(**merged)

    def diagnose(self, ctx: ProposalContext) -> tuple[set[str], list[str]]:
        """``(over-explored set, untried parameters least recently touched first)``; both empty
        when the search is not narrow or nothing else is left to try."""
        records: list[TrialRecord] = [
            r for r in ctx.history if r.proposal is not None and not r.proposal.is_baseline
        ]
        window = records[-self.params["patience"]:]
        if len(window) < self.params["patience"] or any(r.kept for r in window):
            return set(), []
        groups = [touched(r.proposal) for r in window]
        crowded = set().union(*groups)
        if not all(groups) or len(crowded) >= sum(len(g) for g in groups):
            return set(), []  # every proposal in the window touched something new: not circling
        last_touched: dict[str, int] = {}
        for record in records:
            for item in touched(record.proposal):
                last_touched[item] = record.iteration
        candidates = [str(p) for p in ctx.search.get("active_params", []) or []] or list(last_touched)
        untried = [p for p in dict.fromkeys(candidates) if p not in crowded]
        chance = tie_break(untried, ctx.seed)
        untried.sort(key=lambda p: (last_touched.get(p, -1), chance[p]))  # never touched (-1) first
        if not untried:
            return set(), []
        return crowded, untried

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        crowded, untried = self.diagnose(ctx)
        if not untried:
            return None
        text = (f"The last {self.params['patience']} proposals all circled {', '.join(sorted(crowded))} "
                f"without a keep. Move to a parameter not touched recently: "
                f"{', '.join(untried[: self.params['max_listed']])}.")
        return Guidance(text=text, constraints=Constraints(prefer_params=tuple(untried)))

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        limit = self.params["max_refusals"]
        if limit and sum("stays inside the over-explored set" in line for line in ctx.feedback) >= limit:
            return None  # told already this iteration: the proposer's insistence wins over a lost iteration
        crowded, untried = self.diagnose(ctx)
        moved = touched(proposal)
        if not untried or not moved or not set(moved) <= crowded:
            return None
        return FilterVerdict.reject(
            f"{'+'.join(moved)} stays inside the over-explored set ({', '.join(sorted(crowded))}), "
            f"which failed {self.params['patience']} times in a row; try an untried parameter: "
            f"{', '.join(untried[: self.params['max_listed']])}"
        )
