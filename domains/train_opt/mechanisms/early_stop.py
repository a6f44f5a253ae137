"""Early stopping of doomed trials: a learning-curve rule read from the target's progress lines.

A trial prints progress lines (``step 00123 (41.0%) | loss: 3.4567 | ...``, karpathy/autoresearch's
format and the bundled harness's). The incumbent's log holds its whole curve. While a candidate
runs, the executor hands each new progress reading to :meth:`CurveStop.check`; once the trial is at
least ``min_fraction`` of the way through, a loss more than ``margin`` (relative) above the
incumbent's loss at the same fraction — interpolated on its curve — is a strike, and ``patience``
strikes in a row stop the trial: its process group is killed and the trial is recorded as FAIL with
the reason ("stopped early: loss 3.91 at 45% vs the incumbent's 3.52 (+11%)"), journaled with the
record. The budget it did not spend goes to the next trial.

Off by default (train_opt: ``--early-stop``): a training loss mid-run is only a proxy of the final
metric (a schedule with a long warm-down, or a larger learning rate, can be behind at 40% and ahead
at the end), so the margin must be generous for the target at hand. Without a percentage in the
progress lines, or without an incumbent log with a curve, nothing is ever stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from domains.train_opt.progress import TrialProgress, parse_progress

MAX_LOG_BYTES = 16_000_000  # a reference log larger than this is read from its start only


@dataclass(frozen=True)
class CurveRule:
    """When a trial counts as doomed (see the module docstring)."""

    min_fraction: float = 0.3
    margin: float = 0.05
    patience: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.min_fraction < 1 or self.margin < 0 or self.patience < 1:
            raise ValueError("early stopping needs 0 < min_fraction < 1, margin >= 0 and patience >= 1")


def curve(log_text: str) -> list[tuple[float, float]]:
    """``(fraction, loss)`` of every progress line with a percentage and a loss, in log order."""
    points: list[tuple[float, float]] = []
    for segment in re.split(r"[\r\n]+", log_text):
        if "%" not in segment or "loss" not in segment.lower():
            continue
        reading = parse_progress(segment, elapsed_s=0.0, timeout_s=0.0)
        if reading.percent is not None and reading.loss is not None:
            points.append((reading.percent / 100.0, reading.loss))
    return points


def read_curve(log: Path) -> list[tuple[float, float]]:
    try:
        with open(log, "rb") as fh:
            return curve(fh.read(MAX_LOG_BYTES).decode("utf-8", errors="replace"))
    except OSError:
        return []


@dataclass
class CurveStop:
    """The rule applied to one running trial against the incumbent's curve ``reference``."""

    rule: CurveRule
    reference: list[tuple[float, float]]
    strikes: int = 0
    last: float | None = field(default=None)

    def at(self, fraction: float) -> float | None:
        """The incumbent's loss at ``fraction``, linearly interpolated; ``None`` outside its curve."""
        points = sorted(self.reference)
        for (f0, l0), (f1, l1) in zip(points, points[1:], strict=False):
            if f0 <= fraction <= f1:
                return l0 if f1 == f0 else l0 + (l1 - l0) * (fraction - f0) / (f1 - f0)
        if points and fraction == points[-1][0]:
            return points[-1][1]
        return None

    def check(self, progress: TrialProgress) -> str | None:
        """The reason to stop now, or ``None``. Each new progress reading counts once."""
        if progress.percent is None or progress.loss is None:
            return None
        fraction = progress.percent / 100.0
        if fraction == self.last or fraction < self.rule.min_fraction:
            return None
        self.last = fraction
        ref = self.at(fraction)
        if ref is None or ref <= 0:
            return None
        if progress.loss > ref * (1 + self.rule.margin):
            self.strikes += 1
        else:
            self.strikes = 0
        if self.strikes < self.rule.patience:
            return None
        return (f"stopped early: loss {progress.loss:.4g} at {progress.percent:g}% vs the incumbent's "
                f"{ref:.4g} (+{(progress.loss / ref - 1):.0%}, margin {self.rule.margin:.0%}, "
                f"{self.strikes} readings in a row)")


def for_incumbent(rule: CurveRule | None, run_dir: Path, incumbent: str | None) -> CurveStop | None:
    """A checker against the incumbent's log (``run.log`` beside its ``train.py``), or ``None``."""
    if rule is None or not incumbent:
        return None
    reference = read_curve((run_dir / incumbent).parent / "run.log")
    return CurveStop(rule, reference) if len(reference) >= 2 else None


class StoppedEarly(Exception):
    """Raised from the progress callback to stop a doomed trial (its process group is killed)."""
