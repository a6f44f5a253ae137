"""The bilevel groups on the cheap suite: the real train_opt loop on a materialised target, paired seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.state import RunDir
from domains.train_opt import target as tgt
from domains.train_opt.session import summarize
from experiments.suite import TARGETS, space_for, true_value
from experiments.suite.groups import materialize, run_group


def test_a_materialised_target_follows_the_autoresearch_contract(tmp_path: Path):
    folder = materialize("batch", tmp_path / "batch")
    specs = tgt.discover((folder / "train.py").read_text())
    assert set(TARGETS["batch"]["start"]) <= {n for n, s in specs.items() if s.editable}
    out = subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True,
                         env={"BILEVEL_SEED": "1", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    value = float(out.stdout.split("val_bpb:")[1])
    assert abs(value - true_value("batch", TARGETS["batch"]["start"])) < 0.1
    crash = (folder / "train.py").read_text().replace("DEVICE_BATCH_SIZE = 16", "DEVICE_BATCH_SIZE = 64")
    (folder / "train.py").write_text(crash)
    failed = subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "FAIL" in failed.stdout


def first_proposal(records):
    return next(r.proposal for r in records if r.proposal is not None and not r.proposal.is_baseline)


def test_two_groups_with_the_same_seed_draw_the_same_first_proposal(tmp_path: Path):
    a = run_group("needle", "A", 7, cycles=2, budget=3, run_dir=tmp_path / "a")
    c = run_group("needle", "C", 7, cycles=2, budget=3, run_dir=tmp_path / "c")
    assert first_proposal(a).changes == first_proposal(c).changes
    other = run_group("needle", "A", 8, cycles=2, budget=3, run_dir=tmp_path / "other")
    assert [r.score for r in other] != [r.score for r in a]  # another seed: other luck


def test_a_group_run_is_repeatable_and_stays_in_the_suite_box(tmp_path: Path):
    first = run_group("coupled", "C", 3, cycles=2, budget=4, run_dir=tmp_path / "one")
    second = run_group("coupled", "C", 3, cycles=2, budget=4, run_dir=tmp_path / "two")
    assert [(r.status, r.score) for r in first] == [(r.status, r.score) for r in second]
    space = space_for("coupled")
    for record in first:
        for name, value in (record.proposal.changes if record.proposal else {}).items():
            d = space.dim(name)
            assert d.low <= value <= d.high, f"{name}={value} left the suite's box"


def test_the_placebo_arm_is_called_through_a_worker_changes_nothing_and_reads_zero_effects(tmp_path: Path):
    from experiments.suite.__main__ import run_one

    for target, seed in (("lr_bowl", 0), ("batch", 3)):
        placebo, plain = run_one(target, "P", seed, 7), run_one(target, "A", seed, 7)
        calls = sum(sum(r["hook_calls"].get("placebo", {}).values()) for r in placebo)
        effects = sum(sum(r["hook_effects"].get("placebo", {}).values()) for r in placebo)
        assert calls >= 3 * 6  # guidance, filter, decide and observe on every search trial
        assert effects == 0
        # same seed, same draws: a mechanism that changes nothing leaves the run exactly as group A's
        assert [(r["config"], r["value"], r["kept"]) for r in placebo] == [(r["config"], r["value"], r["kept"]) for r in plain]


def test_the_bilevel_groups_spend_no_trial_on_an_infeasible_or_measured_configuration():
    import json

    from experiments.suite.__main__ import run_one

    for group, seed in (("A", 0), ("A", 5), ("C", 1), ("D", 2)):
        rows = run_one("batch", group, seed, 13)  # the target with the divisibility constraint
        assert not [r for r in rows if r.get("wasted")], group
        measured = [json.dumps(r["config"], sort_keys=True) for r in rows
                    if r["value"] is not None and not r["replicate"]]
        assert len(measured) == len(set(measured)), group


def test_on_the_suite_an_inconclusive_design_is_retested_in_the_next_cycle_and_judged_on_both_trials(tmp_path: Path):
    import json

    retests = 0
    for seed in range(5):
        run_dir = tmp_path / f"c{seed}"
        run_group("coupled", "C", seed, cycles=3, budget=10, run_dir=run_dir)
        with (run_dir / "journal.jsonl").open(encoding="utf-8") as journal:
            designs = [e["record"] for e in map(json.loads, journal)
                       if e["type"] == "trial" and e["record"]["loop"] == "mechanism" and e["record"]["iteration"]]
        for first, then in zip(designs, designs[1:], strict=False):
            if first["info"]["decision"]["verdict"] != "retest":
                continue
            retests += 1
            assert then["cycle"] == first["cycle"] + 1 and then["proposal"]["origin"] == "replicate"
            assert then["proposal"]["payload"] == first["proposal"]["payload"]
            assert then["info"]["decision"]["trials"] == 2
        assert designs[-1]["info"]["decision"]["verdict"] != "retest"  # no cycle after the last
        with RunDir.open(run_dir) as run:  # the summary (reports, the paper's tables) counts one design
            summary = summarize(run)["mechanisms"]
        for first, then in zip(summary, summary[1:], strict=False):
            if first["verdict"] == "retest":
                assert first["retest_of"] is None and then["retest_of"] == first["iteration"]
                assert then["verdict"] in ("kept", "reverted")
    assert retests >= 1
