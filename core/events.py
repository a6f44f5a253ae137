"""Typed journal events: one pydantic model per event type, validated on write and on replay.

The journal (:class:`core.state.Journal`) checks every event whose ``type`` has a model here before
appending it, and again when a run directory is opened, so a malformed event is refused at the
moment it is written (a bug, with the field named) and a hand-edited journal is refused on resume
instead of replaying wrong state. Core's events are declared below; a domain registers its own with
:func:`register_event` (train_opt and script_opt share ``config``; article_opt declares its stage
events). Core's models forbid unknown fields; a domain's may allow extra payload.

``seq`` and ``ts`` are the journal's envelope and are not part of a model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.records import Proposal, TrialRecord

ENVELOPE = ("seq", "ts")


class Event(BaseModel):
    """Base of every event model; ``type`` is the discriminator (a literal in each subclass)."""

    model_config = ConfigDict(extra="forbid")
    type: str


class OpenEvent(Event):
    """An event whose model names the fields every instance has and allows domain-specific extras."""

    model_config = ConfigDict(extra="allow")


class TrialEvent(Event):
    type: Literal["trial"]
    loop: str
    record: TrialRecord


class ProposalEvent(Event):
    type: Literal["proposal"]
    loop: str
    iteration: int = Field(ge=0)
    cycle: int = Field(ge=0)
    proposal: Proposal
    rejections: list[str] = Field(default_factory=list)
    hook_calls: dict[str, dict[str, int]] = Field(default_factory=dict)
    hook_effects: dict[str, dict[str, int]] = Field(default_factory=dict)  # the calls that changed something
    hook_effects: dict[str, dict[str, int]] = Field(default_factory=dict)
    batch: int | None = None  # with --parallel K: the first iteration of the candidate's batch (core.batch)


class ExecutedEvent(Event):
    """A batched trial's measured fields, journaled (fsync) the moment it finished, before the batch
    is decided in proposal order (core.batch); or, without a ``proposal`` event before it, a slot of
    the batch that got no candidate (its final fields)."""

    type: Literal["executed"]
    loop: str
    iteration: int = Field(ge=0)
    cycle: int = Field(ge=0)
    fields: dict[str, Any]
    duration_s: float = Field(default=0.0, ge=0)
    batch: int | None = None
    rejections: list[str] = Field(default_factory=list)
    hook_calls: dict[str, dict[str, int]] = Field(default_factory=dict)
    hook_effects: dict[str, dict[str, int]] = Field(default_factory=dict)


class StoppedEvent(Event):
    type: Literal["stopped"]
    loop: str
    iteration: int = Field(ge=0)
    reason: str


class MechanismDetachedEvent(Event):
    type: Literal["mechanism_detached"]
    loop: str
    iteration: int = Field(ge=0)
    name: str
    hook: str | None
    reason: str
    traceback_tail: str = ""


class RunStartedEvent(OpenEvent):  # extras: what the domain's prepare() returned (target, articles)
    type: Literal["run_started"]
    settings: dict[str, Any]
    python: str
    domain: str | None = None


class RunResumedEvent(Event):
    type: Literal["run_resumed"]


class RunEndedEvent(Event):
    type: Literal["run_finished", "run_stopped"]
    reason: str | None
    best: Any = None


class SettingsChangedEvent(Event):
    type: Literal["settings_changed"]
    changes: dict[str, Any]
    previous: dict[str, Any]


class LLMCallEvent(OpenEvent):  # fields of core.llm.usage.CallRecord; the client may add more
    type: Literal["llm_call"]
    level: str
    provider: str
    model: str
    purpose: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)


class CycleEndEvent(OpenEvent):  # extras: the domain's cycle_info() (article_opt: stages, overrides)
    type: Literal["cycle_end"]
    cycle: int = Field(ge=0)
    gain: float | None
    best: dict[str, float | None]


class Level15VerdictEvent(Event):
    type: Literal["level15_verdict"]
    cycle: int = Field(ge=0)
    governed: int = Field(ge=1)
    kept: bool
    score: float
    gain: float
    parent_gain: float
    decided_by: str
    margin: float | None = None  # the noise the score had to beat (noise-aware outer verdicts)
    restored: Any = None


class ConfigEvent(OpenEvent):  # a Level-1.5 patch to a typed SearchConfig (train_opt, script_opt)
    type: Literal["config"]
    cycle: int = Field(ge=0)
    patch: dict[str, Any]
    config: dict[str, Any]


class ConfigRejectedEvent(Event):
    type: Literal["config_rejected", "outer_rejected"]
    cycle: int = Field(ge=0)
    error: str | None


EVENTS: dict[str, type[Event]] = {}


def register_event(model: type[Event]) -> type[Event]:
    """Register ``model`` for each literal of its ``type`` field (usable as a class decorator)."""
    annotation = model.model_fields["type"].annotation
    for name in getattr(annotation, "__args__", ()):
        existing = EVENTS.get(name)
        if existing is not None and existing is not model and existing.__qualname__ != model.__qualname__:
            raise ValueError(f"journal event type {name!r} already has the model {existing.__name__}")
        EVENTS[name] = model
    return model


for _model in (TrialEvent, ProposalEvent, ExecutedEvent, StoppedEvent, MechanismDetachedEvent, RunStartedEvent, RunResumedEvent,
               RunEndedEvent, SettingsChangedEvent, LLMCallEvent, CycleEndEvent, Level15VerdictEvent, ConfigEvent,
               ConfigRejectedEvent):
    register_event(_model)


class EventError(ValueError):
    """An event that does not match its type's model."""


def check_event(event: dict[str, Any]) -> None:
    """Raise :class:`EventError` (one line naming the field) if ``event`` breaks its type's model."""
    model = EVENTS.get(str(event.get("type")))
    if model is None:
        return
    try:
        model.model_validate({k: v for k, v in event.items() if k not in ENVELOPE})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "event"
        raise EventError(f"journal event {event.get('type')!r}: {where}: {err['msg']}") from None
