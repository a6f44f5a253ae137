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

import json
import math
import random
from typing import Any, ClassVar

from core.records import FilterVerdict, Guidance, Proposal, ProposalContext, Status, TrialRecord

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


def tie_break(items: list[str], seed: int) -> dict[str, float]:
    """A seeded random key per item, independent of the items' order: ``sorted(xs, key=lambda x:
    (score[x], keys[x]))`` breaks ties by chance drawn from ``seed`` (``ctx.seed``: the same on
    resume), never by the order parameters appear in a file."""
    rng = random.Random(seed)
    return {item: rng.random() for item in sorted(set(items))}


SPACE_KINDS: tuple[str, ...] = ("float", "int", "pow2", "choice", "bool")


class ParamSpace:
    """The named parameters a proposing mechanism moves: per name its ``kind`` (float, int, pow2,
    choice, bool), ``low``/``high`` (numbers), ``log`` (float), ``choices`` (choice) and the
    starting ``value``. Shared by the library mechanisms that propose candidates themselves
    (surrogate, pattern search, multi-scale bandit); a template imports it from here.

    It comes from a mechanism's ``space`` parameter (JSON text, filled by the domain) or from
    ``ctx.search["params"]`` when a domain publishes its space there. Without one, a proposing
    mechanism defers to the proposer (its ``propose`` returns ``None``).

    Moves are measured in *steps*: one step is a doubling on a log or power-of-two scale and an
    eighth of the range on a linear one (as :meth:`core.space.Dim.step`). The incumbent is rebuilt
    from the history alone — the starting values overridden by every kept record's changes in
    order — so a mechanism needs no state of its own to know where the search stands.
    """

    def __init__(self, dims: dict[str, dict[str, Any]]) -> None:
        self.dims: dict[str, dict[str, Any]] = {}
        for name, spec in dims.items():
            kind = spec.get("kind")
            if kind not in SPACE_KINDS or "value" not in spec:
                raise ValueError(f"space: {name} needs a kind in {list(SPACE_KINDS)} and a value")
            if kind in ("float", "int", "pow2") and (spec.get("low") is None or spec.get("high") is None):
                raise ValueError(f"space: {name} ({kind}) needs low and high")
            if kind == "choice" and not spec.get("choices"):
                raise ValueError(f"space: {name} (choice) needs choices")
            if (kind == "pow2" or spec.get("log")) and spec["low"] <= 0:
                raise ValueError(f"space: {name} is on a log scale and needs low > 0")
            self.dims[str(name)] = dict(spec)

    @classmethod
    def of(cls, text: str, ctx: ProposalContext | None = None) -> ParamSpace | None:
        """The space from ``text`` (JSON), else from ``ctx.search["params"]``; ``None`` without one."""
        if text:
            return cls(json.loads(text))
        params = ctx.search.get("params") if ctx is not None else None
        if isinstance(params, dict) and params:
            try:
                return cls(params)
            except (ValueError, TypeError, KeyError):
                return None
        return None

    # -- where the search stands -------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        return {name: spec["value"] for name, spec in self.dims.items()}

    def walk(self, history: tuple[TrialRecord, ...]) -> list[tuple[dict[str, Any], dict[str, Any], TrialRecord]]:
        """Per non-baseline record with a proposal: (the incumbent it started from, the configuration
        it measured, the record), in history order."""
        current = self.start()
        out = []
        for record in history:
            proposal = record.proposal
            if proposal is None or proposal.is_baseline:
                continue
            changes = {k: v for k, v in proposal.changes.items() if k in self.dims and self.fits(k, v)}
            config = {**current, **changes}
            out.append((dict(current), config, record))
            if record.status is Status.KEEP:
                current = config
        return out

    def fits(self, name: str, value: Any) -> bool:
        """``value`` has the kind of parameter ``name`` (a change that does not is ignored: it came
        from somewhere else, e.g. another domain's record)."""
        kind = self.dims[name]["kind"]
        if kind == "choice":
            return value in self.dims[name]["choices"]
        if kind == "bool":
            return isinstance(value, bool)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
            value > 0 or not (kind == "pow2" or self.dims[name].get("log")))

    def incumbent(self, history: tuple[TrialRecord, ...]) -> dict[str, Any]:
        walked = self.walk(history)
        if not walked:
            return self.start()
        before, config, record = walked[-1]
        return config if record.status is Status.KEEP else before

    @staticmethod
    def key(config: dict[str, Any]) -> str:
        return json.dumps(config, sort_keys=True, default=str)

    def measured(self, ctx: ProposalContext) -> set[str]:
        """Keys of every configuration already tried (whatever came of it), the start included, and
        of the candidates in flight (``ctx.pending``, with parallel trials) — never to be proposed again."""
        seen = {self.key(self.start())} | {self.key(config) for _, config, _ in self.walk(ctx.history)}
        current = self.incumbent(ctx.history)
        for proposal in getattr(ctx, "pending", ()) or ():
            changes = {k: v for k, v in proposal.changes.items() if k in self.dims and self.fits(k, v)}
            seen.add(self.key({**current, **changes}))
        return seen

    def names(self, ctx: ProposalContext) -> list[str]:
        """The parameters a proposal may move now: in the space, active (``ctx.search``), not
        avoided by the merged guidance; sorted (callers break ties with :func:`tie_break`)."""
        active = ctx.search.get("active_params")
        allowed = set(active) if active else set(self.dims)
        avoid = set(ctx.guidance.constraints.avoid_params)
        return sorted(n for n in self.dims if n in allowed and n not in avoid)

    # -- moving ------------------------------------------------------------------------------------
    def coordinate(self, name: str, value: Any) -> float:
        """``value`` in steps (see the class docstring); choices and bools by index."""
        spec = self.dims[name]
        kind = spec["kind"]
        if kind == "choice":
            return float(list(spec["choices"]).index(value)) if value in spec["choices"] else 0.0
        if kind == "bool":
            return float(bool(value))
        if kind == "pow2" or spec.get("log"):
            return math.log2(max(float(value), 1e-300))
        return float(value) / ((spec["high"] - spec["low"]) / 8)

    def move(self, name: str, value: Any, steps: float, rng: random.Random) -> Any:
        """``value`` moved by ``steps`` (signed), clipped to the bounds; ``value`` itself when it
        cannot move that way. A choice moves to another option drawn from ``rng``; a bool flips."""
        spec = self.dims[name]
        kind = spec["kind"]
        if kind == "bool":
            return not value
        if kind == "choice":
            options = [c for c in spec["choices"] if c != value]
            return rng.choice(sorted(options, key=str)) if options else value
        low, high = spec["low"], spec["high"]
        if kind == "pow2":
            exponent = round(math.log2(value)) + (int(math.copysign(max(1, round(abs(steps))), steps)) if steps else 0)
            new = 2 ** exponent
            while new > high:
                new //= 2
            while new < low:
                new *= 2
            return int(new)
        if spec.get("log"):
            moved = float(value) * 2.0 ** steps
        else:
            moved = float(value) + steps * (high - low) / 8
        moved = min(high, max(low, moved))
        if kind == "int":
            rounded = int(round(moved))
            if rounded == value and steps:
                rounded = int(value) + (1 if steps > 0 else -1)
            return int(min(high, max(low, rounded)))
        return float(f"{moved:.4g}")

    def region(self, current: dict[str, Any], changes: dict[str, Any]) -> str:
        """``"NAME:up+OTHER:set"``, the region form every library mechanism reads (see :func:`touched`)."""
        parts = []
        for name, value in sorted(changes.items()):
            kind = self.dims[name]["kind"]
            if kind in ("choice", "bool"):
                parts.append(f"{name}:set")
            else:
                parts.append(f"{name}:{'up' if value > current[name] else 'down'}")
        return "+".join(parts)

    def proposal(self, current: dict[str, Any], changes: dict[str, Any], hypothesis: str) -> Proposal:
        return Proposal(changes=changes, hypothesis=hypothesis, region=self.region(current, changes))


def direction_of(proposal: Proposal, name: str) -> str:
    """The qualifier of ``name`` in the proposal's region (``"up"``, ``"down"``, ``"set"``), or ``""``."""
    for part in proposal.region.split("+"):
        head, _, qualifier = part.partition(":")
        if head == name:
            return qualifier
    return ""


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
