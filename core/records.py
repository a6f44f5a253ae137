"""Frozen records handed between the controller and its plugins.

Everything a plugin or a mechanism receives is immutable (frozen pydantic models, tuples), so a
plugin cannot rewrite history behind the controller's back. ``frozen=True`` alone only stops
attribute assignment, so every dict or list a record holds is stored as a read-only
:class:`FrozenDict` / :class:`FrozenList`: ``record.metrics["val_bpb"] = 0`` raises instead of
editing the journaled record and the history every later iteration reads. Records are also what
the journal stores: ``model_dump(mode="json")`` on the way in, ``model_validate`` on replay.
"""

from __future__ import annotations

import copy
import hashlib
import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _read_only(self: Any, *args: Any, **kwargs: Any) -> None:
    raise TypeError(f"{type(self).__name__} is read-only: records are frozen; build a new one instead")


class FrozenDict(dict):
    """A dict that refuses in-place changes. JSON, pydantic and ``dict(...)`` see a plain dict; a deep
    copy (or an unpickled one) is a plain, mutable dict: a copy is the holder's to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict) -> dict:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple:
        return (dict, (dict(self),))


class FrozenList(list):
    """A list that refuses in-place changes (see :class:`FrozenDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict) -> list:
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple:
        return (list, (list(self),))


def freeze(value: Any) -> Any:
    """``value`` with every dict and list in it (recursively) made read-only; other objects as is."""
    if isinstance(value, (FrozenDict, FrozenList)):
        return value
    if isinstance(value, dict):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    if isinstance(value, tuple) and any(isinstance(v, (dict, list)) for v in value):
        return tuple(freeze(v) for v in value)
    return value


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        # Once, when the record is built (not each time it is nested in another one: a context
        # holding the whole history would pay for every record again). Frozen: bypass __setattr__.
        for name, value in self.__dict__.items():
            if isinstance(value, (dict, list)):
                self.__dict__[name] = freeze(value)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Frozen:  # type: ignore[override]
        """As pydantic's, but the copy's dicts and lists are read-only too (an ``update`` or a deep
        copy would otherwise bring in plain, mutable ones)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.model_post_init(None)
        return copied


class Status(str, Enum):
    """Lifecycle outcome of one iteration.

    KEEP/DISCARD: the candidate ran and was judged. CRASH: the execution failed without a result.
    FAIL: the task itself reported failure (e.g. NaN loss). TIMEOUT: killed at the hard limit.
    REJECTED: no runnable candidate (every proposal was filtered out, or the proposer broke).
    """

    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    FAIL = "fail"
    TIMEOUT = "timeout"
    REJECTED = "rejected"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


BASELINE = "baseline"  # Proposal.origin of a loop's starting point
REPLICATE = "replicate"  # Proposal.origin of a re-measurement of a measured configuration on another seed


class Proposal(Frozen):
    """A candidate: a set of changes to the incumbent, with the hypothesis behind it.

    ``region`` names the part of the search space the candidate lives in; mechanisms such as a tabu
    list key on it. Domains set it (e.g. ``"MATRIX_LR:up"``); by default it is the sorted change keys.
    ``payload`` carries bulky content (generated mechanism source) that does not belong in ``changes``.
    """

    changes: dict[str, Any] = Field(default_factory=dict)
    hypothesis: str = ""
    region: str = ""
    origin: str = "proposer"
    payload: str | None = None

    @property
    def is_baseline(self) -> bool:
        """The unchanged starting point of a loop (set only by the controller)."""
        return self.origin == BASELINE

    @property
    def is_replicate(self) -> bool:
        """A re-measurement of an already measured configuration on another training seed (set only
        by the controller; the record's ``info`` names ``replicate_of`` and ``seed``)."""
        return self.origin == REPLICATE

    def key(self) -> str:
        return self.region or ",".join(sorted(self.changes))

    def digest(self) -> str:
        body = canonical_json({"changes": self.changes, "payload": self.payload})
        return hashlib.sha256(body.encode()).hexdigest()[:12]


class ExecutionResult(Frozen):
    """What executing a candidate produced. ``artifact`` is a path relative to the run directory."""

    status: Literal["ok", "crash", "fail", "timeout"]
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact: str | None = None
    log_tail: str = ""
    duration_s: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)


class EvalInput(Frozen):
    """Everything the evaluator may see. By construction there is no field for lessons, outer
    guidance, mechanism state or proposal reasoning: judgments cannot be steered by the search."""

    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_text: str | None = None


class Evaluation(Frozen):
    score: float
    details: dict[str, float] = Field(default_factory=dict)


class TrialRecord(Frozen):
    """One finished iteration, exactly as journaled."""

    loop: str
    iteration: int
    cycle: int = 0
    status: Status
    proposal: Proposal | None = None
    score: float | None = None
    best_before: float | None = None
    best_after: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    details: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    artifact: str | None = None
    parent_artifact: str | None = None
    log_tail: str = ""
    error: str = ""
    duration_s: float = 0.0
    rejections: tuple[str, ...] = ()
    hook_calls: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Effect, not calls: per mechanism and hook, the calls of this iteration that changed what
    # happened — guidance that added text or constraints to what the proposer is told, a propose
    # that supplied the candidate, a filter that refused or rewrote it, a decide that overrode the
    # decider. ``observe`` never counts (it cannot change this iteration). A mechanism whose hooks
    # are called but change nothing (a placebo) has calls and no effects.
    hook_effects: dict[str, dict[str, int]] = Field(default_factory=dict)
    decided_by: str = "decider"

    @property
    def kept(self) -> bool:
        return self.status is Status.KEEP

    @property
    def finished_ok(self) -> bool:
        return self.status in (Status.KEEP, Status.DISCARD)

    @property
    def origin_iteration(self) -> int:
        """The iteration whose proposal this record measured: a retest's is the first measurement's
        (``info["replicate_of"]``; at Level 1 a retest follows its near-tie in the same cycle, at Level 2
        in the next), anyone else's its own."""
        origin = self.info.get("replicate_of") if self.proposal is not None and self.proposal.is_replicate else None
        return origin if isinstance(origin, int) and not isinstance(origin, bool) else self.iteration


class Constraints(Frozen):
    """Structured guidance a non-LLM proposer can act on (and an LLM sees rendered as text)."""

    avoid_regions: tuple[str, ...] = ()
    prefer_params: tuple[str, ...] = ()
    avoid_params: tuple[str, ...] = ()
    step_scale: float | None = None

    def merge(self, other: Constraints) -> Constraints:
        scale = other.step_scale if other.step_scale is not None else self.step_scale
        return Constraints(
            avoid_regions=_union(self.avoid_regions, other.avoid_regions),
            prefer_params=_union(self.prefer_params, other.prefer_params),
            avoid_params=_union(self.avoid_params, other.avoid_params),
            step_scale=scale,
        )


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


class Guidance(Frozen):
    text: str = ""
    constraints: Constraints = Field(default_factory=Constraints)


class ProposalContext(Frozen):
    """What a proposer (and a mechanism hook) sees when a candidate is wanted.

    ``lessons`` and ``guidance`` live here and only here: they steer proposals, never judgments.
    ``feedback`` holds the reasons earlier proposals of this iteration were filtered out.
    ``pending`` holds the candidates of the same batch already proposed and not yet decided (in
    flight, or waiting for their turn): with ``--parallel K`` a tabu list or a surrogate accounts
    for work in flight; with K = 1 it is always empty.
    """

    loop: str
    iteration: int
    cycle: int
    history: tuple[TrialRecord, ...] = ()
    best_score: float | None = None
    incumbent: str | None = None
    direction: Literal["minimize", "maximize"] = "minimize"
    search: dict[str, Any] = Field(default_factory=dict)
    guidance: Guidance = Field(default_factory=Guidance)
    lessons: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    seed: int = 0
    pending: tuple[Proposal, ...] = ()

    def better(self, a: float, b: float | None) -> bool:
        """True when score ``a`` is strictly better than ``b`` in this loop's direction."""
        if b is None:
            return True
        return a < b if self.direction == "minimize" else a > b


class FilterVerdict(Frozen):
    """A mechanism's answer to a proposal: accept it, reject it (with a reason the proposer sees),
    or replace it with a rewritten proposal."""

    action: Literal["accept", "reject", "rewrite"] = "accept"
    reason: str = ""
    proposal: Proposal | None = None

    @classmethod
    def accept(cls) -> FilterVerdict:
        return cls()

    @classmethod
    def reject(cls, reason: str) -> FilterVerdict:
        return cls(action="reject", reason=reason)

    @classmethod
    def rewrite(cls, proposal: Proposal, reason: str = "") -> FilterVerdict:
        return cls(action="rewrite", proposal=proposal, reason=reason)
