"""Structured output: the schema instruction sent with a request, and the lenient parse of a reply.

Where the schema travels depends on the model's structured-output mode: natively (``json_schema``,
``tool``) the API carries it and the prompt only names it; otherwise (``grammar``, ``json_object``,
``prompt``) the prompt carries it in compact JSON. Either way the reply is parsed the same way:
cleaned of ``<think>…</think>`` reasoning, the JSON object taken from the first fenced block that
holds one (```json preferred), else the first balanced JSON object in the text, and validated by
the pydantic schema. A reply that ends inside its object is reported as cut off — never answered
with an object nested in it. A failure yields the error text the repair round shows the model.
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
NATIVE_INSTRUCTION = (
    "Answer with exactly one JSON object that conforms to the response schema {name} "
    "attached to this request."
)
NATIVE_MODES = frozenset({"json_schema", "tool"})  # the API shows the model the schema
REPAIR_INSTRUCTION = (
    "Your previous reply could not be used: {error}\n\n"
    "Reply again with only one JSON object that conforms to the schema given earlier."
)
TRUNCATED_NOTE = (
    "Your previous reply was cut off at the output-token limit before the JSON object was complete. "
    "Give the same answer more briefly (shorter strings, no commentary)."
)
CHARS_PER_TOKEN = 4
# Keywords OpenAI's strict mode refuses; a schema using them is sent with ``strict: false``.
STRICT_UNSUPPORTED = frozenset({"minLength", "maxLength", "minProperties", "maxProperties", "uniqueItems",
                                "contains", "patternProperties", "unevaluatedProperties"})

_THINK_BLOCK = re.compile(r"<(think|thinking)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(r"</(think|thinking)\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking)\b[^>]*>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[^\n]*\n(.*?)```", re.DOTALL)


class ParseFailure(ValueError):
    """The reply holds no usable object; the message is meant for the model's repair round."""


def compact_schema(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), separators=(",", ":"), ensure_ascii=False)


def schema_instruction(schema: type[BaseModel], mode: str = "prompt") -> str:
    if mode in NATIVE_MODES:
        return NATIVE_INSTRUCTION.format(name=schema.__name__)
    return SCHEMA_INSTRUCTION.format(schema=compact_schema(schema))


def repair_message(error: str, *, truncated: bool = False) -> Message:
    text = REPAIR_INSTRUCTION.format(error=error)
    return {"role": "user", "content": f"{TRUNCATED_NOTE}\n\n{text}" if truncated else text}


def estimate_tokens(*texts: str) -> int:
    """A rough count for a reply that carries no usage: about four characters per token."""
    chars = sum(len(t) for t in texts)
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` in OpenAI's strict form (every object closed, every property required), or
    ``None`` where that would change its meaning (optional fields, open dicts): such schemas are
    sent with ``strict: false`` and still validated here."""
    import copy

    out = copy.deepcopy(schema)
    nodes = [out, *out.get("$defs", {}).values()]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, dict):
            continue
        if "default" in node or STRICT_UNSUPPORTED & node.keys():
            return None
        if node.get("type") == "object":
            props = node.get("properties")
            extra = node.get("additionalProperties", False)
            if not props or extra not in (False, None) or set(node.get("required", ())) != set(props):
                return None
            node["additionalProperties"] = False
        for key in ("properties",):
            nodes.extend((node.get(key) or {}).values())
        for key in ("items", "anyOf", "allOf", "oneOf", "prefixItems"):
            value = node.get(key)
            nodes.extend(value if isinstance(value, list) else [value] if value else [])
    return out


def with_schema_instruction(
    messages: tuple[Message, ...], schema: type[BaseModel] | None, mode: str = "prompt"
) -> tuple[Message, ...]:
    """The wire conversation: the caller's system turns, then the schema instruction, then the rest."""
    if schema is None:
        return messages
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    instruction: Message = {"role": "system", "content": schema_instruction(schema, mode)}
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
        try:
            found = _first_object(fence.group(2))
        except ParseFailure:
            continue  # an unclosed brace in some other fenced block; the whole text decides
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
    end = len(text.rstrip())
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            if exc.pos >= end or exc.msg.startswith("Unterminated string"):
                # the object runs to the end of the reply: it was cut off, and whatever is nested
                # in it is not the answer
                raise ParseFailure(
                    "the reply ends inside its JSON object: it was cut off before the object closed"
                ) from None
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
