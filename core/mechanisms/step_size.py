"""Adaptive step size: smaller moves after repeated failure, larger after success.

Diagnosis it addresses — *crashes/overshoot*: many crashes or large discards, i.e. moves that jump
past the good region (a learning rate ×4 that diverges) instead of walking into it.

How: a multiplicative step scale starts at ``start``. After ``patience`` consecutive non-kept
records it shrinks (× ``shrink``, never below ``floor``) and the count restarts; after a keep it
grows (× ``grow``, never above ``cap``). ``guidance`` hands the scale to the proposer as
``Constraints.step_scale`` with a line of text: a numeric proposer multiplies its move size by it,
an LLM reads it as "make smaller/larger moves".

``decide`` (optional, off by default): with ``min_gain`` > 0, a candidate the decider would keep is
discarded when its relative improvement over the incumbent, ``|best_before|``-normalised, is below
``min_gain`` — a noise guard so a lucky seed does not count as progress. With the default
``min_gain = 0.0`` the hook always defers (returns ``None``) and never overrides a decision.

Works on any loop: it reads only ``TrialRecord.status``, ``score`` and ``best_before`` and
``ctx.direction``. State comes from ``observe`` and is rebuilt by ``replay`` on resume.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

from typing import Any

from core.mechanism import Mechanism, merge_params
from core.records import Constraints, Guidance, ProposalContext, Status, TrialRecord

PARAMS = {
    "start": 1.0,  # initial step scale
    "patience": 3,  # consecutive non-keeps before the scale shrinks
    "shrink": 0.5,  # factor applied after `patience` non-keeps (< 1)
    "grow": 1.5,  # factor applied after a keep (>= 1)
    "floor": 0.125,  # the scale never goes below this
    "cap": 2.0,  # ... nor above this
    "min_gain": 0.0,  # relative gain a keep must reach, else decide() discards it (0 = never override)
}




class StepSizeMechanism(Mechanism):
    """Shrinks the proposer's step after a run of failures and grows it after a keep."""

    name = "step_size"
    description = ("Adaptive step size: shrink the move scale after `patience` non-keeps, grow it after a keep; "
                   "optionally discard keeps whose gain is below `min_gain`.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if not 0 < merged["floor"] <= merged["start"] <= merged["cap"]:
            raise ValueError("parameters must satisfy 0 < floor <= start <= cap")
        if not 0 < merged["shrink"] < 1:
            raise ValueError("parameter 'shrink' must be in (0, 1)")
        if merged["grow"] < 1:
            raise ValueError("parameter 'grow' must be >= 1")
        if merged["patience"] < 1:
            raise ValueError("parameter 'patience' must be >= 1")
        if merged["min_gain"] < 0:
            raise ValueError("parameter 'min_gain' must be >= 0")
        super().__init__(**merged)
        self.scale: float = merged["start"]
        self.misses: int = 0  # consecutive non-keeps since the last change of scale

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        p = self.params
        if self.scale < 1:
            advice = "make smaller moves than usual"
        elif self.scale > 1:
            advice = "moves have been paying: larger moves are fine"
        else:
            advice = "use the usual move size"
        text = (f"Step scale {self.scale:g} ({self.misses} non-keep(s) in a row; ×{p['shrink']:g} after "
                f"{p['patience']}, ×{p['grow']:g} after a keep): {advice}.")
        return Guidance(text=text, constraints=Constraints(step_scale=self.scale))

    def decide(self, record: TrialRecord, ctx: ProposalContext) -> bool | None:
        if self.params["min_gain"] <= 0 or record.status is not Status.KEEP:
            return None
        if record.score is None or record.best_before is None:
            return None
        gain = record.best_before - record.score if ctx.direction == "minimize" else record.score - record.best_before
        relative = gain / max(abs(record.best_before), 1e-12)
        return False if relative < self.params["min_gain"] else None

    def observe(self, record: TrialRecord) -> None:
        if record.proposal is None or record.proposal.is_baseline:
            return
        p = self.params
        if record.status is Status.KEEP:
            self.scale = min(p["cap"], self.scale * p["grow"])
            self.misses = 0
            return
        self.misses += 1
        if self.misses >= p["patience"]:
            self.scale = max(p["floor"], self.scale * p["shrink"])
            self.misses = 0

    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        self.scale = self.params["start"]
        self.misses = 0
        for record in history:
            self.observe(record)
