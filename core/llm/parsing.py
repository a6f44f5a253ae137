"""Structured output: the schema instruction sent with a request, and the lenient parse of a reply.

A reply is cleaned of ``<think>…</think>`` reasoning, then the JSON object is taken from the first
fenced block that holds one (```json preferred), else the first balanced JSON object anywhere in
the text, and validated by the pydantic schema. A failure yields the error text the repair round
shows the model.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.llm.base import Message

M = TypeVar("M", bound=BaseModel)

SCHEMA_INSTRUCTION = (
    "Answer with exactly one JSON object that conforms to the JSON Schema below. "
    "Output only the JSON object, with no prose before or after it.\n\nJSON Schema:\n{schema}"
)
REPAIR_INSTRUCTION = (
    "Your previous reply could not be used: {error}\n\n"
    "Reply again with only one JSON object that conforms to the JSON Schema given earlier."
)

_THINK_BLOCK = re.compile(r"<(think|thinking)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(r"</(think|thinking)\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking)\b[^>]*>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)```", re.DOTALL)


class ParseFailure(ValueError):
    """The reply holds no usable object; the message is meant for the model's repair round."""


def schema_instruction(schema: type[BaseModel]) -> str:
    return SCHEMA_INSTRUCTION.format(schema=json.dumps(schema.model_json_schema(), indent=2))


def repair_message(error: str) -> Message:
    return {"role": "user", "content": REPAIR_INSTRUCTION.format(error=error)}


def with_schema_instruction(
    messages: tuple[Message, ...], schema: type[BaseModel] | None
) -> tuple[Message, ...]:
    """The wire conversation: the caller's system turns, then the schema instruction, then the rest."""
    if schema is None:
        return messages
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    instruction: Message = {"role": "system", "content": schema_instruction(schema)}
    return (*messages[:lead], instruction, *messages[lead:])


def strip_thinking(text: str) -> str:
    """Remove reasoning blocks. A dangling ``</think>`` (the opening tag was eaten by a chat
    template) drops everything before it; an unclosed ``<think>`` drops everything after it."""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text.strip()


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object a reply carries, or :class:`ParseFailure` saying why there is none."""
    cleaned = strip_thinking(text)
    if not cleaned:
        raise ParseFailure("the reply is empty (after removing any <think> block)")
    fences = sorted(_FENCE.finditer(cleaned), key=lambda m: m.group(1).lower() != "json")
    for fence in fences:
        found = _first_object(fence.group(2))
        if found is not None:
            return found
    found = _first_object(cleaned)
    if found is not None:
        return found
    if "{" in cleaned:
        raise ParseFailure("the reply contains no valid JSON object (the braces do not parse as JSON)")
    raise ParseFailure("the reply contains no JSON object")


def _first_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_structured(text: str, schema: type[M]) -> M:
    """Validate a reply into ``schema``; :class:`ParseFailure` carries a model-readable reason."""
    data = extract_json_object(text)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise ParseFailure(f"the JSON object does not match schema {schema.__name__}: {errors}") from exc
