"""A typed search configuration for Level 1 over named parameters, and the only way Level 1.5 may
change it: a validated patch.

Any domain whose candidates edit named parameters (train_opt's hyperparameters, script_opt's
constants) uses it. ``SearchConfig`` is what the proposer reads through ``ctx.search`` (the
controller hands it over as a typed model; the context carries its JSON form); ``ConfigPatch`` is
what the outer analyzer returns. ``apply_patch`` enforces the bounds (at most ``max_freeze_per_cycle`` parameters
frozen per cycle, at least ``min_active`` left active, only known parameters) and raises
:class:`~core.errors.ConfigError` with a one-line reason otherwise; the caller journals the result.
Before it, :func:`guard_patch` drops any freeze of a parameter with a direction not measured yet
(:func:`untried_directions`) and turns it into guidance for the proposer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError
from core.records import Status, TrialRecord

Strategy = Literal["explore", "exploit", "focused"]
GUIDANCE_MAX_CHARS = 600


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    active_params: tuple[str, ...]
    frozen_params: tuple[str, ...] = ()
    strategy: Strategy = "explore"
    step_scale: float = Field(default=1.0, ge=0.05, le=4.0)
    max_changes: int = Field(default=1, ge=1, le=4)
    guidance: str = Field(default="", max_length=GUIDANCE_MAX_CHARS)
    min_active: int = Field(default=3, ge=1)
    max_freeze_per_cycle: int = Field(default=2, ge=0)


class ConfigPatch(BaseModel):
    """What the outer analyzer may change. Every field optional; ``reason`` is required."""

    model_config = ConfigDict(extra="forbid")

    freeze: list[str] = Field(default_factory=list)
    unfreeze: list[str] = Field(default_factory=list)
    strategy: Strategy | None = None
    step_scale: float | None = Field(default=None, ge=0.05, le=4.0)
    max_changes: int | None = Field(default=None, ge=1, le=4)
    guidance: str | None = Field(default=None, max_length=GUIDANCE_MAX_CHARS)
    reason: str = Field(min_length=1, max_length=1000)


def initial_config(params: list[str], **overrides: object) -> SearchConfig:
    try:
        return SearchConfig(active_params=tuple(params), **overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid search configuration: {_first_error(exc)}") from exc


def apply_patch(config: SearchConfig, patch: ConfigPatch) -> SearchConfig:
    known = set(config.active_params) | set(config.frozen_params)
    unknown = sorted((set(patch.freeze) | set(patch.unfreeze)) - known)
    if unknown:
        raise ConfigError(f"patch names unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    both = sorted(set(patch.freeze) & set(patch.unfreeze))
    if both:
        raise ConfigError(f"patch both freezes and unfreezes {', '.join(both)}; pick one")
    freeze = [p for p in dict.fromkeys(patch.freeze) if p in config.active_params]
    if len(freeze) > config.max_freeze_per_cycle:
        raise ConfigError(f"patch freezes {len(freeze)} parameters; at most {config.max_freeze_per_cycle} per cycle")
    unfreeze = [p for p in dict.fromkeys(patch.unfreeze) if p in config.frozen_params]
    active = [p for p in config.active_params if p not in freeze] + unfreeze
    if len(active) < min(config.min_active, len(known)):
        raise ConfigError(f"patch would leave {len(active)} active parameters; at least {config.min_active} must stay active")
    frozen = [p for p in config.frozen_params if p not in unfreeze] + freeze
    updates: dict[str, object] = {"active_params": tuple(active), "frozen_params": tuple(frozen)}
    for name in ("strategy", "step_scale", "max_changes", "guidance"):
        value = getattr(patch, name)
        if value is not None:
            updates[name] = value
    try:
        return SearchConfig.model_validate({**config.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(f"patch gives an invalid configuration: {_first_error(exc)}") from exc


def untried_directions(records: Iterable[TrialRecord], params: Iterable[str]) -> dict[str, list[str]]:
    """Per parameter, the directions of change never measured yet (read from the records' regions,
    ``NAME:up`` / ``NAME:down`` / ``NAME:set``; a region without directions counts as ``set``). A
    numeric parameter has two, up and down; one changed by setting (a bool, a pattern) is done once
    tried. Only measured trials count (kept, discarded or failed: a failure is evidence too); a
    parameter whose every direction was measured is absent from the result."""
    tried: dict[str, set[str]] = {}
    for r in records:
        if r.proposal is None or r.proposal.is_baseline or r.status is Status.REJECTED:
            continue
        parts = dict(p.split(":", 1) for p in r.proposal.region.split("+") if ":" in p)
        for name in r.proposal.changes:
            tried.setdefault(name, set()).add(parts.get(name, "set"))
    out = {}
    for name in params:
        seen = tried.get(name, set())
        missing = [] if "set" in seen else [d for d in ("up", "down") if d not in seen]
        if missing:
            out[name] = missing
    return out


def guard_patch(patch: ConfigPatch, untried: Mapping[str, Sequence[str]]) -> tuple[ConfigPatch, list[str]]:
    """Level 1.5 never freezes a parameter with a direction not measured yet (it may be the one that
    helps). Returns ``patch`` without those freezes, its guidance naming the untried directions as
    ``NAME:direction`` (the proposer reads them), and one note per dropped freeze for the journal."""
    dropped = [p for p in patch.freeze if untried.get(p)]
    if not dropped:
        return patch, []
    notes = [f"{p} not frozen: never tried {' or '.join(untried[p])}" for p in dropped]
    hint = "Not tried yet: " + ", ".join(f"{p}:{d}" for p in dropped for d in untried[p]) + "."
    guidance = " ".join(t for t in (hint, patch.guidance or "") if t)[:GUIDANCE_MAX_CHARS]
    kept = [p for p in patch.freeze if p not in dropped]
    return patch.model_copy(update={"freeze": kept, "guidance": guidance}), notes


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "value"
    return f"{where}: {err.get('msg', 'invalid')}"
