"""One search space every proposer shares: bounded, structured, with the target's constraints built in.

A :class:`SearchSpace` is a tuple of :class:`Dim` (float, int, pow2, choice) plus divisibility
constraints (``TOTAL_BATCH_SIZE`` a multiple of ``DEVICE_BATCH_SIZE × MAX_SEQ_LEN``). Every proposer —
the references (random, local search, TPE, CMA-ES) and the offline researcher — samples, moves and
checks candidates through the same object, so a comparison is fair by the same budget *and* the same
space:

* :meth:`SearchSpace.local_box` builds the space from a starting configuration: each number may move
  within a bounded factor of its starting value (not decades), integers stay integers, powers of two
  stay powers of two;
* :meth:`SearchSpace.sample` draws a feasible configuration (a sample that breaks a constraint is
  repaired, then redrawn);
* :meth:`SearchSpace.feasible` is the one static check: ``None`` or the reason a configuration can
  never run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DimKind = Literal["float", "int", "pow2", "choice"]


@dataclass(frozen=True)
class Dim:
    """One searched constant. ``float``/``int``: ``low``..``high`` (``log`` for a log scale);
    ``pow2``: powers of two from ``low`` to ``high``; ``choice``: one of ``choices``."""

    name: str
    kind: DimKind
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"{self.name}: a choice dimension needs choices")
            return
        if not self.low < self.high and not (self.kind == "pow2" and self.low == self.high):
            raise ValueError(f"{self.name}: low {self.low} must be below high {self.high}")
        if (self.log or self.kind == "pow2") and self.low <= 0:
            raise ValueError(f"{self.name}: a log or pow2 dimension needs low > 0")
        if self.kind == "pow2" and not (_is_pow2(self.low) and _is_pow2(self.high)):
            raise ValueError(f"{self.name}: pow2 bounds must be powers of two")

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind in ("int", "pow2") and not isinstance(value, int):
            return False
        if self.kind == "pow2" and not _is_pow2(value):
            return False
        return self.low <= value <= self.high

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "pow2":
            return 2 ** rng.randint(int(math.log2(self.low)), int(math.log2(self.high)))
        u = rng.random()
        if self.log:
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return min(int(self.high), max(int(self.low), round(value)))
        return float(f"{value:.4g}")

    def step(self, value: Any, direction: int, scale: float = 1.0) -> Any:
        """``value`` moved one step up (+1) or down (-1), ``scale`` times a base step; clipped."""
        if self.kind == "choice":
            i = self.choices.index(value) if value in self.choices else 0
            return self.choices[(i + direction) % len(self.choices)]
        if self.kind == "pow2":
            exponent = int(math.log2(value)) + direction * max(1, round(scale))
            return int(min(self.high, max(self.low, 2**exponent)))
        if self.log:
            moved = value * (2.0 ** (direction * scale))
        else:
            moved = value + direction * scale * (self.high - self.low) / 8
        if self.kind == "int":
            moved = round(moved)
            if moved == value:
                moved = value + direction
            return int(min(self.high, max(self.low, moved)))
        return float(f"{min(self.high, max(self.low, moved)):.4g}")


@dataclass(frozen=True)
class MultipleOf:
    """``config[name]`` must be a multiple of the product of ``factors`` (names or fixed ints)."""

    name: str
    factors: tuple[str | int, ...]

    def divisor(self, config: Mapping[str, Any]) -> int:
        product = 1
        for factor in self.factors:
            product *= int(config[factor]) if isinstance(factor, str) else int(factor)
        return product

    def reason(self, config: Mapping[str, Any]) -> str | None:
        divisor = self.divisor(config)
        value = config[self.name]
        if divisor <= 0 or value % divisor:
            parts = " × ".join(f"{f}={config[f]}" if isinstance(f, str) else str(f) for f in self.factors)
            return f"{self.name}={value} is not a multiple of {parts} = {divisor}"
        return None


@dataclass(frozen=True)
class SearchSpace:
    dims: tuple[Dim, ...]
    constraints: tuple[MultipleOf, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constants the constraints read, not searched

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def dim(self, name: str) -> Dim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    @classmethod
    def local_box(cls, start: Mapping[str, Any], *, factor: float = 4.0, pow2: Collection[str] = (), pow2_span: int = 2,
                  choices: Mapping[str, Sequence[Any]] | None = None, bounds: Mapping[str, tuple[float, float]] | None = None,
                  constraints: Sequence[MultipleOf] = (), fixed: Mapping[str, Any] | None = None) -> SearchSpace:
        """A box around ``start``: positive numbers within ×/÷ ``factor`` (log scale), zero-based ones
        within ``bounds`` (required for them), the names in ``pow2`` as powers of two within
        ``pow2_span`` doublings, the names in ``choices`` as categorical."""
        dims = []
        bounds = dict(bounds or {})
        for name, value in start.items():
            if choices and name in choices:
                options = tuple(dict.fromkeys((value, *choices[name])))
                dims.append(Dim(name, "choice", choices=options))
            elif name in bounds:
                low, high = bounds[name]
                kind = "int" if isinstance(value, int) and not isinstance(value, bool) else "float"
                dims.append(Dim(name, kind, low=low, high=high, log=low > 0 and high / low > 20))
            elif name in pow2:
                if not _is_pow2(value):
                    raise ValueError(f"{name}={value!r} is declared a power of two but is not one")
                low = max(1, value >> pow2_span)
                dims.append(Dim(name, "pow2", low=low, high=value << pow2_span))
            elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
                dims.append(Dim(name, "int", low=max(1, math.floor(value / factor)), high=math.ceil(value * factor)))
            elif isinstance(value, float) and value > 0:
                dims.append(Dim(name, "float", low=value / factor, high=value * factor, log=True))
            else:
                raise ValueError(f"{name}={value!r}: give bounds for a non-positive or non-numeric start value")
        return cls(dims=tuple(dims), constraints=tuple(constraints), fixed=dict(fixed or {}))

    def feasible(self, config: Mapping[str, Any]) -> str | None:
        """``None`` when ``config`` can run, else the first reason it cannot (one line)."""
        for d in self.dims:
            if d.name not in config:
                return f"{d.name} is missing"
            if not d.contains(config[d.name]):
                return f"{d.name}={config[d.name]!r} is outside the search space"
        full = {**self.fixed, **config}
        for constraint in self.constraints:
            reason = constraint.reason(full)
            if reason:
                return reason
        return None

    def repair(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Round each constrained value to the nearest feasible multiple inside its dimension."""
        fixed = dict(config)
        for constraint in self.constraints:
            full = {**self.fixed, **fixed}
            divisor = constraint.divisor(full)
            d = self.dim(constraint.name)
            if divisor <= 0 or divisor > d.high:
                continue
            value = max(divisor, round(fixed[constraint.name] / divisor) * divisor)
            if d.kind == "pow2" and not _is_pow2(value):
                continue
            if d.contains(value):
                fixed[constraint.name] = value
        return fixed

    def sample(self, rng: random.Random, *, attempts: int = 100) -> dict[str, Any]:
        for _ in range(attempts):
            config = self.repair({d.name: d.sample(rng) for d in self.dims})
            if self.feasible(config) is None:
                return config
        raise ValueError("could not draw a feasible configuration in 100 attempts; the constraints are too tight")


def _is_pow2(value: float) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0
