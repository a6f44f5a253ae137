"""Hook deadlines (core/deadline.py): a stuck call is really stopped, in the main thread and in a worker."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from core.deadline import call_with_deadline
from core.errors import HookTimeout


def spin_forever() -> None:
    while True:
        pass


def spin_for(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def in_thread(fn: Callable[[], Any], join_s: float = 10.0) -> tuple[Any, BaseException | None, float]:
    """Run ``fn`` in a worker thread; return (result, exception, seconds)."""
    box: dict[str, Any] = {"result": None, "error": None}

    def target() -> None:
        started = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc
        box["elapsed"] = time.monotonic() - started

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(join_s)
    assert not worker.is_alive(), "the deadline did not stop the call in the worker thread"
    return box["result"], box["error"], box["elapsed"]


def test_returns_value_and_passes_arguments() -> None:
    def add(a: int, b: int, *, c: int) -> int:
        return a + b + c

    assert call_with_deadline(add, 1, 2, c=3, timeout_s=1.0) == 6
    assert call_with_deadline(add, 1, 2, c=3, timeout_s=None) == 6
    assert call_with_deadline(add, 1, 2, c=3, timeout_s=0) == 6
    result, error, _ = in_thread(lambda: call_with_deadline(add, 1, 2, c=3, timeout_s=1.0))
    assert (result, error) == (6, None)


def test_exception_from_the_call_propagates_unchanged() -> None:
    def boom() -> None:
        raise KeyError("inner")

    with pytest.raises(KeyError, match="inner"):
        call_with_deadline(boom, timeout_s=1.0)
    _, error, _ = in_thread(lambda: call_with_deadline(boom, timeout_s=1.0))
    assert isinstance(error, KeyError)


def test_busy_loop_is_interrupted_in_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    started = time.monotonic()
    with pytest.raises(HookTimeout, match="deadline"):
        call_with_deadline(spin_forever, timeout_s=0.2)
    assert time.monotonic() - started < 2.0


def test_blocking_sleep_is_interrupted_in_main_thread() -> None:
    started = time.monotonic()
    with pytest.raises(HookTimeout):
        call_with_deadline(time.sleep, 30, timeout_s=0.2)
    assert time.monotonic() - started < 2.0


def test_main_thread_deadline_leaves_no_timer_or_handler_behind() -> None:
    handler_before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(HookTimeout):
        call_with_deadline(spin_forever, timeout_s=0.1)
    call_with_deadline(lambda: None, timeout_s=0.1)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler_before


def test_busy_loop_is_interrupted_in_worker_thread() -> None:
    _, error, elapsed = in_thread(lambda: call_with_deadline(spin_forever, timeout_s=0.2))
    assert isinstance(error, HookTimeout)
    assert elapsed < 2.0


def test_worker_thread_deadline_restores_previous_trace_function() -> None:
    def probe() -> Any:
        def marker(frame: object, event: str, arg: object) -> None:
            return None

        sys.settrace(marker)
        try:
            try:
                call_with_deadline(spin_forever, timeout_s=0.1)
            except HookTimeout:
                pass
            return sys.gettrace() is marker
        finally:
            sys.settrace(None)

    result, error, _ = in_thread(probe)
    assert error is None
    assert result is True


def test_nested_deadline_restores_outer_timer_in_main_thread() -> None:
    def outer() -> None:
        assert call_with_deadline(lambda: "inner", timeout_s=0.1) == "inner"
        spin_forever()  # only the outer deadline can stop this

    started = time.monotonic()
    with pytest.raises(HookTimeout):
        call_with_deadline(outer, timeout_s=0.4)
    assert time.monotonic() - started < 2.0


def test_nested_deadline_does_not_shorten_outer_deadline() -> None:
    """An inner call that returns at once must not eat its whole timeout out of the outer budget."""

    def outer() -> str:
        call_with_deadline(lambda: None, timeout_s=0.6)
        return spin_for(0.5)  # well inside the outer 1.0 s

    assert call_with_deadline(outer, timeout_s=1.0) == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_inner_timeout_inside_outer_deadline_leaves_outer_running() -> None:
    def outer() -> str:
        with pytest.raises(HookTimeout):
            call_with_deadline(spin_forever, timeout_s=0.1)
        return spin_for(0.1)

    assert call_with_deadline(outer, timeout_s=2.0) == "done"


def test_nested_deadline_restores_outer_deadline_in_worker_thread() -> None:
    def outer() -> None:
        assert call_with_deadline(lambda: "inner", timeout_s=0.1) == "inner"
        spin_forever()

    _, error, elapsed = in_thread(lambda: call_with_deadline(outer, timeout_s=0.4))
    assert isinstance(error, HookTimeout)
    assert elapsed < 2.0
