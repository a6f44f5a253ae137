"""Frozen records handed between the controller and its plugins.

Everything a plugin or a mechanism receives is immutable (frozen pydantic models, tuples), so a
plugin cannot rewrite history behind the controller's back. Records are also what the journal
stores: ``model_dump(mode="json")`` on the way in, ``model_validate`` on replay.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    decided_by: str = "decider"

    @property
    def kept(self) -> bool:
        return self.status is Status.KEEP

    @property
    def finished_ok(self) -> bool:
        return self.status in (Status.KEEP, Status.DISCARD)


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
