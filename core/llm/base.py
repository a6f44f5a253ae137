"""The wire-neutral request a backend receives and the reply it returns.

A backend turns an :class:`LLMRequest` into one :class:`LLMReply` — a single attempt. Retry, usage
accounting, budget, recording and structured-output repair wrap it in :mod:`core.llm.client`; they
are not flags inside a backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from core.errors import ProviderError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

Message = dict[str, str]
"""``{"role": "system" | "user" | "assistant", "content": str}``."""


class TransientProviderError(ProviderError):
    """One attempt failed in a way worth retrying (429, 5xx, connection error, timeout).

    Raised by backends only; the client retries it and, once retries are spent, raises a plain
    :class:`~core.errors.ProviderError` carrying the last status code and ``retry_after``.
    """


@dataclass(frozen=True)
class LLMRequest:
    """One request. ``messages`` are the caller's conversation (plus repair turns); ``wire_messages``
    are what a network backend sends (the same, with the schema instruction added). ``structured``
    is how the backend asks for the schema natively (see
    :data:`~core.llm.registry.STRUCTURED_MODES`); ``None`` for plain text."""

    purpose: str
    messages: tuple[Message, ...]
    wire_messages: tuple[Message, ...]
    schema: type[BaseModel] | None
    context: Mapping[str, Any]
    request_hash: str
    timeout_s: float
    structured: str | None = None

    @property
    def schema_name(self) -> str | None:
        return self.schema.__name__ if self.schema is not None else None


@dataclass(frozen=True)
class LLMReply:
    """One answer. ``text`` is the answer only: a reasoning model's separate reasoning never lands
    here (its tokens are in ``reasoning_tokens``, part of ``completion_tokens``). ``truncated`` is
    set when the provider stopped at the output-token limit (``finish_reason`` "length",
    ``stop_reason`` "max_tokens"). ``usage_estimated``: the provider sent no usage, so the tokens
    are estimated from characters (about 4 per token)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    """Set only where the reply's model differs from the client's (a replayed recording)."""
    extra: dict[str, Any] = field(default_factory=dict)
    reasoning_tokens: int = 0
    truncated: bool = False
    usage_estimated: bool = False


class StructuredModeRejected(ProviderError):
    """The server refused the native structured-output parameters (an old local server, a model
    without JSON mode); the client falls back to the prompt-only mode and asks again."""


class Backend(Protocol):
    """A provider's wire format. ``billable`` replies are priced; ``retryable`` backends get the
    retry policy (a local lookup — offline, replay — is never retried)."""

    billable: bool
    retryable: bool

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        """Make one attempt. Raise :class:`TransientProviderError` for a retryable failure and
        :class:`~core.errors.ProviderError` for a final one."""
        ...

    def close(self) -> None: ...


def normalize_messages(messages: Sequence[Mapping[str, Any]] | str) -> tuple[Message, ...]:
    """Copy and check a conversation; a bare string is one user message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TypeError(
                f"message {i} must be a mapping with 'role' and 'content', got {type(msg).__name__}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TypeError(f"message {i} content must be a str, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("messages must not be empty")
    return tuple(out)
