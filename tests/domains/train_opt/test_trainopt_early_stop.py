"""Early stopping from the learning curve: a trial clearly worse than the incumbent at the same point
of training is stopped (FAIL, "stopped early", reason journaled) and saves its remaining time; a
trial on the incumbent's curve, a run without the setting and a run without a reference all run to
their end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import core.process
from core.plugins import ExecContext
from core.records import Proposal
from domains.train_opt.executor import TrainExecutor
from domains.train_opt.mechanisms.early_stop import CurveRule, CurveStop, curve
from domains.train_opt.progress import TrialProgress

# a target that trains for STEPS steps of 30 ms, its loss falling from 5.0 to LOSS_END, with
# autoresearch's \r progress lines and summary
TRAIN_PY = '''
LOSS_END = 2.0  # where the loss ends
STEPS = 20  # steps of 30 ms

if __name__ == "__main__":
    import time
    for step in range(1, STEPS + 1):
        time.sleep(0.03)
        loss = 5.0 + (LOSS_END - 5.0) * step / STEPS
        print(f"\\rstep {step:05d} ({100 * step / STEPS:.1f}%) | loss: {loss:.4f} | remaining: {STEPS - step} steps", end="", flush=True)
    print()
    print("---")
    print(f"val_bpb: {LOSS_END:.6f}")
'''


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(core.process, "PROGRESS_EVERY_S", 0.02)  # read the log often: the trial is short
    run = tmp_path / "run"
    (run / "target").mkdir(parents=True)
    (run / "target" / "train.py").write_text(TRAIN_PY)
    (run / "original_train.py").write_text(TRAIN_PY)
    return run


def execute(executor: TrainExecutor, run: Path, changes: dict, iteration: int, incumbent: str | None = None):
    trial_dir = run / "trials" / "inner" / f"{iteration:05d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExecContext(loop="inner", iteration=iteration, cycle=0, run_dir=run, trial_dir=trial_dir, incumbent=incumbent)
    return executor.execute(Proposal(changes=changes), ctx)


def executor(run: Path, rule: CurveRule | None) -> TrainExecutor:
    return TrainExecutor(workdir=run / "target", original=run / "original_train.py", timeout_s=30, progress=None,
                         early_stop=rule)


def test_a_trial_far_behind_the_incumbents_curve_is_stopped_early(run_dir: Path):
    ex = executor(run_dir, CurveRule(min_fraction=0.3, margin=0.05, patience=2))
    baseline = execute(ex, run_dir, {}, 0)
    assert baseline.status == "ok" and baseline.metrics["val_bpb"] == 2.0
    assert len(curve((run_dir / "trials/inner/00000/run.log").read_bytes().decode())) >= 15
    doomed = execute(ex, run_dir, {"LOSS_END": 4.5}, 1, incumbent=baseline.artifact)
    assert doomed.status == "fail" and doomed.detail["stopped_early"] is True
    assert doomed.detail["error"].startswith("stopped early: loss ") and "vs the incumbent's" in doomed.detail["error"]
    assert doomed.duration_s < 0.75 * baseline.duration_s  # the budget it did not spend
    log = (run_dir / "trials/inner/00001/run.log").read_bytes().decode()
    steps = [seg for seg in re.split(r"[\r\n]+", log) if seg.startswith("step")]
    assert 6 <= len(steps) < 20  # past 30% of the run, before its end


@pytest.mark.parametrize(("rule", "changes", "incumbent"), [
    (CurveRule(), {"LOSS_END": 2.05}, True),  # on the incumbent's curve, within the margin
    (None, {"LOSS_END": 4.5}, True),  # the setting is off
    (CurveRule(), {"LOSS_END": 4.5}, False),  # no incumbent log to compare with
], ids=["close-to-incumbent", "setting-off", "no-reference"])
def test_other_trials_run_to_their_end(run_dir: Path, rule, changes, incumbent):
    ex = executor(run_dir, rule)
    baseline = execute(ex, run_dir, {}, 0)
    result = execute(ex, run_dir, changes, 1, incumbent=baseline.artifact if incumbent else None)
    assert result.status == "ok" and result.metrics["val_bpb"] == changes["LOSS_END"]


def test_curve_rule_waits_for_min_fraction_and_patience():
    stop = CurveStop(CurveRule(min_fraction=0.3, margin=0.1, patience=2), [(0.0, 5.0), (0.5, 4.0), (1.0, 3.0)])
    bad = [TrialProgress(elapsed_s=0, timeout_s=0, percent=p, loss=9.0) for p in (10.0, 20.0, 40.0)]
    assert [stop.check(b) for b in bad] == [None, None, None]  # two before 30%, then the first strike
    assert stop.check(bad[-1]) is None  # the same reading again is not a second strike
    assert stop.check(TrialProgress(elapsed_s=0, timeout_s=0, percent=45.0, loss=4.2)) is None  # within 10%: reset
    assert stop.check(TrialProgress(elapsed_s=0, timeout_s=0, percent=50.0, loss=4.5)) is None
    assert "at 60%" in stop.check(TrialProgress(elapsed_s=0, timeout_s=0, percent=60.0, loss=4.5))
    assert stop.at(0.25) == pytest.approx(4.5) and stop.at(1.5) is None
    with pytest.raises(ValueError):
        CurveRule(min_fraction=1.5)
