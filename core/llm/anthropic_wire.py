"""The Messages API through the native ``anthropic`` SDK.

System turns go to ``system``, one text block each; a long first block (the stable context a
caller puts first, e.g. the article being revised) is marked for prompt caching, so the calls that
repeat it read it from the cache. Structured requests in ``tool`` mode force one tool whose input
schema is the answer's schema; the tool's input is the answer. Thinking blocks never reach the
answer. ``stop_reason == "max_tokens"`` marks the reply as truncated. With the ``stream`` trait the
reply is streamed, so the timeout bounds each wait for the next event, not the whole generation.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.llm.base import LLMReply, LLMRequest, StructuredModeRejected, TransientProviderError
from core.llm.parsing import estimate_tokens
from core.llm.registry import Endpoint, ModelId, ModelTraits
from core.llm.wire import (
    ANTHROPIC_DEFAULT_MAX_TOKENS,
    _short,
    not_json,
    rejects_structured,
    translate_sdk_error,
    usage_or_estimate,
)

logger = logging.getLogger(__name__)

# Anthropic caches prefixes of at least 1,024 tokens (2,048 on Haiku); shorter marks are ignored,
# so only a block that can qualify is marked.
CACHE_MIN_CHARS = 4_000
TOOL_DESCRIPTION = "Give your answer as the input of this tool."


class AnthropicBackend:
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
        import anthropic

        self._sdk = anthropic
        self._model_id = model_id
        self._endpoint = endpoint
        self._max_tokens = max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS
        self.traits = traits or ModelTraits(structured="tool")
        kwargs: dict[str, Any] = {"api_key": endpoint.api_key, "timeout": timeout_s, "max_retries": 0}
        if endpoint.base_url:
            kwargs["base_url"] = endpoint.base_url
        self._client = anthropic.Anthropic(**kwargs)

    def request_kwargs(self, request: LLMRequest, model: str) -> dict[str, Any]:
        systems = [m["content"] for m in request.wire_messages if m["role"] == "system"]
        turns = [m for m in request.wire_messages if m["role"] != "system"] or [{"role": "user", "content": "Begin."}]
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": self._max_tokens,
            "messages": turns,
            "timeout": request.timeout_s,
        }
        if systems and len(systems[0]) >= CACHE_MIN_CHARS:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text} for text in systems]
            blocks[0]["cache_control"] = {"type": "ephemeral"}
            kwargs["system"] = blocks
        elif systems:
            kwargs["system"] = "\n\n".join(systems)
        if request.schema is not None and request.structured == "tool":
            name = request.schema.__name__
            kwargs["tools"] = [
                {"name": name, "description": TOOL_DESCRIPTION, "input_schema": request.schema.model_json_schema()}
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": name}
        return kwargs

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        kwargs = self.request_kwargs(request, model)
        try:
            if self.traits.stream:
                with self._client.messages.stream(**kwargs) as stream:
                    response = stream.get_final_message()
            else:
                response = self._client.messages.create(**kwargs)
        except self._sdk.AnthropicError as exc:
            if rejects_structured(exc, self._sdk, request):
                raise StructuredModeRejected(f"{self._model_id}: {exc}") from exc
            raise translate_sdk_error(
                exc, self._sdk, model_id=self._model_id, endpoint=self._endpoint, timeout_s=request.timeout_s
            ) from exc
        except ValueError as exc:  # HTTP 200 with a JSON content type and a body that is not JSON
            raise not_json(exc) from exc
        if not hasattr(response, "content"):  # HTTP 200 whose body is not JSON
            raise TransientProviderError(f"the reply is not a message: {_short(str(response), 120)!r}")
        texts, thinking = [], []
        for block in response.content:
            kind = getattr(block, "type", "")
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                texts.append(json.dumps(block.input, ensure_ascii=False))
            elif kind == "thinking":
                thinking.append(getattr(block, "thinking", "") or "")
        text, reasoning = "".join(texts), "".join(thinking)
        usage = response.usage
        fresh = getattr(usage, "input_tokens", None)
        written = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        prompt, completion, estimated = usage_or_estimate(
            request,
            text,
            reasoning,
            None if fresh is None else int(fresh) + written + read,
            getattr(usage, "output_tokens", None),
        )
        return LLMReply(
            text=text,
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            reasoning_tokens=estimate_tokens(reasoning) if reasoning else 0,
            truncated=getattr(response, "stop_reason", None) == "max_tokens",
            usage_estimated=estimated,
            extra={"cached_tokens": read} if read else {},
        )

    def close(self) -> None:
        self._client.close()
