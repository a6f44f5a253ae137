"""The project's LLM client: one entry point for every level of a run.

>>> ledger = UsageLedger()
>>> client = make_client("offline", level="inner", ledger=ledger, seed=1)   # doctest: +SKIP
>>> client.structured(purpose="propose", schema=Proposal, messages=[...], context={...})  # doctest: +SKIP

Ids are ``provider:model`` (or a bare provider for its default model) resolved through
:data:`PROVIDERS`: ``openai``, ``anthropic``, ``deepseek``, ``openrouter``, ``compat`` (any
OpenAI-compatible base URL from ``OPENAI_COMPAT_BASE_URL``), ``ollama`` (compat at
``http://localhost:11434/v1``), and two without network: ``offline`` — a deterministic seeded
**stand-in researcher, not an LLM** (see :mod:`core.llm.offline`) — and ``replay``, which answers
from a cassette recorded by ``record_to=``.

Each model's :class:`~core.llm.registry.ModelTraits` — native structured output (OpenAI
``response_format`` JSON schema, Anthropic tool use, a decoding grammar on Ollama / llama.cpp /
vLLM, or the schema in the prompt), streaming, request timeout, token-limit parameter — come from
the registry, the settings ``BILEVEL_REQUEST_TIMEOUT`` / ``BILEVEL_STRUCTURED_OUTPUT`` /
``BILEVEL_STREAM`` and the arguments of :func:`make_client`, in rising order of precedence.

User mistakes raise :class:`~core.errors.UserError` subclasses (bad id, missing key naming its
variable); provider failures raise :class:`~core.errors.ProviderError` after retries (429, 5xx,
timeouts, connection errors; other 4xx at once with a hint). A spent :class:`Budget` raises
:class:`~core.errors.BudgetExceeded` before the call is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from core.errors import UserError
from core.llm.base import Backend, Message
from core.llm.cassette import CassetteRecorder, ReplayBackend, read_cassette, request_hash
from core.llm.client import LLMClient
from core.llm.offline import (
    OfflineBackend,
    OfflineHandler,
    OfflineRequest,
    offline_purposes,
    register_offline_handler,
    unregister_offline_handler,
)
from core.llm.registry import (
    PROVIDERS,
    STRUCTURED_MODES,
    ModelId,
    ModelTraits,
    ProviderSpec,
    check_provider,
    model_traits,
    resolve_endpoint,
    resolve_model_id,
    resolve_traits,
    resolve_with_cassette,
)
from core.llm.retry import RetryPolicy
from core.llm.usage import DEFAULT_PRICES, Budget, CallRecord, PriceTable, UsageLedger, UsageTotals

__all__ = [
    "DEFAULT_PRICES",
    "PROVIDERS",
    "STRUCTURED_MODES",
    "Budget",
    "CallRecord",
    "LLMClient",
    "Message",
    "ModelId",
    "ModelTraits",
    "OfflineHandler",
    "OfflineRequest",
    "PriceTable",
    "ProviderSpec",
    "RetryPolicy",
    "UsageLedger",
    "UsageTotals",
    "check_provider",
    "make_client",
    "model_traits",
    "offline_purposes",
    "read_cassette",
    "register_offline_handler",
    "request_hash",
    "resolve_model_id",
    "resolve_traits",
    "unregister_offline_handler",
]


def make_client(
    provider: str,
    model: str | None = None,
    *,
    level: str = "inner",
    ledger: UsageLedger | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    record_to: str | os.PathLike[str] | None = None,
    cassette: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    max_retries: int = 4,
    retry_base_delay_s: float = 0.5,
    retry: RetryPolicy | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    max_tokens: int | None = None,
    structured_output: str | None = None,
    stream: bool | None = None,
) -> LLMClient:
    """Build a client for ``provider`` (``"provider:model"`` or a bare name) and ``model``.

    Keys and base URLs are checked here, so a CLI fails before doing any work. ``seed`` drives the
    offline stand-in; ``record_to`` appends every answered call to a cassette; ``cassette`` (or
    ``replay:PATH``) is what provider ``replay`` answers from. ``retry`` overrides ``max_retries``
    and ``retry_base_delay_s``. ``prices`` (USD per 1M input, output tokens) extend the defaults.

    ``timeout_s`` (seconds; ``None`` = the ``BILEVEL_REQUEST_TIMEOUT`` setting, else the model's
    default: 120 s hosted, 600 s for reasoning models, 900 s streamed for local servers) bounds a
    whole non-streamed reply, or each wait for the next chunk of a streamed one.
    ``structured_output`` (one of :data:`STRUCTURED_MODES`) and ``stream`` override the registry's
    choice for the model.
    """
    model_id = resolve_with_cassette(provider, model, cassette)
    spec = model_id.spec
    traits = resolve_traits(
        model_id.provider, model_id.model, timeout_s=timeout_s, structured_output=structured_output, stream=stream
    )
    backend: Backend
    if spec.wire == "offline":
        backend = OfflineBackend(seed=seed)
    elif spec.wire == "replay":
        if record_to is not None:
            raise UserError(
                "record_to cannot be combined with provider 'replay' (it would copy the cassette)"
            )
        path = Path(model_id.model)
        if not path.is_file():
            raise UserError(f"replay cassette not found: {path}")
        backend = ReplayBackend(path)
    else:
        endpoint = resolve_endpoint(model_id, base_url=base_url, api_key=api_key)
        if spec.wire == "anthropic":
            from core.llm.backends import AnthropicBackend as backend_cls
        else:
            from core.llm.backends import OpenAIChatBackend as backend_cls
        backend = backend_cls(
            model_id=model_id, endpoint=endpoint, timeout_s=traits.timeout_s, max_tokens=max_tokens, traits=traits
        )
    return LLMClient(
        model_id=model_id,
        backend=backend,
        level=level,
        ledger=ledger,
        budget=budget,
        prices=PriceTable(prices),
        retry=retry or RetryPolicy(max_retries=max_retries, base_delay_s=retry_base_delay_s),
        timeout_s=traits.timeout_s,
        structured=traits.structured,
        recorder=CassetteRecorder(record_to) if record_to is not None else None,
    )
