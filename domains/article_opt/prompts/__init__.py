"""Prompt templates are data: one file per request purpose, ``$name`` placeholders
(:class:`string.Template`), a system part and a user part separated by a ``--- user ---`` line.

The essay travels once per call that needs it, as ``document=``: a first system message of its own,
before the stage's instructions. So the longest part of a request is an identical prefix from call
to call on the same text, which providers cache (Anthropic: the client marks that block for prompt
caching; OpenAI caches long identical prefixes by itself)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
SPLIT = "\n--- user ---\n"


@cache
def _load(name: str) -> tuple[Template, Template]:
    text = (HERE / f"{name}.md").read_text(encoding="utf-8")
    if SPLIT not in text:
        raise ValueError(f"prompt {name}.md has no '--- user ---' line")
    system, user = text.split(SPLIT, 1)
    return Template(system.strip()), Template(user.strip())


DOCUMENT = "The essay under revision:\n<<<ARTICLE\n{text}\nARTICLE>>>"


def render(name: str, *, document: str | None = None, **values: object) -> list[dict[str, str]]:
    """The messages for prompt ``name``; every placeholder must be given (a typo fails loudly).
    ``document`` (the essay) goes first, in a system message of its own."""
    system, user = _load(name)
    strings = {k: str(v) for k, v in values.items()}
    lead = [{"role": "system", "content": DOCUMENT.format(text=document)}] if document is not None else []
    return [
        *lead,
        {"role": "system", "content": system.substitute(strings)},
        {"role": "user", "content": user.substitute(strings)},
    ]


def bullet(items: object, empty: str = "(none)") -> str:
    lines = [f"- {item}" for item in (items or [])]  # type: ignore[union-attr]
    return "\n".join(lines) if lines else empty
