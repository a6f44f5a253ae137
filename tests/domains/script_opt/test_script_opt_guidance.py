"""script_opt's offline researcher reads the guidance it is given (Level 1.5's and the mechanisms'
text) and never proposes a configuration already measured; its analyzer never freezes a constant
with an untried direction."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from core.records import canonical_json
from domains.script_opt import offline

CONSTANTS = {n: {"value": v, "kind": "float", "comment": ""} for n, v in (("A", 1.0), ("B", 2.0), ("C", 3.0))}


class Request:
    def __init__(self, context: dict[str, Any], seed: int) -> None:
        self.context = context
        self.rng = random.Random(seed)


def ask(iteration: int, **extra: Any) -> dict[str, Any]:
    context = {"constants": CONSTANTS, "history": [], "step_scale": 1.0, "feedback": [], **extra}
    return offline.propose(Request(context, iteration))["changes"]


def test_guidance_naming_a_constant_and_a_direction_is_followed():
    guided = [ask(i, guidance="Not tried yet: B:down.") for i in range(40)]
    plain = [ask(i) for i in range(40)]
    hits = [c["B"] for c in guided if "B" in c]
    assert len(hits) >= 25 and len(hits) > sum("B" in c for c in plain)
    assert all(v < CONSTANTS["B"]["value"] for v in hits)


def test_a_measured_configuration_is_not_proposed_again():
    for i in range(20):
        first = ask(i)
        assert ask(i, measured=[first]) != first
        refused = ask(i, feedback=[f"duplicate: {canonical_json(first)} gives a configuration already measured"])
        assert refused != first  # the controller's refusal alone is read too


def test_the_analyzer_never_freezes_a_constant_with_an_untried_direction():
    config = {"active_params": ["A", "B", "C", "D"], "frozen_params": [], "min_active": 2, "max_freeze_per_cycle": 2}
    stats = {"A": {"tries": 2, "keeps": 0, "crashes": 0}, "B": {"tries": 2, "keeps": 0, "crashes": 0}}
    patch = offline.analyze(Request({"config": config, "cycle_stats": stats, "untried": {"A": ["down"]}}, 0))
    assert patch["freeze"] == ["B"]
    assert "A:down" in patch["guidance"]


# -- a whole run through the CLI ----------------------------------------------------------------------

FRAGILE = '''import os
X = 3.0  # runs only unchanged
seed = int(os.environ.get("BILEVEL_SEED", "0"))
print(f"seed: {seed}")
if X != 3.0:
    raise SystemExit("diverged")
print(f"loss: {1.0 + seed / 1e6:.6f}")
'''


def test_a_run_whose_trials_all_fail_stops_with_exit_75_and_one_clear_line(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from domains.script_opt.cli import app

    project = tmp_path / "project"
    project.mkdir()
    (project / "fn.py").write_text(FRAGILE)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["--target-dir", str(project), "--cmd", "python fn.py", "--metric", "loss",
                                      "--run-dir", str(run_dir), "run", "--levels", "1", "--inner-budget", "8",
                                      "--outer-cycles", "1", "--max-failed", "3", "--noise-replicates", "1"])
    assert result.exit_code == 75, result.stdout[-2000:]
    assert "stopped: the last 3 trials all failed (last: crash" in " ".join(result.stdout.split())
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    records = [e["record"] for e in events if e["type"] == "trial"]
    # the baseline, its replicate on seed 1000 (the noise: the script's own seed term), three failures
    assert [r["status"] for r in records] == ["keep", "discard", "crash", "crash", "crash"]
    assert records[1]["proposal"]["origin"] == "replicate" and records[1]["info"]["seed"] == 1000
    assert (run_dir / "trials" / "inner" / "00001" / "run.log").read_text().startswith("seed: 1000")


NOISY = '''import os
import random
X = 3.0  # the knob: worth little against the noise
seed = int(os.environ.get("BILEVEL_SEED", "0"))
noise = random.Random(seed * 7919 + int(X * 1000)).gauss(0.0, 0.05)
print(f"loss: {1.0 + 0.001 * (X - 1.2) ** 2 + noise:.6f}")
'''


def test_a_level_1_5_patch_must_beat_its_parent_by_the_measured_noise(tmp_path: Path):
    from domains.script_opt.session import ScriptSession, make_settings

    project = tmp_path / "project"
    project.mkdir()
    (project / "fn.py").write_text(NOISY)
    settings = make_settings(target_dir=str(project), cmd="python fn.py", metric="loss", levels=("1", "1.5"),
                             inner_budget=4, outer_cycles=2, noise_replicates=2)
    session = ScriptSession.start(settings, tmp_path / "run")
    try:
        session.run()
        noise = session.inner.noise
    finally:
        session.close()
    events = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    verdicts = [e for e in events if e["type"] == "level15_verdict"]
    assert noise is not None and noise > 0.01  # measured on the baseline's three seeds
    assert verdicts and verdicts[0]["margin"] == pytest.approx(2 * 2 ** 0.5 * noise / 4)
    assert verdicts[0]["kept"] == (verdicts[0]["score"] > verdicts[0]["margin"])
