"""The ablation report, on a synthetic results.jsonl in the runner's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import report

# Δ per repeat. B and D hold A's values (shuffled): identical groups. C is far from A with tiny spread.
DELTAS: dict[str, list[float]] = {
    "A": [-0.010, -0.012, -0.011],
    "B": [-0.012, -0.010, -0.011],
    "C": [-0.050, -0.052, -0.051],
    "D": [-0.011, -0.012, -0.010],
    "RANDOM": [-0.004, -0.006, -0.005],
    "TPE": [-0.008, -0.020, -0.003],
}
LEVELS = {"A": ["1"], "B": ["1", "1.5"], "C": ["1", "1.5", "2"], "D": ["1", "2"], "RANDOM": [], "TPE": []}
ITERATIONS = 4
SETTINGS = {"time_budget": 10.0, "cycles": 2, "iterations": ITERATIONS, "threads": 1, "target": "bundled"}
ARGS = {"groups": "A,B,C,D,RANDOM,TPE", "repeats": 3, "iterations": ITERATIONS, "time_budget": 10.0,
        "provider": "offline", "out": "OUT"}


def _mechanisms(group: str, repeat: int) -> list[dict]:
    if group not in ("C", "D"):
        return []
    kept = {"cycle": 1, "region": "template:tabu", "verdict": "kept", "score": -0.01, "parent_score": -0.005,
            "name": f"tabu_{repeat}", "hook_calls": {"filter": 2, "observe": 2}}
    reverted = {"cycle": 2, "region": "template:bandit", "verdict": "reverted", "score": 0.0, "parent_score": -0.01,
                "name": f"bandit_{repeat}", "hook_calls": {"propose": 1, "observe": 2, "guidance": 2}}
    crashed = {"cycle": 2, "region": "custom:0a1b2c3d4e", "verdict": "crash", "score": None, "parent_score": -0.01,
               "name": None, "hook_calls": {}}
    # D's first repeat: an inconclusive surrogate, tried again in the next cycle and kept then
    inconclusive = {"cycle": 1, "region": "template:surrogate", "verdict": "retest", "retest_of": None, "score": 0.0,
                    "parent_score": 0.0, "name": "surrogate#1", "hook_calls": {"propose": 2}}
    retest = {"cycle": 2, "region": "template:surrogate", "verdict": "kept", "retest_of": 1, "score": 0.02,
              "parent_score": 0.0, "name": "surrogate#2", "hook_calls": {"propose": 3}}
    return [kept, reverted] + ([crashed] if group == "C" and repeat == 0 else []) + \
        ([inconclusive, retest] if group == "D" and repeat == 0 else [])


def make_row(group: str, repeat: int, delta: float) -> dict:
    baseline = 2.5 + 0.001 * repeat
    best = baseline + delta
    trace = [baseline, baseline, baseline + delta / 2, baseline + delta / 2, best]  # iterations + 1 values
    return {
        "group": group, "repeat": repeat, "seed": 1000 + repeat, "run_dir": f"{group}/r{repeat}",
        "levels": LEVELS[group], "provider": "none" if group in ("RANDOM", "TPE") else "offline",
        "model": None if group in ("RANDOM", "TPE") else "offline",
        "baseline": baseline, "best": best, "delta": delta, "iterations": ITERATIONS,
        "counts": {"keep": 1, "discard": ITERATIONS - 2, "crash": 1, "fail": 0, "timeout": 0, "rejected": 0},
        "usage": {"calls": 0 if group in ("RANDOM", "TPE") else 7, "prompt_tokens": 100, "completion_tokens": 50,
                  "cost_usd": 0.0},
        "wall_s": 12.5, "trace": trace, "mechanisms": _mechanisms(group, repeat), "settings": SETTINGS,
        "finished_at": "2025-01-01T00:00:00Z",
    }


def write_results(directory: Path, deltas: dict[str, list[float]] = DELTAS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [make_row(g, i, d) for g, values in deltas.items() for i, d in enumerate(values)]
    (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (directory / "ablation.json").write_text(json.dumps(ARGS), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = write_results(tmp_path_factory.mktemp("ablation"))
    path = report.write_report(directory)
    return directory, path.read_text(encoding="utf-8")


def _reading(text: str) -> str:
    return text.split("## Reading", 1)[1].split("\n## ", 1)[0]


def test_report_lists_every_group_with_its_repeat_count(written: tuple[Path, str]) -> None:
    _, text = written
    table = text.split("## Δ val_bpb by group", 1)[1].split("###", 1)[0]
    for group in DELTAS:
        assert any(line.startswith(f"| {group} |") and "| 3 |" in line for line in table.splitlines()), group
    assert "A n=3" in text and "TPE n=3" in text  # n stated next to the figures


def test_report_writes_non_empty_figures(written: tuple[Path, str]) -> None:
    directory, text = written
    for name in (report.BEST_SO_FAR_PNG, report.DELTA_PNG):
        assert (directory / name).stat().st_size > 1000
        assert f"]({name})" in text


def test_reading_calls_identical_groups_within_noise(written: tuple[Path, str]) -> None:
    reading = _reading(written[1])
    assert "B vs A: difference +0.0000 is within noise at n=3 vs 3" in reading
    assert "D vs A: difference +0.0000 is within noise at n=3 vs 3" in reading


def test_reading_calls_separated_groups_beyond_noise_and_flags_the_permutation_floor(written: tuple[Path, str]) -> None:
    reading = _reading(written[1])
    sentence = reading.split("C vs A:", 1)[1].split(";", 1)[0]
    assert "beyond noise" in sentence and "within noise" not in sentence
    assert "C is better (lower Δ)" in sentence
    assert "cannot go below p=0.100" in reading  # 3 vs 3 exact permutation: 2 of 20 splits
    assert "Welch p<0.001" in sentence


def test_reading_places_bilevel_groups_against_classical_search(written: tuple[Path, str]) -> None:
    reading = _reading(written[1])
    assert "Against classical search" in reading
    assert "C vs RANDOM: C is better" in reading
    ahead = reading.split("Bilevel groups ahead of classical search beyond noise:", 1)[1].split(";", 1)[0]
    assert "C vs RANDOM" in ahead and "C vs TPE" in ahead and "B vs TPE" not in ahead


def test_report_states_settings_and_what_the_offline_researcher_shows(written: tuple[Path, str]) -> None:
    text = written[1]
    settings = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for line in ("- time_budget: 10.0", "- iterations: 4", "- cycles: 2", "- threads: 1",
                 "- provider: offline (model offline); RANDOM, TPE use no researcher"):
        assert line in settings
    assert "stand-in" in text and "does not show" in text


def test_report_counts_mechanisms_and_their_hook_calls_for_level2_groups(written: tuple[Path, str]) -> None:
    section = written[1].split("## Level-2 mechanisms", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| C |") or line.startswith("| D |")]
    tabu_c = next(r for r in rows if r.startswith("| C |") and "template:tabu" in r)
    cells = [c.strip() for c in tabu_c.strip("|").split("|")]
    assert cells[2:8] == ["3", "0", "3", "0", "0", "12"]  # generated, retested, kept, reverted, failed, hook calls
    assert cells[8] == "0"  # the rows record no effects: a call is not an effect
    assert cells[9] == "filter=6 (0), observe=6 (0)"
    # a design retested in the next cycle is one design, counted by its last verdict
    surrogate = next(r for r in rows if r.startswith("| D |") and "template:surrogate" in r)
    cells = [c.strip() for c in surrogate.strip("|").split("|")]
    assert cells[2:8] == ["1", "1", "1", "0", "0", "5"]
    assert any("custom:0a1b2c3d4e" in r and r.startswith("| C |") for r in rows)
    assert not any("custom:" in r for r in rows if r.startswith("| D |"))


def test_report_tolerates_missing_groups_and_a_torn_last_line(tmp_path: Path) -> None:
    write_results(tmp_path, {"C": DELTAS["C"], "TPE": DELTAS["TPE"]})
    with (tmp_path / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"group": "C", "repe')
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "Group A is missing" in text
    assert "| C |" in text and "| TPE |" in text
    assert (tmp_path / report.BEST_SO_FAR_PNG).stat().st_size > 0


def test_a_single_repeat_group_is_reported_untested(tmp_path: Path) -> None:
    write_results(tmp_path, {"A": DELTAS["A"], "B": [-0.02]})
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "B vs A: not tested (n=1 vs 3" in text


def test_duplicate_repeat_rows_keep_the_last(tmp_path: Path) -> None:
    write_results(tmp_path, {"A": DELTAS["A"]})
    with (tmp_path / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(make_row("A", 0, -0.5)) + "\n")
    rows = report.load_results(tmp_path / "results.jsonl")
    assert len(rows) == 3 and min(r["delta"] for r in rows) == -0.5


def test_reading_flags_baseline_noise_and_broken_groups(tmp_path: Path) -> None:
    write_results(tmp_path, {"A": DELTAS["A"], "C": DELTAS["C"]})
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        if row["group"] == "C":
            row["baseline"] += 0.05  # same train.py and seed, a different measurement
            row["counts"] = {**row["counts"], "crash": 3, "discard": 0, "keep": 1}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    reading = _reading(text)
    assert "differ across groups by up to 0.0500 val_bpb" in reading
    assert "may reflect baseline noise rather than the search" in reading  # 0.05 ≥ the 0.04 called beyond noise
    assert "In group C, 9 of 12 trials crashed, failed or timed out" in reading
    assert "In group A," not in reading
    baselines = text.split("### Baselines by repeat", 1)[1].split("\n## ", 1)[0]
    assert "| 0 | 2.500000 | 2.550000 | 0.050000 |" in baselines


def test_paired_section_compares_each_group_with_a_by_seed_on_search_and_endpoint_delta(tmp_path: Path) -> None:
    rows = [make_row(g, i, d) for g, values in DELTAS.items() for i, d in enumerate(values)]
    endpoint = {"A": [0.0, -0.001, 0.001], "C": [0.02, 0.019, 0.021]}  # C's search gain does not hold up
    for row in rows:
        values = endpoint.get(row["group"])
        row["endpoint"] = {"seeds": [10_000], "baseline": [2.5], "best": [2.5 + values[row["repeat"]]],
                           "delta": values[row["repeat"]]} if values else None
    lines = "\n".join(report.paired_lines(report.analyse(rows, ARGS)))
    table = {(c[0], c[1]): c for c in ([x.strip() for x in line.strip("|").split("|")]
                                       for line in lines.splitlines() if line.startswith("| ")) if c[0] != "group"}
    assert float(table[("C", "search Δ")][3]) == pytest.approx(-0.040, abs=1e-3)  # better in its own trials
    assert float(table[("C", "endpoint Δ")][3]) == pytest.approx(+0.020, abs=1e-3)  # worse re-measured
    assert ("B", "endpoint Δ") not in table  # no endpoint figures: no comparison invented
    assert all(table[k][2] == "3" for k in table)  # n = paired repeats
    assert "Failed trials (crash, fail, timeout) by group: A 3/" in lines
