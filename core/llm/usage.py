"""Usage accounting: a price table, one record per call, a run-wide ledger and a budget cap.

All clients of a run share one :class:`UsageLedger`; each client stamps its records with its
``level`` ("inner", "outer", "mechanism", "judge"...), so totals come per call, per level and per
run. The ledger hands every record to an optional ``sink`` (the run journals them) and is rebuilt
from those dicts on resume with :meth:`UsageLedger.from_records`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from core.errors import BudgetExceeded

logger = logging.getLogger(__name__)

# USD per 1M tokens (input, output): approximate list prices at the time of writing. They change;
# pass ``prices=`` to the client for accurate numbers. A model not listed costs 0 (tokens are
# still counted). Keys are a model name or a full "provider:model" id (which wins).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-opus-4-1": (15.00, 75.00),
    "deepseek-chat": (0.28, 0.42),
    "deepseek-reasoner": (0.28, 0.42),
    "openrouter:openai/gpt-4o-mini": (0.15, 0.60),
}

# Price of a cached input token relative to a fresh one (Anthropic cache reads, OpenAI cached input).
CACHE_READ_FACTOR: dict[str, float] = {"anthropic": 0.1}
CACHE_READ_FACTOR_DEFAULT = 0.5


class PriceTable:
    """Looks a model up as ``provider:model`` first, then as the bare model name."""

    def __init__(
        self, overrides: Mapping[str, tuple[float, float]] | None = None, *, include_defaults: bool = True
    ) -> None:
        table = dict(DEFAULT_PRICES) if include_defaults else {}
        for name, (inp, out) in (overrides or {}).items():
            if inp < 0 or out < 0:
                raise ValueError(f"negative price for {name!r}")
            table[name] = (float(inp), float(out))
        self._table = table

    def price(self, provider: str, model: str) -> tuple[float, float] | None:
        return self._table.get(f"{provider}:{model}") or self._table.get(model)

    def cost(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0
    ) -> float:
        """USD for one call. ``cached_tokens`` (part of ``prompt_tokens``) were read from the
        provider's prompt cache and cost :data:`CACHE_READ_FACTOR` of the input price."""
        found = self.price(provider, model)
        if found is None:
            return 0.0
        cached = min(max(cached_tokens, 0), prompt_tokens)
        factor = CACHE_READ_FACTOR.get(provider, CACHE_READ_FACTOR_DEFAULT)
        inputs = (prompt_tokens - cached) + cached * factor
        return (inputs * found[0] + completion_tokens * found[1]) / 1_000_000


class CallRecord(BaseModel):
    """One completed call, exactly as handed to the sink. Unknown keys (a journal's envelope) are
    ignored when a record is rebuilt. ``reasoning_tokens`` and ``cached_tokens`` are parts of
    ``completion_tokens`` and ``prompt_tokens``; ``usage_estimated`` says the provider sent no
    usage and the counts are estimated from characters."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    level: str
    provider: str
    model: str
    purpose: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    latency_s: float = Field(ge=0)
    request_hash: str = ""
    reasoning_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    usage_estimated: bool = False
    ts: float = Field(default_factory=time.time)


@dataclass(frozen=True)
class UsageTotals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, record: CallRecord) -> UsageTotals:
        return UsageTotals(
            calls=self.calls + 1,
            prompt_tokens=self.prompt_tokens + record.prompt_tokens,
            completion_tokens=self.completion_tokens + record.completion_tokens,
            cost_usd=self.cost_usd + record.cost_usd,
        )


class Budget(BaseModel):
    """A cap on the run's LLM use, checked against the shared ledger before each call.

    A call is refused when ``max_calls`` calls are done or under way, or — for a paid provider —
    when the cost already spent is ``>= max_cost_usd`` (a call's cost is only known after it, so
    the last call may overshoot the cap by its own price). Failed calls are not counted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_cost_usd: float | None = Field(default=None, ge=0)
    max_calls: int | None = Field(default=None, ge=0)


Sink = Callable[[dict], None]


class UsageLedger:
    """Thread-safe run-wide record of calls. Clients call :meth:`begin_call` before a request
    (which enforces the budget, counting calls in flight) and :meth:`end_call` after it."""

    def __init__(self, *, sink: Sink | None = None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._total = UsageTotals()
        self._levels: dict[str, UsageTotals] = {}
        self._in_flight = 0

    @classmethod
    def from_records(cls, records: Iterable[Mapping], *, sink: Sink | None = None) -> UsageLedger:
        """Rebuild a ledger on resume from the dicts its sink received; the sink is not called
        for them (they are already journaled)."""
        ledger = cls(sink=sink)
        for raw in records:
            ledger._add(CallRecord.model_validate(raw))
        return ledger

    def begin_call(self, budget: Budget | None, *, what: str, billable: bool = True) -> None:
        """Reserve a call or raise :class:`BudgetExceeded`. The cost cap only stops ``billable``
        calls: an offline or replayed answer costs nothing, so it is limited by ``max_calls`` only."""
        with self._lock:
            if budget is not None:
                done = self._total.calls + self._in_flight
                if budget.max_calls is not None and done >= budget.max_calls:
                    raise BudgetExceeded(
                        f"LLM call budget spent: {done} of max_calls={budget.max_calls} used; refusing {what}"
                    )
                spent = self._total.cost_usd
                if billable and budget.max_cost_usd is not None and spent >= budget.max_cost_usd:
                    raise BudgetExceeded(
                        f"LLM cost budget spent: ${self._total.cost_usd:.4f} of "
                        f"max_cost_usd=${budget.max_cost_usd:.4f}; refusing {what}"
                    )
            self._in_flight += 1

    def end_call(self, record: CallRecord | None) -> None:
        """Close a call begun with :meth:`begin_call`; ``None`` means it failed (nothing counted)."""
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            if record is not None:
                self._add(record)
        if record is not None and self._sink is not None:
            self._sink(record.model_dump(mode="json"))

    def _add(self, record: CallRecord) -> None:
        self._records.append(record)
        self._total = self._total.add(record)
        self._levels[record.level] = self._levels.get(record.level, UsageTotals()).add(record)

    @property
    def records(self) -> tuple[CallRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def totals(self, level: str | None = None) -> UsageTotals:
        """Run totals, or one level's."""
        with self._lock:
            return self._total if level is None else self._levels.get(level, UsageTotals())

    def by_level(self) -> dict[str, UsageTotals]:
        with self._lock:
            return dict(self._levels)
