"""article_opt's journal event models (see :mod:`core.events`): Level 1.5 overrides, the pipeline's
passes and stage failures, and the life of a generated stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.events import OpenEvent, register_event


@register_event
class OuterPatchEvent(OpenEvent):
    type: Literal["outer_patch"]
    cycle: int = Field(ge=0)
    strategy: str
    overrides: dict[str, str]
    effective: dict[str, str]


@register_event
class PipelinePassEvent(OpenEvent):
    type: Literal["pipeline_pass"]
    loop: str
    iteration: int = Field(ge=0)
    cycle: int = Field(ge=0)
    calls: dict[str, int]


@register_event
class StageFailureEvent(OpenEvent):  # emitted by the pipeline: a stage raised, or was ejected for it
    type: Literal["stage_failed", "stage_ejected"]
    stage: str


@register_event
class StageLifeEvent(OpenEvent):  # Level 2: a generated stage injected, kept or reverted
    type: Literal["stage_injected", "stage_kept", "stage_reverted"]
    loop: str
    iteration: int = Field(ge=0)
    cycle: int = Field(ge=0)
    name: str
    digest: Any = None


@register_event
class StageLoadFailedEvent(OpenEvent):
    type: Literal["stage_load_failed"]
    loop: str
    iteration: int = Field(ge=0)
    cycle: int = Field(ge=0)
    load_stage: str
    error: str
