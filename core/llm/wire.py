"""What the network backends share: the OpenAI chat-completions wire (openai, deepseek,
openrouter, compat, ollama; :mod:`core.llm.openai_wire`) and the native Anthropic Messages wire
(:mod:`core.llm.anthropic_wire`).

The SDKs are imported lazily, constructed with ``max_retries=0`` (our policy retries) and with
the key passed explicitly. Every SDK exception is translated into a :class:`ProviderError`
(final) or a :class:`TransientProviderError` (retried) carrying status code and ``retry-after``;
an HTTP 200 whose body is not JSON is a transient error too, never a bare decode error.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import ProviderError
from core.llm.base import LLMRequest, TransientProviderError
from core.llm.parsing import compact_schema, estimate_tokens
from core.llm.registry import Endpoint, ModelId
from core.llm.retry import parse_retry_after

logger = logging.getLogger(__name__)

ANTHROPIC_DEFAULT_MAX_TOKENS = 4096
# Local OpenAI-compatible servers need no key, but the SDK insists on one; this is sent instead.
NO_KEY_PLACEHOLDER = "no-key-needed"

RETRYABLE_STATUS = frozenset({408, 429})
# Words in a 400 that mean "this server does not take the native structured-output parameters".
_STRUCTURED_WORDS = ("response_format", "json_schema", "json_object", "structured", "tool_choice", "tools")


def _status_is_transient(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def _hint(status: int, model_id: ModelId, endpoint: Endpoint) -> str:
    key = endpoint.key_env or "the API key"
    where = endpoint.base_url or "the provider's default URL"
    hints = {
        400: "the provider rejected the request as malformed",
        401: f"the key was rejected: check {key}",
        402: "the account has no credit left",
        403: f"the key in {key} has no permission for model {model_id.model!r}",
        404: f"model {model_id.model!r} or the endpoint was not found at {where}: check the model name and base URL",
        413: "the request is too large for this model",
        422: "the provider could not process the request",
    }
    return hints.get(status, "the provider refused the request")


def translate_sdk_error(
    exc: Exception, sdk: Any, *, model_id: ModelId, endpoint: Endpoint, timeout_s: float | None = None
) -> ProviderError:
    """Map an ``openai`` / ``anthropic`` SDK exception (both share the same class names). Transient
    errors leave the model id out: the retry loop's final message names it once."""
    if isinstance(exc, sdk.APITimeoutError):
        after = f" after {timeout_s:g}s" if timeout_s else ""
        return TransientProviderError(f"request timed out{after}")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return TransientProviderError(f"connection failed ({type(cause).__name__}: {_short(str(cause))})")
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        detail = _error_detail(exc)
        if _status_is_transient(status):
            return TransientProviderError(
                f"HTTP {status}: {detail}", status_code=status, retry_after=retry_after
            )
        return ProviderError(
            f"{model_id}: HTTP {status}: {detail}. Hint: {_hint(status, model_id, endpoint)}",
            status_code=status,
            retry_after=retry_after,
        )
    return ProviderError(f"{model_id}: unusable response ({type(exc).__name__}: {_short(str(exc))})")


def _error_detail(exc: Any) -> str:
    """The provider's own error message: ``{"error": {"message": ...}}`` or ``{"message": ...}``."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message")
        if isinstance(message, str) and message.strip():
            return _short(message)
    return _short(getattr(exc, "message", "") or str(exc))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_json(exc: ValueError) -> TransientProviderError:
    """An HTTP 200 whose body is not JSON (a proxy's error page, a half-written body)."""
    return TransientProviderError(f"the reply body is not JSON ({type(exc).__name__}: {_short(str(exc), 120)})")


def rejects_structured(exc: Exception, sdk: Any, request: LLMRequest) -> bool:
    """True when a 400/422 refuses the native structured-output parameters of ``request``."""
    if request.structured in (None, "prompt") or not isinstance(exc, sdk.APIStatusError):
        return False
    if int(exc.status_code) not in (400, 422):
        return False
    detail = _error_detail(exc).lower()
    return any(word in detail for word in _STRUCTURED_WORDS)


def usage_or_estimate(
    request: LLMRequest, text: str, reasoning: str, prompt: int | None, completion: int | None
) -> tuple[int, int, bool]:
    """The provider's token counts, or an estimate from characters when it sent none (a local
    server, a proxy): (prompt, completion, estimated)."""
    if prompt is not None and completion is not None:
        return prompt, completion, False
    sent = "".join(m["content"] for m in request.wire_messages)
    if request.schema is not None and request.structured not in (None, "prompt"):
        sent += compact_schema(request.schema)
    return estimate_tokens(sent), estimate_tokens(text, reasoning), True


def reasoning_text(obj: Any) -> str:
    """A reasoning model's separate thinking (``reasoning_content``: DeepSeek, llama.cpp;
    ``reasoning``: OpenRouter, Ollama); never part of the answer."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(obj, name, None)
        if isinstance(value, str) and value:
            return value
    return ""
