"""Network backends: the OpenAI chat-completions wire (openai, deepseek, openrouter, compat,
ollama) and the native Anthropic Messages wire.

The SDKs are imported lazily, constructed with ``max_retries=0`` (our policy retries) and with
the key passed explicitly. Every SDK exception is translated into a :class:`ProviderError`
(final) or a :class:`TransientProviderError` (retried) carrying status code and ``retry-after``.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import ProviderError
from core.llm.base import LLMReply, LLMRequest, TransientProviderError
from core.llm.registry import Endpoint, ModelId
from core.llm.retry import parse_retry_after

logger = logging.getLogger(__name__)

ANTHROPIC_DEFAULT_MAX_TOKENS = 4096
# Local OpenAI-compatible servers need no key, but the SDK insists on one; this is sent instead.
NO_KEY_PLACEHOLDER = "no-key-needed"

RETRYABLE_STATUS = frozenset({408, 429})


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


class OpenAIChatBackend:
    """Chat completions through the ``openai`` SDK, for any OpenAI-compatible base URL."""

    billable = True
    retryable = True

    def __init__(
        self, *, model_id: ModelId, endpoint: Endpoint, timeout_s: float, max_tokens: int | None = None
    ) -> None:
        import openai

        self._sdk = openai
        self._model_id = model_id
        self._endpoint = endpoint
        self._max_tokens = max_tokens
        kwargs: dict[str, Any] = {
            "api_key": endpoint.api_key or NO_KEY_PLACEHOLDER,
            "timeout": timeout_s,
            "max_retries": 0,
        }
        if endpoint.base_url:
            kwargs["base_url"] = endpoint.base_url
        self._client = openai.OpenAI(**kwargs)

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": list(request.wire_messages),
            "timeout": request.timeout_s,
        }
        if self._max_tokens is not None:
            kwargs["max_tokens"] = self._max_tokens
        try:
            response = self._client.chat.completions.create(**kwargs)
        except self._sdk.OpenAIError as exc:
            raise translate_sdk_error(
                exc, self._sdk, model_id=self._model_id, endpoint=self._endpoint, timeout_s=request.timeout_s
            ) from exc
        if not hasattr(response, "choices"):  # HTTP 200 whose body is not JSON: the SDK hands back text
            raise TransientProviderError(f"the reply is not a chat completion: {_short(str(response), 120)!r}")
        if not response.choices:
            raise ProviderError(f"{self._model_id}: the reply has no choices")
        message = response.choices[0].message
        text = message.content
        if text is None:
            refusal = getattr(message, "refusal", None)
            raise ProviderError(
                f"{self._model_id}: empty reply" + (f" (refusal: {_short(refusal)})" if refusal else "")
            )
        usage = response.usage
        if usage is None:
            logger.debug("%s: reply carries no usage; counting 0 tokens", self._model_id)
        return LLMReply(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    def close(self) -> None:
        self._client.close()


class AnthropicBackend:
    """The Messages API through the native ``anthropic`` SDK; system turns go to ``system``."""

    billable = True
    retryable = True

    def __init__(
        self, *, model_id: ModelId, endpoint: Endpoint, timeout_s: float, max_tokens: int | None = None
    ) -> None:
        import anthropic

        self._sdk = anthropic
        self._model_id = model_id
        self._endpoint = endpoint
        self._max_tokens = max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS
        kwargs: dict[str, Any] = {"api_key": endpoint.api_key, "timeout": timeout_s, "max_retries": 0}
        if endpoint.base_url:
            kwargs["base_url"] = endpoint.base_url
        self._client = anthropic.Anthropic(**kwargs)

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        system = "\n\n".join(m["content"] for m in request.wire_messages if m["role"] == "system")
        turns = [m for m in request.wire_messages if m["role"] != "system"]
        if not turns:
            turns = [{"role": "user", "content": "Begin."}]
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": self._max_tokens,
            "messages": turns,
            "timeout": request.timeout_s,
        }
        if system:
            kwargs["system"] = system
        try:
            response = self._client.messages.create(**kwargs)
        except self._sdk.AnthropicError as exc:
            raise translate_sdk_error(
                exc, self._sdk, model_id=self._model_id, endpoint=self._endpoint, timeout_s=request.timeout_s
            ) from exc
        if not hasattr(response, "content"):  # HTTP 200 whose body is not JSON
            raise TransientProviderError(f"the reply is not a message: {_short(str(response), 120)!r}")
        text = "".join(block.text for block in response.content if getattr(block, "type", "") == "text")
        usage = response.usage
        return LLMReply(
            text=text,
            prompt_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
        )

    def close(self) -> None:
        self._client.close()
