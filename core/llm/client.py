"""The client every level talks to: retry, budget, usage, recording and structured-output repair
wrapped around one backend.

Per request: check the budget (before anything is sent) → send with retries → record the answer
to the cassette → add a :class:`~core.llm.usage.CallRecord` to the ledger. ``structured()``
parses the reply into a pydantic model and, if that fails, sends one repair round (the model's
reply plus a message quoting the error, and saying so when the reply was cut off at the token
limit) before giving up with :class:`~core.errors.StructuredOutputError`. Each round is one call
for the budget and the ledger.

``structured`` is the model's structured-output mode (:data:`~core.llm.registry.STRUCTURED_MODES`).
A server that refuses the native parameters is asked again at once in mode ``prompt``, which the
client then keeps for the rest of its life (logged once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel

from core.errors import StructuredOutputError
from core.llm.base import Backend, LLMReply, LLMRequest, Message, StructuredModeRejected, normalize_messages
from core.llm.cassette import CassetteRecorder, request_hash
from core.llm.parsing import (
    ParseFailure,
    parse_structured,
    repair_message,
    strip_thinking,
    with_schema_instruction,
)
from core.llm.registry import ModelId
from core.llm.retry import RetryPolicy, call_with_retries
from core.llm.usage import Budget, CallRecord, PriceTable, UsageLedger

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class LLMClient:
    """One model at one level of a run. Build it with :func:`core.llm_client.make_client`."""

    def __init__(
        self,
        *,
        model_id: ModelId,
        backend: Backend,
        level: str = "inner",
        ledger: UsageLedger | None = None,
        budget: Budget | None = None,
        prices: PriceTable | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        recorder: CassetteRecorder | None = None,
        structured: str = "prompt",
    ) -> None:
        if not level or not isinstance(level, str):
            raise ValueError("level must be a non-empty label such as 'inner' or 'outer'")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model_id = model_id
        self.level = level
        self.ledger = ledger if ledger is not None else UsageLedger()
        self.budget = budget
        self.timeout_s = float(timeout_s)
        self._backend = backend
        self._prices = prices or PriceTable()
        self._retry = retry or RetryPolicy()
        self._recorder = recorder
        self.structured_mode = structured
        self._warned_estimate = False

    @property
    def provider(self) -> str:
        return self.model_id.provider

    @property
    def model(self) -> str:
        return self.model_id.model

    def __repr__(self) -> str:
        return f"LLMClient({self.model_id}, level={self.level!r})"

    def complete(
        self,
        *,
        purpose: str,
        messages: Sequence[Mapping[str, Any]] | str,
        context: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Plain text answer (any ``<think>`` block removed)."""
        reply = self._call(purpose, normalize_messages(messages), None, context, timeout_s)
        return strip_thinking(reply.text)

    def structured(
        self,
        *,
        purpose: str,
        schema: type[M],
        messages: Sequence[Mapping[str, Any]] | str,
        context: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> M:
        """An instance of ``schema`` validated from the reply, after at most one repair round."""
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise TypeError(f"schema must be a pydantic model class, got {schema!r}")
        conversation = normalize_messages(messages)
        reply = self._call(purpose, conversation, schema, context, timeout_s)
        try:
            return parse_structured(reply.text, schema)
        except ParseFailure as first:
            logger.info("%s: %s reply unusable (%s); sending one repair round", self.model_id, purpose, first)
            repair: tuple[Message, ...] = (
                *conversation,
                {"role": "assistant", "content": strip_thinking(reply.text) or reply.text},
                repair_message(str(first), truncated=reply.truncated),
            )
        reply = self._call(purpose, repair, schema, context, timeout_s)
        try:
            return parse_structured(reply.text, schema)
        except ParseFailure as second:
            tail = " ".join(reply.text.split())[-300:]
            raise StructuredOutputError(
                f"{self.model_id} gave no valid {schema.__name__} for purpose {purpose!r} after one "
                f"repair round: {second}. Reply tail: {tail!r}"
            ) from None

    def _call(
        self,
        purpose: str,
        messages: tuple[Message, ...],
        schema: type[BaseModel] | None,
        context: Mapping[str, Any] | None,
        timeout_s: float | None,
    ) -> LLMReply:
        if not isinstance(purpose, str) or not purpose.strip():
            raise ValueError("purpose must be a non-empty string naming what the request is for")
        what = f"{self.model_id} [{self.level}] {purpose!r}"
        self.ledger.begin_call(self.budget, what=what, billable=self._backend.billable)
        record: CallRecord | None = None
        try:
            started = time.monotonic()
            request = self._request(purpose, messages, schema, context, timeout_s)
            try:
                reply = self._send(request, what)
            except StructuredModeRejected as exc:
                logger.warning(
                    "%s: the server refuses structured-output mode %r (%s); using the prompt-only mode",
                    self.model_id,
                    self.structured_mode,
                    exc,
                )
                self.structured_mode = "prompt"
                request = self._request(purpose, messages, schema, context, timeout_s)
                reply = self._send(request, what)
            latency = time.monotonic() - started
            cached = int(reply.extra.get("cached_tokens", 0) or 0)
            cost = (
                self._prices.cost(
                    self.provider, self.model, reply.prompt_tokens, reply.completion_tokens, cached_tokens=cached
                )
                if self._backend.billable
                else 0.0
            )
            if reply.usage_estimated and not self._warned_estimate:
                self._warned_estimate = True
                logger.warning(
                    "%s: the reply carries no token usage; tokens and cost are estimated from its length "
                    "(about 4 characters per token) and marked as estimated",
                    self.model_id,
                )
            record = CallRecord(
                level=self.level,
                provider=self.provider,
                model=reply.model or self.model,
                purpose=purpose,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                cost_usd=cost,
                latency_s=round(latency, 4),
                request_hash=request.request_hash,
                reasoning_tokens=reply.reasoning_tokens,
                cached_tokens=cached,
                usage_estimated=reply.usage_estimated,
            )
            if self._recorder is not None:
                self._recorder.record(request, reply, model_id=str(self.model_id), latency_s=latency)
            logger.debug(
                "%s: %d+%d tokens, $%.6f, %.2fs",
                what,
                reply.prompt_tokens,
                reply.completion_tokens,
                cost,
                latency,
            )
            return reply
        finally:
            self.ledger.end_call(record)

    def _request(
        self,
        purpose: str,
        messages: tuple[Message, ...],
        schema: type[BaseModel] | None,
        context: Mapping[str, Any] | None,
        timeout_s: float | None,
    ) -> LLMRequest:
        mode = self.structured_mode if schema is not None else None
        return LLMRequest(
            purpose=purpose,
            messages=messages,
            wire_messages=with_schema_instruction(messages, schema, mode or "prompt"),
            schema=schema,
            context=context if context is not None else _EMPTY,
            request_hash=request_hash(purpose, messages, schema.__name__ if schema is not None else None),
            timeout_s=float(timeout_s or self.timeout_s),
            structured=mode,
        )

    def _send(self, request: LLMRequest, what: str) -> LLMReply:
        if self._backend.retryable:
            return call_with_retries(lambda: self._backend.send(request, model=self.model), self._retry, what=what)
        return self._backend.send(request, model=self.model)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
