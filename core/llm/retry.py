"""Retry policy: exponential backoff with jitter, honouring a server's ``retry-after``.

The SDKs' own retries are switched off (``max_retries=0`` on their clients), so this policy is the
only one in force and its attempts are the ones a test or a log can count.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from core.errors import ProviderError
from core.llm.base import TransientProviderError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt. The n-th retry waits
    ``base_delay_s * 2**n`` (capped at ``max_delay_s``) scaled by a random factor in [0.5, 1], or
    exactly the server's ``retry-after`` when it sent one. A ``retry-after`` longer than
    ``max_retry_after_s`` ends the retries at once (the error carries it for the caller)."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must be >= 0")

    def delay(self, retry_index: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry_index`` (0-based); ``None`` = give up."""
        if retry_after is not None:
            return None if retry_after > self.max_retry_after_s else max(retry_after, 0.0)
        backoff = min(self.base_delay_s * (2**retry_index), self.max_delay_s)
        return backoff * self.rng.uniform(0.5, 1.0)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, *, what: str) -> T:
    """Run ``fn`` until it returns, raises a non-transient error, or the retries are spent."""
    attempts = policy.max_retries + 1
    last: TransientProviderError | None = None
    for attempt in range(attempts):
        try:
            return fn()
        except TransientProviderError as exc:
            last = exc
            if attempt + 1 >= attempts:
                break
            wait = policy.delay(attempt, exc.retry_after)
            if wait is None:
                logger.warning(
                    "%s: server asks to retry after %.0fs, more than allowed; giving up",
                    what,
                    exc.retry_after,
                )
                break
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs", what, attempt + 1, attempts, exc, wait
            )
            policy.sleep(wait)
    assert last is not None
    raise ProviderError(
        f"{what} failed after {attempt + 1} attempt(s): {last}",
        status_code=last.status_code,
        retry_after=last.retry_after,
    ) from last


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
