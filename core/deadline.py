"""Run a callable under a wall-clock deadline without abandoning a thread.

In the main thread a ``SIGALRM`` interval timer interrupts the call with :class:`HookTimeout`, so a
hook stuck in a Python loop is really stopped, not left running in the background. The timer keeps
firing until the call returns: a hook that swallows the first :class:`HookTimeout` or loops in a
``finally:`` block is interrupted again. Elsewhere
(worker threads) a trace function checks the clock on every line and raises the same exception.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from core.errors import HookTimeout

T = TypeVar("T")


def call_with_deadline(fn: Callable[..., T], *args: Any, timeout_s: float | None, **kwargs: Any) -> T:
    if not timeout_s or timeout_s <= 0:
        return fn(*args, **kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, args, kwargs, timeout_s)
    return _with_trace(fn, args, kwargs, timeout_s)


def _with_alarm(fn: Callable[..., T], args: tuple, kwargs: dict, timeout_s: float) -> T:
    def on_alarm(signum: int, frame: object) -> None:
        raise HookTimeout(f"ran past its {timeout_s:g}s deadline")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout_s, _repeat_s(timeout_s))
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # an outer deadline was running: give it back what is left
            left = max(previous_timer[0] - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, previous_timer[1])


def _repeat_s(timeout_s: float) -> float:
    """How often the alarm fires again after the deadline, until the call gives up."""
    return min(max(timeout_s / 4, 0.01), 0.25)


def _with_trace(fn: Callable[..., T], args: tuple, kwargs: dict, timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    previous = sys.gettrace()

    def tracer(frame: object, event: str, arg: object) -> Any:
        if time.monotonic() > deadline:
            raise HookTimeout(f"ran past its {timeout_s:g}s deadline")
        return tracer

    sys.settrace(tracer)
    try:
        return fn(*args, **kwargs)
    finally:
        sys.settrace(previous)
