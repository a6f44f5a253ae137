"""The frozen cheap suite and its references: known optima, repeatable trials, fair searches."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from experiments import stats
from experiments.suite import HELD_OUT, OPTIMUM, TARGETS, Crash, measure, space_for, true_value
from experiments.suite.__main__ import main
from experiments.suite.functions import batch
from experiments.suite.references import REFERENCES, key, make_searcher, run_search

KNOWN_OPTIMA = {
    "lr_bowl": {"EMBEDDING_LR": 0.06, "UNEMBEDDING_LR": 0.003 * 2**-0.8, "MATRIX_LR": 0.003 * 2**1.3,
                "SCALAR_LR": 0.03 * 2**-0.5},
    "coupled": {"MATRIX_LR": 0.003 * 2**0.7, "WARMUP_RATIO": 0.6, "WEIGHT_DECAY": 0.16},
    "batch": {"TOTAL_BATCH_SIZE": 2048, "DEVICE_BATCH_SIZE": 16, "DEPTH": 6, "MATRIX_LR": 0.003 * 2**0.3},
    "cliff": {"MATRIX_LR": 0.003 * 2**1.4, "WARMUP_RATIO": 0.4, "EMBEDDING_LR": 0.03 * 2**-0.5},
    "ridge": {"EMBEDDING_LR": 0.03 * 2**0.5, "MATRIX_LR": 0.006, "SCALAR_LR": 0.03 * 2**-0.5, "WARMDOWN_RATIO": 0.4,
              "DEPTH": 5, "WINDOW_PATTERN": "SSSL"},
    "needle": {"MATRIX_LR": 0.003 * 2**1.5, "UNEMBEDDING_LR": 0.003 * 2**-1.2, "HEAD_DIM": 64},
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_reaches_its_known_optimum_inside_its_space_and_starts_worse(name):
    assert set(KNOWN_OPTIMA) == set(TARGETS) and len(HELD_OUT) == 2
    best = KNOWN_OPTIMA[name]
    space = space_for(name)
    for d in space.dims:  # the optimum lies inside the box (floats: within their bounds)
        assert d.low <= best[d.name] <= d.high if d.kind != "choice" else best[d.name] in d.choices
    assert true_value(name, best) == pytest.approx(OPTIMUM, abs=1e-9)
    assert true_value(name, TARGETS[name]["start"]) > OPTIMUM + 0.2
    assert space.feasible(TARGETS[name]["start"]) is None


def test_a_trial_is_repeatable_and_another_training_seed_is_another_draw():
    config = TARGETS["lr_bowl"]["start"]
    assert measure("lr_bowl", config, 3) == measure("lr_bowl", config, 3)
    draws = {measure("lr_bowl", config, s) for s in range(20)}
    assert len(draws) == 20
    spread = stats.std(sorted(draws))
    assert 0.005 < spread < 0.02  # the target's documented noise (sd 0.01)


@pytest.mark.parametrize("config", [
    {"TOTAL_BATCH_SIZE": 2048, "DEVICE_BATCH_SIZE": 64, "DEPTH": 6, "MATRIX_LR": 0.003},  # not a multiple
    {"TOTAL_BATCH_SIZE": 16384, "DEVICE_BATCH_SIZE": 32, "DEPTH": 16, "MATRIX_LR": 0.003},  # out of memory
])
def test_the_batch_target_crashes_where_a_real_run_would(config):
    with pytest.raises(Crash):
        batch(config)


@pytest.mark.parametrize("arm", REFERENCES)
def test_every_reference_starts_from_the_baseline_runs_its_budget_and_never_repeats_a_trial(arm):
    name = "batch"
    space, start = space_for(name), TARGETS[name]["start"]
    measured = []

    def measure_config(config):
        measured.append(key(config))
        assert space.feasible(config) is None, "an infeasible configuration was executed"
        try:
            return measure(name, config, 0)
        except Crash:
            return None

    history = run_search(make_searcher(arm, space, start, 0), start, measure_config, 25)
    assert len(history) == 25 and history[0].config == start
    assert len(set(measured)) == len(measured) == 25
    assert history[-1].index == 24


@pytest.mark.parametrize("arm", REFERENCES)
def test_every_reference_improves_on_the_start_on_an_easy_target(arm):
    regrets = []
    for seed in range(3):
        space, start = space_for("lr_bowl"), TARGETS["lr_bowl"]["start"]
        history = run_search(make_searcher(arm, space, start, seed), start,
                             lambda c, s=seed: measure("lr_bowl", c, s), 30)
        final = [t for t in history if t.kept][-1].config
        regrets.append(true_value("lr_bowl", final) - OPTIMUM)
    assert max(regrets) < true_value("lr_bowl", TARGETS["lr_bowl"]["start"]) - OPTIMUM


def test_the_runner_is_resumable_and_reports_from_its_rows(tmp_path, capsys):
    out = tmp_path / "suite"
    args = ["run", "--arms", "random,local", "--targets", "coupled", "--seeds", "3", "--trials", "10", "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(line) for line in gzip.open(out / "trials.jsonl.gz", "rt")]
    assert len(rows) == 2 * 3 * 10
    assert main(args) == 0  # nothing left to run: no row added
    assert len([1 for _ in gzip.open(out / "trials.jsonl.gz", "rt")]) == len(rows)
    report = (out / "REPORT.md").read_text()
    assert "| coupled | random | 3 |" in report and "random − local" in report
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["run", "--arms", "grid", "--out", str(out)]) == 2
    assert main([*args[:-1], str(tmp_path / "jobs"), "--jobs", "2"]) == 0  # parallel units, the same rows in the same order
    assert [json.loads(line) for line in gzip.open(tmp_path / "jobs" / "trials.jsonl.gz", "rt")] == rows
    assert main([*args, "--jobs", "0"]) == 2


def test_paired_statistics_match_known_values():
    rng = random.Random(1)
    a = [rng.gauss(0, 1) for _ in range(40)]
    b = [x + 0.5 for x in a]  # a constant shift: every paired difference is -0.5
    p = stats.paired(a, b)
    assert p.mean_diff == pytest.approx(-0.5) and p.t_p == 0.0
    assert p.wilcoxon_p < 1e-6
    assert stats.holm([0.01, 0.04, None, 0.03]) == [0.03, pytest.approx(0.06), None, pytest.approx(0.06)]
    assert stats.equivalent([0.001, -0.002, 0.0015, -0.0005, 0.0], margin=0.01) is True
    assert stats.equivalent([0.5, 0.6, 0.55, 0.45], margin=0.01) is False
    assert stats.wilcoxon_p([0.0, 0.0]) is None


def test_an_interrupted_append_is_repaired_and_the_torn_run_is_run_again(tmp_path):
    out = tmp_path / "suite"
    args = ["run", "--arms", "random", "--targets", "coupled", "--seeds", "2", "--trials", "5", "--out", str(out)]
    assert main(args) == 0
    path = out / "trials.jsonl.gz"
    torn_row = json.dumps({"target": "coupled", "arm": "local", "seed": 0, "trial": 0, "config": {}, "value": 1.0,
                           "kept": True})
    path.write_bytes(path.read_bytes() + gzip.compress((torn_row + "\n").encode())[:-6])  # a torn last member
    assert main(["run", "--arms", "random,local", "--targets", "coupled", "--seeds", "2", "--trials", "5",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    assert len(rows) == 2 * 2 * 5
    assert sorted({(r["arm"], r["seed"]) for r in rows}) == [("local", 0), ("local", 1), ("random", 0), ("random", 1)]
