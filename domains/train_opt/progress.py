"""Live progress of a long trial: elapsed and remaining time and the latest loss, on one line.

The target's own progress lines are the source: karpathy/autoresearch's ``train.py`` (and the
bundled harness) overwrite one line with ``\\r``, e.g.
``step 00123 (41.0%) | loss: 3.4567 | ... | remaining: 177s``. :func:`parse_progress` reads the
latest of them from the log's tail; :class:`ProgressLine` shows it as one updating terminal line
(rich, transient: it disappears when the trial ends) and prints nothing when the output is not a
terminal (a log file, CI, a pipe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.console import Console
from rich.errors import LiveError
from rich.live import Live
from rich.text import Text

_STEP = re.compile(r"\bstep[\s:]+(\d+)", re.IGNORECASE)
_PERCENT = re.compile(r"\((\d+(?:\.\d+)?)%\)")
_LOSS = re.compile(r"\bloss[\s:=]+(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", re.IGNORECASE)
_REMAINING = re.compile(r"\bremaining[\s:=]+([0-9][^|]*?)\s*(?:\||$)", re.IGNORECASE)


@dataclass(frozen=True)
class TrialProgress:
    """What is known about a running trial. ``remaining`` is as the target printed it ("177s",
    "12 steps"); the parsed fields are ``None`` until the target prints a progress line."""

    elapsed_s: float
    timeout_s: float
    step: int | None = None
    percent: float | None = None
    loss: float | None = None
    remaining: str | None = None

    def describe(self) -> str:
        parts = [f"{self.elapsed_s:.0f}s elapsed"]
        if self.remaining:
            parts.append(f"{self.remaining} remaining")
        if self.step is not None:
            parts.append(f"step {self.step}" + (f" ({self.percent:g}%)" if self.percent is not None else ""))
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        parts.append(f"killed at {self.timeout_s:.0f}s")
        return " | ".join(parts)


def parse_progress(tail: str, *, elapsed_s: float, timeout_s: float) -> TrialProgress:
    """The latest progress line of a log tail (the last ``\\r``-separated segment that has one)."""
    segments = [s for s in re.split(r"[\r\n]+", tail) if s.strip()]
    for segment in reversed(segments):
        loss, step = _LOSS.search(segment), _STEP.search(segment)
        if loss or step:
            percent, remaining = _PERCENT.search(segment), _REMAINING.search(segment)
            return TrialProgress(
                elapsed_s=elapsed_s,
                timeout_s=timeout_s,
                step=int(step.group(1)) if step else None,
                percent=float(percent.group(1)) if percent else None,
                loss=float(loss.group(1)) if loss else None,
                remaining=remaining.group(1).strip() if remaining else None,
            )
    return TrialProgress(elapsed_s=elapsed_s, timeout_s=timeout_s)


class ProgressLine:
    """One updating line on the terminal for the trial in flight; silent when not a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._live: Live | None = None
        self._disabled = False

    @property
    def enabled(self) -> bool:
        return self.console.is_terminal

    def update(self, label: str, progress: TrialProgress) -> None:
        if not self.enabled or self._disabled:
            return
        line = Text(f"{label}: {progress.describe()}", style="dim")
        if self._live is None:
            live = Live(line, console=self.console, transient=True, auto_refresh=False)
            try:
                live.start()
            except LiveError:  # the caller already shows a live display: stay out of its way
                self._disabled = True
                return
            self._live = live
        self._live.update(line, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
