"""Orthogonal exploration: after a run of failures in one corner, move to untouched parameters.

Diagnosis it addresses — *narrow*: the search concentrates on a few parameters (or, at Level 2, a
few templates) and keeps failing there while others are never tried.

How: look at the last ``patience`` finished, non-baseline records. When none of them was kept and
their proposals form one overlapping cluster (each touches a parameter that another one also
touches), the union of what they touched is *over-explored*. Then, and only while some parameter
outside that set exists (from ``ctx.search["active_params"]``, else everything the history ever
touched):

- ``guidance`` prefers those untried parameters, least recently touched first
  (``Constraints.prefer_params`` plus a line of text);
- ``filter`` rejects — never rewrites — a candidate that touches only over-explored parameters,
  with a reason listing the untried ones. A candidate that adds a fresh parameter passes.

What a proposal touched is read from its region: ``NAME:DIRECTION`` parts give NAME (DIRECTION in
up/down/set), any other part is a discrete choice taken whole (Level 2's ``"template:tabu"``); no
region falls back to the ``changes`` keys. Stateless: recomputed from ``ctx.history`` each call.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

from typing import Any

from core.mechanism import Mechanism, merge_params, touched
from core.records import Constraints, FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

PARAMS = {
    "patience": 3,  # failed, overlapping proposals in a row before the search is called narrow
    "max_listed": 6,  # at most this many untried parameters are named in text and reasons
}


def _one_cluster(groups: list[set[str]]) -> bool:
    """True when the sets are connected through shared members (a chain A, A+B, B counts)."""
    reached = set(groups[0])
    pending = list(groups[1:])
    grew = True
    while pending and grew:
        grew = False
        for group in list(pending):
            if group & reached:
                reached |= group
                pending.remove(group)
                grew = True
    return not pending


class OrthogonalExplorationMechanism(Mechanism):
    """Steers away from an over-explored set of parameters once it stops paying."""

    name = "orthogonal"
    description = ("Orthogonal exploration: after `patience` failed proposals on overlapping parameters, "
                   "prefer untouched parameters and reject candidates that stay inside the over-explored set.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if merged["patience"] < 1:
            raise ValueError("parameter 'patience' must be >= 1")
        if merged["max_listed"] < 1:
            raise ValueError("parameter 'max_listed' must be >= 1")
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
        groups = [set(touched(r.proposal)) for r in window]
        if not all(groups) or not _one_cluster(groups):
            return set(), []
        crowded = set().union(*groups)
        last_touched: dict[str, int] = {}
        for record in records:
            for item in touched(record.proposal):
                last_touched[item] = record.iteration
        candidates = [str(p) for p in ctx.search.get("active_params", []) or []] or list(last_touched)
        untried = [p for p in dict.fromkeys(candidates) if p not in crowded]
        untried.sort(key=lambda p: last_touched.get(p, -1))  # never touched (-1) first; stable otherwise
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
        crowded, untried = self.diagnose(ctx)
        moved = touched(proposal)
        if not untried or not moved or not set(moved) <= crowded:
            return None
        return FilterVerdict.reject(
            f"{'+'.join(moved)} stays inside the over-explored set ({', '.join(sorted(crowded))}), "
            f"which failed {self.params['patience']} times in a row; try an untried parameter: "
            f"{', '.join(untried[: self.params['max_listed']])}"
        )
