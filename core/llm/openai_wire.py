"""Chat completions through the ``openai`` SDK, for any OpenAI-compatible base URL.

Structured output per mode: ``json_schema`` and ``grammar`` send ``response_format`` with the
JSON schema (OpenAI shows it to the model; Ollama, llama.cpp and vLLM compile it into a decoding
grammar), ``json_object`` sends JSON mode, ``prompt`` sends nothing extra. A server that refuses
those parameters raises :class:`~core.llm.base.StructuredModeRejected` so the client can fall back.

Streamed replies (``stream`` trait) are read chunk by chunk: the request timeout then bounds each
wait for the next chunk, not the whole generation. A separate reasoning field is kept out of the
answer and its tokens counted; ``finish_reason == "length"`` marks the reply as truncated.
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import ProviderError
from core.llm.base import LLMReply, LLMRequest, StructuredModeRejected, TransientProviderError
from core.llm.parsing import strict_schema
from core.llm.registry import Endpoint, ModelId, ModelTraits
from core.llm.wire import (
    NO_KEY_PLACEHOLDER,
    _short,
    not_json,
    reasoning_text,
    rejects_structured,
    translate_sdk_error,
    usage_or_estimate,
)

logger = logging.getLogger(__name__)


def response_format(request: LLMRequest) -> dict[str, Any] | None:
    """The ``response_format`` for a structured request in its mode, or ``None``."""
    if request.schema is None or request.structured in (None, "prompt", "tool"):
        return None
    if request.structured == "json_object":
        return {"type": "json_object"}
    schema = request.schema.model_json_schema()
    strict = strict_schema(schema) if request.structured == "json_schema" else None
    return {
        "type": "json_schema",
        "json_schema": {"name": request.schema.__name__, "schema": strict or schema, "strict": strict is not None},
    }


class OpenAIChatBackend:
    billable = True
    retryable = True

    def __init__(
        self,
        *,
        model_id: ModelId,
        endpoint: Endpoint,
        timeout_s: float,
        max_tokens: int | None = None,
        traits: ModelTraits | None = None,
    ) -> None:
        import openai

        self._sdk = openai
        self._model_id = model_id
        self._endpoint = endpoint
        self._max_tokens = max_tokens
        self.traits = traits or ModelTraits()
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
            kwargs[self.traits.token_param] = self._max_tokens
        fmt = response_format(request)
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            return self._stream(request, kwargs) if self.traits.stream else self._once(request, kwargs)
        except self._sdk.OpenAIError as exc:
            if rejects_structured(exc, self._sdk, request):
                raise StructuredModeRejected(f"{self._model_id}: {exc}") from exc
            raise translate_sdk_error(
                exc, self._sdk, model_id=self._model_id, endpoint=self._endpoint, timeout_s=request.timeout_s
            ) from exc
        except ValueError as exc:  # HTTP 200 with a JSON content type and a body that is not JSON
            raise not_json(exc) from exc

    def _once(self, request: LLMRequest, kwargs: dict[str, Any]) -> LLMReply:
        response = self._client.chat.completions.create(**kwargs)
        if not hasattr(response, "choices"):  # HTTP 200 whose body is not JSON: the SDK hands back text
            raise TransientProviderError(f"the reply is not a chat completion: {_short(str(response), 120)!r}")
        if not response.choices:
            raise ProviderError(f"{self._model_id}: the reply has no choices")
        choice = response.choices[0]
        message = choice.message
        reasoning = reasoning_text(message)
        if message.content is None:
            refusal = getattr(message, "refusal", None)
            raise ProviderError(self._empty(choice.finish_reason, reasoning, refusal))
        return self._reply(request, message.content, reasoning, choice.finish_reason, response.usage)

    def _stream(self, request: LLMRequest, kwargs: dict[str, Any]) -> LLMReply:
        stream = self._client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        parts: list[str] = []
        thoughts: list[str] = []
        finish: str | None = None
        usage: Any = None
        try:
            for chunk in stream:
                if not hasattr(chunk, "choices"):
                    raise TransientProviderError(f"the stream sent a non-chunk: {_short(str(chunk), 120)!r}")
                usage = getattr(chunk, "usage", None) or usage
                for choice in chunk.choices or ():
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta is not None:
                        parts.append(delta.content or "")
                        thoughts.append(reasoning_text(delta))
                    finish = choice.finish_reason or finish
        finally:
            stream.close()
        text, reasoning = "".join(parts), "".join(thoughts)
        if not text and reasoning and finish == "length":
            raise ProviderError(self._empty(finish, reasoning, None))
        return self._reply(request, text, reasoning, finish, usage)

    def _empty(self, finish: str | None, reasoning: str, refusal: str | None) -> str:
        if refusal:
            return f"{self._model_id}: empty reply (refusal: {_short(refusal)})"
        if reasoning and finish == "length":
            return (
                f"{self._model_id}: the model spent its whole output-token limit on reasoning and gave "
                f"no answer; raise max_tokens"
            )
        return f"{self._model_id}: empty reply"

    def _reply(self, request: LLMRequest, text: str, reasoning: str, finish: str | None, usage: Any) -> LLMReply:
        prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion = getattr(usage, "completion_tokens", None) if usage is not None else None
        prompt, completion, estimated = usage_or_estimate(request, text, reasoning, prompt, completion)
        details = getattr(usage, "completion_tokens_details", None)
        thought = int(getattr(details, "reasoning_tokens", 0) or 0)
        if not thought and reasoning:
            thought = usage_or_estimate(request, reasoning, "", None, None)[1]
        cached = int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0)
        return LLMReply(
            text=text,
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            reasoning_tokens=thought,
            truncated=finish == "length",
            usage_estimated=estimated,
            extra={"cached_tokens": cached} if cached else {},
        )

    def close(self) -> None:
        self._client.close()
