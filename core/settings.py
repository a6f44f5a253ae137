"""What every run is defined by, whatever its domain: levels, providers, budgets, limits.

A domain subclasses :class:`RunSettings` with its own fields (a target directory, the articles).
Settings are saved as ``settings.json`` when a run starts, so ``resume`` needs no flags; ``resume``
may change only :data:`RESUME_OVERRIDES` — the limits that stop a run, never what shapes its search.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import ConfigError
from core.plugins import Decider, Decision, make_decider

Level = Literal["1", "1.5", "2"]
LEVELS: tuple[Level, ...] = ("1", "1.5", "2")
S = TypeVar("S", bound="RunSettings")

# What `resume` may change: the limits that stop a run, never what shapes its search.
# (A Ray cluster's address may change between sessions too: where trials run is not what they are.)
RESUME_OVERRIDES = frozenset({"max_calls", "max_cost_usd", "wall_time_s", "request_timeout_s", "ray_address"})


class RunSettings(BaseModel):
    """Fields every domain shares. ``inner_budget`` / ``outer_cycles`` are also accepted under their
    article-domain spellings ``max_inner`` / ``max_outer`` (old ``settings.json`` files too)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    levels: tuple[Level, ...] = LEVELS
    provider: str = "offline"
    model: str | None = None
    outer_provider: str | None = None
    outer_model: str | None = None
    seed: int = 0
    inner_budget: int = Field(default=3, ge=0, le=10_000, validation_alias=AliasChoices("inner_budget", "max_inner"))
    outer_cycles: int = Field(default=3, ge=1, le=1_000, validation_alias=AliasChoices("outer_cycles", "max_outer"))
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_calls: int | None = Field(default=None, ge=0)
    wall_time_s: float | None = Field(default=None, gt=0)
    request_timeout_s: float | None = Field(default=None, gt=0)  # None: the provider's default
    hook_timeout_s: float = Field(default=5.0, gt=0)
    max_provider_failures: int = Field(default=3, ge=0)  # iterations lost to the provider in a row before a clean stop (0 = never)
    record_cassette: bool = False
    # Parallel trials (core.batch, core.pool): K in flight at once, decided in proposal order.
    parallel: int = Field(default=1, ge=1, le=256)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    gpus: tuple[str, ...] = ()  # local slots: one CUDA device each (round-robin when fewer than K)
    # Threads per trial (OMP_NUM_THREADS & co., BILEVEL_THREADS): part of a run's identity. Filled in
    # when a run is created with K > 1 on CPU slots (the machine's cores / K), so resume keeps it.
    trial_threads: int | None = Field(default=None, ge=1)
    trial_cpus: float = Field(default=1.0, gt=0)  # Ray resources declared per trial
    trial_gpus: float = Field(default=0.0, ge=0)
    # Keep/discard (README, "Keep/discard decisions"): noise-aware by default; ``noise_floor`` fixes
    # the smallest single-seed gain that counts instead of measuring it; ``noise_replicates`` extra
    # seeds of the baseline measure the noise (None: by the budget, see :meth:`baseline_replicates`).
    decision: Decision = "noise-aware"
    noise_floor: float | None = Field(default=None, ge=0)
    noise_replicates: int | None = Field(default=None, ge=0, le=10)
    max_failed_in_a_row: int = Field(default=5, ge=0)  # executed trials failing in a row before a clean stop (0 = never)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # "0,1,2" from the command line
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return () if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _thread_budget(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("trial_threads") is not None:
            return data
        k = int(data.get("parallel") or 1)
        if data.get("executor") == "ray":
            return {**data, "trial_threads": max(1, math.ceil(float(data.get("trial_cpus") or 1.0)))}
        if k > 1 and not data.get("gpus"):
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            return {**data, "trial_threads": max(1, cores // k)}
        return data

    @model_validator(mode="after")
    def _floor_needs_noise_aware(self) -> RunSettings:
        if self.noise_floor is not None and self.decision == "strict":
            raise ValueError("a noise floor applies to --decision noise-aware only; drop --noise-floor or the strict rule")
        return self

    def baseline_replicates(self) -> int:
        """Extra seeds of the baseline measured before the search (they count against cycle 0's
        budget): ``noise_replicates``, else 2 with 24 or more search trials, 1 with 6 or more, none
        below; never more than half of cycle 0."""
        if self.decision == "strict" or self.noise_floor is not None:
            return 0
        total = self.inner_budget * self.outer_cycles
        wanted = self.noise_replicates if self.noise_replicates is not None else (2 if total >= 24 else 1 if total >= 6 else 0)
        return max(0, min(wanted, self.inner_budget // 2))

    def make_decider(self) -> Decider:
        """The Level-1 decider these settings name."""
        return make_decider(self.decision, noise_floor=self.noise_floor, baseline_replicates=self.baseline_replicates())

    def client_ids(self) -> dict[str, tuple[str, str | None]]:
        """(provider, model) per client level. Levels 1.5 and 2 share the outer provider, which
        defaults to the inner one (and its model, unless an outer provider is named)."""
        outer = self.pick(self.outer_provider, self.outer_model)
        return {"inner": (self.provider, self.model), "outer": outer, "mechanism": outer}

    def pick(self, provider: str | None, model: str | None) -> tuple[str, str | None]:
        return (provider, model) if provider else (self.provider, model or self.model)

    @property
    def offline_researcher(self) -> bool:
        """True when any level is answered by the offline stand-in (a report must say so)."""
        from core.llm.registry import PROVIDERS

        return any(getattr(PROVIDERS.get(p.split(":", 1)[0]), "wire", None) == "offline"
                   for p, _ in self.client_ids().values())


def parse_levels(text: str) -> tuple[Level, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in LEVELS]
    if bad or "1" not in parts:
        raise ConfigError(f"--levels {text!r} is invalid; use a comma list of 1, 1.5, 2 that includes 1 (e.g. 1,1.5,2)")
    return tuple(dict.fromkeys(parts))  # type: ignore[return-value]


def validate(model: type[S], values: dict[str, Any]) -> S:
    """Build settings, turning the first validation error into a one-line :class:`ConfigError`."""
    try:
        return model(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        field = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
        aliases = getattr(field.validation_alias, "choices", None) if field is not None else None
        if aliases:  # name every spelling the user may have typed (--inner-budget / --max-inner)
            where = f"{where} ({' / '.join('--' + str(a).replace('_', '-') for a in aliases)}; {', '.join(map(str, aliases))})"
        raise ConfigError(f"invalid setting {where}: {err['msg']}") from None


def with_overrides(settings: S, changes: dict[str, Any]) -> tuple[S, dict[str, Any]]:
    """``settings`` with ``changes`` (resume's limits) applied, and the changes that differ."""
    unknown = sorted(set(changes) - RESUME_OVERRIDES)
    if unknown:
        raise ConfigError(f"resume cannot change {', '.join(unknown)}; only {', '.join(sorted(RESUME_OVERRIDES))}")
    changes = {k: v for k, v in changes.items() if getattr(settings, k) != v}
    if not changes:
        return settings, {}
    return validate(type(settings), settings.model_dump() | changes), changes
