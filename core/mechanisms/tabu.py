"""Tabu list: do not re-propose a region that just failed to pay.

Diagnosis it addresses — *repeats*: the search keeps proposing the same region (``MATRIX_LR:down``
at Level 1, ``template:bandit`` at Level 2) although its last try was discarded or crashed.

How: every finished record whose status is not ``keep`` makes its region tabu for ``tenure``
iterations. ``guidance`` lists the tabu regions (``Constraints.avoid_regions`` plus a line of text);
``filter`` rejects a candidate whose region is tabu, with a reason naming the region and the
iteration it was tried, so the proposer is re-asked with that reason. A region kept within the
same window is never tabu: a region that paid recently deserves another look.

Works on any loop: it keys only on ``Proposal.region`` (or ``Proposal.key()`` when the region is
empty), ``TrialRecord.status`` and ``TrialRecord.iteration``. State comes from ``observe`` and is
rebuilt by ``replay`` on resume.

This module is also a Level-2 template: the designer renders it with new ``PARAMS`` and hot-loads
the result, so it imports only ``core.mechanism``, ``core.records`` and allow-listed stdlib modules.
"""

from typing import Any

from core.mechanism import Mechanism, merge_params
from core.records import Constraints, FilterVerdict, Guidance, Proposal, ProposalContext, Status, TrialRecord

PARAMS = {
    "tenure": 8,  # iterations a region stays tabu after a non-kept try
    "tabu_discards": True,  # False: only crashes, failures, timeouts and rejections make a region tabu
    "max_listed": 6,  # at most this many tabu regions are named in the guidance text
}

_VERB = {
    Status.DISCARD: "discarded",
    Status.CRASH: "crashed",
    Status.FAIL: "failed",
    Status.TIMEOUT: "timed out",
    Status.REJECTED: "rejected",
}



def _region(proposal: Proposal) -> str:
    return proposal.region or proposal.key()


class TabuMechanism(Mechanism):
    """Rejects candidates in regions whose recent try was not kept."""

    name = "tabu"
    description = "Tabu list over regions: a region whose last try was not kept is off-limits for `tenure` iterations."

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if merged["tenure"] < 1:
            raise ValueError("parameter 'tenure' must be >= 1")
        if merged["max_listed"] < 1:
            raise ValueError("parameter 'max_listed' must be >= 1")
        super().__init__(**merged)
        self._bad: dict[str, tuple[int, Status]] = {}  # region -> (iteration, status) of its last non-keep
        self._kept: dict[str, int] = {}  # region -> iteration of its last keep

    def _tabu(self, iteration: int) -> list[tuple[str, int, Status]]:
        """Regions tabu at ``iteration``, most recent first."""
        tenure = self.params["tenure"]
        out = []
        for region, (tried, status) in self._bad.items():
            kept = self._kept.get(region)
            if iteration - tried > tenure or (kept is not None and iteration - kept <= tenure):
                continue
            out.append((region, tried, status))
        return sorted(out, key=lambda item: -item[1])

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        tabu = self._tabu(ctx.iteration)
        if not tabu:
            return None
        shown = tabu[: self.params["max_listed"]]
        listed = ", ".join(f"{region} ({_VERB[status]} at {tried})" for region, tried, status in shown)
        more = f" and {len(tabu) - len(shown)} more" if len(tabu) > len(shown) else ""
        text = (f"Tabu regions (tried recently without a keep; off-limits for {self.params['tenure']} "
                f"iterations): {listed}{more}. Propose a different region.")
        return Guidance(text=text, constraints=Constraints(avoid_regions=tuple(r for r, _, _ in tabu)))

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        region = _region(proposal)
        for tabu_region, tried, status in self._tabu(ctx.iteration):
            if tabu_region == region:
                left = tried + self.params["tenure"] - ctx.iteration + 1
                return FilterVerdict.reject(
                    f"{region} was {_VERB[status]} at iteration {tried}; try another region "
                    f"(tabu for {left} more iteration{'s' if left != 1 else ''})"
                )
        return None

    def observe(self, record: TrialRecord) -> None:
        proposal = record.proposal
        if proposal is None or proposal.is_baseline:
            return
        region = _region(proposal)
        if record.status is Status.KEEP:
            self._kept[region] = record.iteration
        elif record.status is not Status.DISCARD or self.params["tabu_discards"]:
            self._bad[region] = (record.iteration, record.status)

    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        self._bad.clear()
        self._kept.clear()
        for record in history:
            self.observe(record)
