"""The Level-2 target: a search mechanism that plugs into the running inner loop.

A mechanism subclasses :class:`Mechanism` and overrides any of its hooks; every hook defaults to a
no-op. The controller calls the hooks of every attached mechanism, in attachment order, **each
iteration**, and counts each call in the iteration's journal record (``hook_calls``):

1. ``guidance(ctx)``      before proposing: text for an LLM proposer plus structured
                          :class:`~core.records.Constraints` for a non-LLM one. Merged across mechanisms.
2. ``propose(ctx)``       before the proposer: a mechanism may supply the candidate itself. The first
                          non-``None`` answer is used and the proposer is not asked.
3. ``filter(p, ctx)``     on every candidate: accept, reject with a reason (the proposer is re-asked
                          with the reason, a bounded number of times) or rewrite it.
4. ``decide(r, ctx)``     after evaluation: ``True``/``False`` overrides keep/discard, ``None`` defers.
5. ``observe(r)``         after the record is final, just before it is journaled (so the
                          journaled record counts this call too).

Hooks run under a deadline; a hook that raises, returns the wrong type or overruns is detached,
journaled with its traceback and the loop goes on with the parent mechanism set. Records and
contexts passed in are frozen.

Library mechanisms (reviewed code in the package) run in the controller's process. Generated
mechanisms never do: each runs in its own sandboxed worker (:mod:`core.host`), the controller holds a
:class:`~core.host.RemoteMechanism` proxy with the same hooks, the worker gets copies of the records
as JSON, and whatever a hook returns is rebuilt and validated by the controller, which alone sets
bookkeeping fields such as ``Proposal.origin``. A generated mechanism imports only ``core.mechanism``
and ``core.records`` from this project, plus a small standard-library allow-list (see :mod:`core.policy`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from core.records import FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

HOOKS: tuple[str, ...] = ("guidance", "propose", "filter", "decide", "observe")


def merge_params(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``params``; an unknown name or a wrong type raises ``ValueError``.

    Generated mechanisms keep their knobs in a module-level ``PARAMS`` dict and call this from
    ``__init__``; it lives here so every template shares one copy."""
    merged = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(f"unknown parameter {key!r}; expected one of {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(default, bool) and isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"parameter {key!r} must have the type of its default {default!r}, got {value!r}")
        merged[key] = value
    return merged


DIRECTIONS: tuple[str, ...] = ("up", "down", "set")  # the qualifiers a region part may carry


def touched(proposal: Proposal) -> list[str]:
    """What a proposal moved: parameter names from ``NAME:DIRECTION`` region parts, other parts
    whole (a discrete choice such as ``template:tabu``), else the ``changes`` keys. Shared by the
    library mechanisms that key on parameters (bandit, orthogonal exploration)."""
    if not proposal.region:
        return sorted(proposal.changes)
    out: list[str] = []
    for part in proposal.region.split("+"):
        name, _, qualifier = part.partition(":")
        item = name if qualifier in DIRECTIONS else part
        if item and item not in out:
            out.append(item)
    return out


class Mechanism:
    """Base class of every search mechanism (library or generated).

    ``name`` identifies the mechanism in the journal; ``params`` are the knobs a designer sets.
    """

    name: ClassVar[str] = "mechanism"
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        """Called once per iteration before any proposal is made."""
        return None

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        """Called once per iteration (and per re-ask) before the proposer; return a candidate to
        take over proposing, or ``None``."""
        return None

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        """Called on every candidate before it is executed; ``None`` means accept."""
        return None

    def decide(self, record: TrialRecord, ctx: ProposalContext) -> bool | None:
        """Called after evaluation with the draft record (status KEEP or DISCARD as the decider
        judged). Return ``True`` to keep, ``False`` to discard, ``None`` to leave it."""
        return None

    def observe(self, record: TrialRecord) -> None:
        """Called with every finished record (whatever its status), just before it is journaled."""
        return None

    # -- state, for resume ------------------------------------------------------------------------
    def replay(self, history: tuple[TrialRecord, ...]) -> None:
        """Rebuild internal state after a resume. The default feeds every record to ``observe``."""
        for record in history:
            self.observe(record)
