"""Live progress of a running trial (elapsed / remaining time, latest loss on one updating line,
silent off a terminal), and a FAIL that karpathy/autoresearch prints straight after a ``\\r``
progress line read as FAIL."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from core.plugins import ExecContext
from core.records import Proposal
from domains.train_opt.executor import TrainExecutor
from domains.train_opt.progress import ProgressLine, TrialProgress, parse_progress

STANDIN = Path(__file__).parent / "standin_target"

SLOW_TRAINER = r'''
import sys, time
for step in range(1, 9):
    print(f"\rstep {step:05d} ({step * 12.5:.1f}%) | loss: {4 - step / 4:.4f} | lrm: 1.00 | dt: 300ms | "
          f"remaining: {(8 - step) * 0.3:.0f}s    ", end="", flush=True)
    time.sleep(0.3)
print()
print("---")
print("val_bpb: 1.000000")
'''

FAILING_TRAINER = r'''
import sys
print("\rstep 00042 (3.1%) | loss: 9.1234 | remaining: 290s    ", end="", flush=True)
print("FAIL")
sys.exit(1)
'''


class Recorder:
    enabled = True

    def __init__(self) -> None:
        self.updates: list[tuple[str, TrialProgress]] = []
        self.closed = 0

    def update(self, label: str, progress: TrialProgress) -> None:
        self.updates.append((label, progress))

    def close(self) -> None:
        self.closed += 1


def run_trial(tmp_path: Path, script: str, progress) -> object:
    run = tmp_path / "run"
    shutil.copytree(STANDIN, run / "target", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(STANDIN / "train.py", run / "original_train.py")
    (run / "target" / "trainer.py").write_text(script)
    executor = TrainExecutor(workdir=run / "target", original=run / "original_train.py", timeout_s=30,
                             command=[sys.executable, "trainer.py"], progress=progress)
    trial = run / "trials" / "inner" / "00007"
    trial.mkdir(parents=True)
    ctx = ExecContext(loop="inner", iteration=7, cycle=0, run_dir=run, trial_dir=trial, incumbent=None)
    return executor.execute(Proposal(changes={}), ctx)


def test_a_running_trial_reports_elapsed_remaining_and_latest_loss(tmp_path):
    recorder = Recorder()
    result = run_trial(tmp_path, SLOW_TRAINER, recorder)
    assert result.status == "ok"
    assert recorder.updates, "no progress while the trial ran"
    label, last = recorder.updates[-1]
    assert label == "trial 7"
    assert last.loss is not None and 2.0 <= last.loss < 4.0
    assert last.step is not None and last.remaining is not None and last.remaining.endswith("s")
    assert last.elapsed_s >= 1.0 and last.timeout_s == 30
    assert recorder.closed == 1


def test_fail_printed_right_after_a_carriage_return_progress_line_is_a_fail(tmp_path):
    result = run_trial(tmp_path, FAILING_TRAINER, None)
    assert result.status == "fail"
    assert "FAIL reported" in result.detail["error"]


def test_karpathy_progress_line_is_parsed():
    line = ("\rstep 00123 (41.0%) | loss: 3.456789 | lrm: 1.00 | dt: 315ms | tok/sec: 1,663,000 | "
            "mfu: 39.8% | epoch: 1 | remaining: 177s    ")
    p = parse_progress("warmup\n" + line, elapsed_s=130, timeout_s=600)
    assert (p.step, p.percent, p.loss, p.remaining) == (123, 41.0, 3.456789, "177s")
    assert "177s remaining" in p.describe() and "loss 3.4568" in p.describe()


def test_a_log_without_progress_lines_gives_elapsed_time_only():
    p = parse_progress("compiling...\n", elapsed_s=12, timeout_s=600)
    assert (p.step, p.loss, p.remaining) == (None, None, None)
    assert p.describe().startswith("12s elapsed")


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_line_draws_on_a_terminal_and_is_silent_otherwise(terminal):
    out = io.StringIO()
    line = ProgressLine(Console(file=out, force_terminal=terminal, width=120))
    line.update("trial 3", TrialProgress(elapsed_s=5, timeout_s=60, loss=2.5, remaining="55s"))
    line.close()
    assert line.enabled is terminal
    assert ("loss 2.5000" in out.getvalue()) is terminal
