"""Provider ``offline``: a deterministic, seeded stand-in researcher.

**Offline answers are a stand-in, never an LLM's.** They are computed by plain Python handlers
from the structured ``context`` of a request, so the whole machinery (loops, mechanisms, journals,
reports) runs on any machine without network or keys. Results produced with it must be labelled
as such and never presented as a language model's.

Core ships only the plumbing: a domain registers one handler per request *purpose* with
:func:`register_offline_handler`. A handler receives a frozen :class:`OfflineRequest` and returns
a ``dict`` (validated against the request's schema by the client, exactly like a real reply, repair
round included) or a ``str`` (for ``complete()``). Its ``rng`` is seeded from the client's seed, the
purpose and the request's iteration and attempt (common random numbers, see :func:`offline_seed`),
so the same request gets the same answer for a seed.
Offline calls are counted in the ledger (provider ``"offline"``) with 0 tokens and 0 cost.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, overload

from pydantic import BaseModel

from core.errors import BilevelError, ProviderError
from core.llm.base import LLMReply, LLMRequest, Message
from core.records import canonical_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineRequest:
    """What an offline handler sees. ``context`` and ``messages`` are private copies (read-only
    at the top level); ``rng`` is this request's own seeded generator."""

    purpose: str
    context: Mapping[str, Any]
    messages: tuple[Message, ...]
    schema: type[BaseModel] | None
    seed: int
    rng: random.Random = field(compare=False, repr=False)

    @property
    def is_repair(self) -> bool:
        """True on the repair round that follows a reply the schema rejected."""
        return len(self.messages) >= 2 and self.messages[-2]["role"] == "assistant"


OfflineHandler = Callable[[OfflineRequest], "dict[str, Any] | str | BaseModel"]

_HANDLERS: dict[str, OfflineHandler] = {}
_HANDLERS_LOCK = threading.Lock()


@overload
def register_offline_handler(
    purpose: str, handler: OfflineHandler, *, replace: bool = False
) -> OfflineHandler: ...
@overload
def register_offline_handler(
    purpose: str, handler: None = None, *, replace: bool = False
) -> Callable[[OfflineHandler], OfflineHandler]: ...


def register_offline_handler(purpose, handler=None, *, replace=False):
    """Register the stand-in answer for a purpose; usable as a decorator when ``handler`` is
    omitted. Registering a *different* handler for a taken purpose needs ``replace=True``."""
    if not isinstance(purpose, str) or not purpose.strip():
        raise ValueError("an offline handler needs a non-empty purpose")
    if handler is None:
        return lambda fn: register_offline_handler(purpose, fn, replace=replace)
    if not callable(handler):
        raise TypeError(f"offline handler for {purpose!r} is not callable")
    with _HANDLERS_LOCK:
        existing = _HANDLERS.get(purpose)
        if existing is not None and existing is not handler and not replace:
            raise ValueError(f"an offline handler for {purpose!r} is already registered ({existing!r})")
        _HANDLERS[purpose] = handler
    return handler


def unregister_offline_handler(purpose: str) -> None:
    with _HANDLERS_LOCK:
        _HANDLERS.pop(purpose, None)


def offline_purposes() -> tuple[str, ...]:
    with _HANDLERS_LOCK:
        return tuple(sorted(_HANDLERS))


CRN_NAMES = ("article", "stage", "loop")  # what a draw is for, besides its iteration and attempt


def offline_seed(seed: int, purpose: str, context: Mapping[str, Any]) -> int:
    """The integer seeding a request's ``rng``; stable across processes and Python versions.

    Common random numbers: when the context names its ``iteration``, the draw depends only on
    (seed, purpose, iteration, attempt — ``attempt`` or the number of ``feedback`` items — and the
    article/stage/loop it is for), not on the rest of the request. So two groups of an ablation with
    the same seed face the same luck, and text a mechanism or Level 1.5 adds to a request changes a
    proposal only through what the handler reads, never by re-randomising it. A context without an
    iteration (a judgment of a given text) is keyed by its whole content.
    """
    iteration = context.get("iteration")
    if isinstance(iteration, int) and not isinstance(iteration, bool):
        attempt = context.get("attempt")
        if not isinstance(attempt, int):
            attempt = len(context.get("feedback") or ())
        key: dict[str, Any] = {"iteration": iteration, "attempt": attempt}
        key.update({k: context[k] for k in CRN_NAMES if isinstance(context.get(k), str)})
        body = canonical_json(key)
    else:
        body = canonical_json(dict(context))
    digest = hashlib.sha256(f"{seed}\x00{purpose}\x00{body}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def read_guidance(text: str, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """For handlers that read guidance (Level 1.5's and the mechanisms' text): the ``names`` it
    mentions, in order, and the directions it gives as ``NAME:up`` / ``NAME:down``. A line that says
    to avoid something (avoid, do not, don't) is not read as a wish."""
    named: list[str] = []
    directions: dict[str, str] = {}
    for line in text.splitlines():
        low = line.lower()
        if "avoid" in low or "do not" in low or "don't" in low:
            continue
        for token in re.findall(r"[A-Z][A-Z0-9_]*(?::(?:up|down))?", line):
            name, _, way = token.partition(":")
            if name in names:
                named.append(name)
                if way:
                    directions.setdefault(name, way)
    return list(dict.fromkeys(named)), directions


class OfflineBackend:
    billable = False
    retryable = False

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = int(seed)

    def send(self, request: LLMRequest, *, model: str) -> LLMReply:
        with _HANDLERS_LOCK:
            handler = _HANDLERS.get(request.purpose)
            known = sorted(_HANDLERS)
        if handler is None:
            raise ProviderError(
                f"offline provider has no handler for purpose {request.purpose!r}; registered: "
                f"{', '.join(known) or '(none)'} — import the domain module that registers it, or use "
                f"a real provider"
            )
        context = copy.deepcopy(dict(request.context))
        offline_request = OfflineRequest(
            purpose=request.purpose,
            context=MappingProxyType(context),
            messages=tuple(dict(m) for m in request.messages),
            schema=request.schema,
            seed=self.seed,
            rng=random.Random(offline_seed(self.seed, request.purpose, context)),
        )
        try:
            answer = handler(offline_request)
        except BilevelError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"offline handler for {request.purpose!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        return LLMReply(text=_as_text(answer, request.purpose))

    def close(self) -> None:
        return None


def _as_text(answer: Any, purpose: str) -> str:
    if isinstance(answer, str):
        return answer
    if isinstance(answer, BaseModel):
        return answer.model_dump_json()
    if isinstance(answer, Mapping):
        try:
            return json.dumps(dict(answer), ensure_ascii=False, default=_reject)
        except TypeError as exc:
            raise ProviderError(
                f"offline handler for {purpose!r} returned a dict that is not JSON: {exc}"
            ) from exc
    raise ProviderError(
        f"offline handler for {purpose!r} returned {type(answer).__name__}; expected a dict, a str or a model"
    )


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
