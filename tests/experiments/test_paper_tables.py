"""The paper's generated tables: every number in them is recomputed here from results.jsonl."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from experiments import paper_tables, stats
from tests.experiments.test_report import DELTAS, write_results

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    results = write_results(tmp_path_factory.mktemp("ablation"))
    out = tmp_path_factory.mktemp("generated")
    paper_tables.generate(results, out)
    return results, out


# --- an independent recomputation from the raw rows ---------------------------------------------


def _rows(results: Path) -> dict[str, list[dict]]:
    by_group: dict[str, list[dict]] = defaultdict(list)
    for line in (results / "results.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_group[row["group"]].append(row)
    return by_group


def _deltas(results: Path) -> dict[str, list[float]]:
    return {g: [r["delta"] for r in rows] for g, rows in _rows(results).items()}


# --- parsing the LaTeX ---------------------------------------------------------------------------


def _body(tex: str) -> tuple[list[list[str]], str]:
    """Data rows (cells) between \\midrule and \\bottomrule, and the rest of the file without comments."""
    lines = [line for line in tex.splitlines() if not line.startswith("%")]
    start, end = lines.index(r"\midrule"), lines.index(r"\bottomrule")
    rows = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in lines[start + 1:end]]
    return rows, "\n".join(lines[:start + 1] + lines[end:])


def _check(cell: str, expected: float | None) -> None:
    """``cell`` shows ``expected`` to its printed precision (or ``--`` for an undefined value)."""
    if expected is None:
        assert cell == "--"
        return
    text = cell.strip("$")
    if text == "<0.001":
        assert expected < 0.001
        return
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(float(text) - expected) <= 0.5 * 10 ** -decimals + 1e-12, (cell, expected)


def _check_interval(cell: str, expected: tuple[float, float] | None) -> None:
    if expected is None:
        assert cell == "--"
        return
    low, high = cell.strip("$[]").split(", ")
    _check(low, expected[0])
    _check(high, expected[1])


def test_every_number_in_the_ablation_table_matches_the_results_file(generated: tuple[Path, Path]) -> None:
    results, out = generated
    rows, rest = _body((out / "ablation_table.tex").read_text(encoding="utf-8"))
    deltas = _deltas(results)
    mean_a = statistics.mean(deltas["A"])
    assert [r[0] for r in rows] == list(DELTAS)
    for group, n, mean, std, ci, ratio, welch_p, perm_p in rows:
        values = deltas[group]
        assert int(n) == len(values)
        _check(mean, statistics.mean(values))
        _check(std, statistics.stdev(values))
        half = stats.t_ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        _check_interval(ci, (statistics.mean(values) - half, statistics.mean(values) + half))
        _check(ratio, statistics.mean(values) / mean_a)
        if group == "A":
            assert welch_p == perm_p == "--"
        else:
            _check(welch_p, stats.welch(values, deltas["A"]).p)
            _check(perm_p, stats.permutation_test(values, deltas["A"]).p)
    assert not re.findall(r"\d", rest)  # no result hides in a caption or header


def test_every_number_in_the_classic_table_matches_the_results_file(generated: tuple[Path, Path]) -> None:
    results, out = generated
    rows, rest = _body((out / "classic_table.tex").read_text(encoding="utf-8"))
    deltas = _deltas(results)
    assert {(r[0], r[1]) for r in rows} == {(g, c) for g in "ABCD" for c in ("RANDOM", "TPE")}
    for group, ref, n, diff, welch_p, perm_p, verdict in rows:
        a, b = deltas[group], deltas[ref]
        assert n == f"{len(a)}/{len(b)}"
        _check(diff, statistics.mean(a) - statistics.mean(b))
        _check(welch_p, stats.welch(a, b).p)
        _check(perm_p, stats.permutation_test(a, b).p)
        assert verdict in ("within noise", "beyond noise")
    assert not re.findall(r"\d", rest)


def test_every_number_in_the_mechanism_table_matches_the_results_file(generated: tuple[Path, Path]) -> None:
    results, out = generated
    rows, rest = _body((out / "mechanism_table.tex").read_text(encoding="utf-8"))
    expected: dict[tuple[str, str], Counter] = defaultdict(Counter)
    repeats: dict[tuple[str, str], set] = defaultdict(set)
    by_group = _rows(results)
    for group in ("C", "D"):
        for row in by_group[group]:
            for m in row["mechanisms"]:
                key = (group, m["region"])
                verdict = m["verdict"] if m["verdict"] in ("kept", "reverted", "retest") else "failed"
                expected[key].update({"generated": int(m.get("retest_of") is None), verdict: 1,
                                      "calls": sum(m["hook_calls"].values()),
                                      "effects": sum((m.get("hook_effects") or {}).values())})
                repeats[key].add(row["repeat"])
    seen = set()
    for group, design, generated_, retested, kept, reverted, failed, calls, effects, reps in rows:
        key = (group, design.removeprefix(r"\texttt{").removesuffix("}"))
        seen.add(key)
        e = expected[key]
        assert [int(generated_), int(retested), int(kept), int(reverted), int(failed), int(calls), int(effects)] == \
            [e["generated"], e["retest"], e["kept"], e["reverted"], e["failed"], e["calls"], e["effects"]], key
        assert reps == f"{len(repeats[key])}/{len(by_group[group])}"
    assert seen == set(expected)
    assert not re.findall(r"\d", rest)


def test_settings_macros_match_the_results_file(generated: tuple[Path, Path]) -> None:
    results, out = generated
    macros = dict(re.findall(r"\\renewcommand\{\\(\w+)\}\{(.*)\}$", (out / "settings.tex").read_text(encoding="utf-8"),
                             flags=re.M))
    by_group = _rows(results)
    settings = next(iter(by_group.values()))[0]["settings"]
    assert macros["NRepeats"] == "3" and macros["NGroups"] == "6" and macros["NRuns"] == "18"
    assert macros["Iterations"] == str(settings["iterations"]) and macros["Cycles"] == str(settings["cycles"])
    assert float(macros["TimeBudget"]) == settings["time_budget"] and macros["Threads"] == str(settings["threads"])
    assert macros["NTrials"] == str(sum(r["iterations"] for rows in by_group.values() for r in rows))
    assert macros["Provider"] == "offline" and macros["ResearcherIsOffline"] == "yes" and macros["CILevel"] == "95"
    for group, rows in by_group.items():
        values = [r["delta"] for r in rows]
        assert macros[f"Repeats{group}"] == str(len(values))
        _check(macros[f"MeanDelta{group}"], statistics.mean(values))
        _check(macros[f"StdDelta{group}"], statistics.stdev(values))
    assert macros["VerdictB"] == "within noise" and macros["VerdictC"] == "beyond noise"
    spread = max(max(r["baseline"] for r in rows) - min(r["baseline"] for r in rows)
                 for rows in zip(*(sorted(v, key=lambda r: r["repeat"]) for v in by_group.values()), strict=True))
    _check(macros["BaselineSpread"], spread)


def test_reading_and_figures_are_generated(generated: tuple[Path, Path]) -> None:
    _, out = generated
    reading = (out / "reading.tex").read_text(encoding="utf-8")
    assert "within noise" in reading and r"$\Delta$" in reading and "val\\_bpb" in reading
    for name in ("ablation_table.tex", "classic_table.tex", "mechanism_table.tex", "paired_table.tex", "settings.tex",
                 "reading.tex"):
        assert (out / name).read_text(encoding="utf-8").isascii(), name  # compiles under any inputenc
    for name in ("best_so_far.png", "delta_by_group.png"):
        assert (out / name).stat().st_size > 1000


def test_latex_escape_handles_specials_and_unicode() -> None:
    assert paper_tables.latex_escape("a_b 5% {x} Δ×") == r"a\_b 5\% \{x\} $\Delta$$\times$"


def test_cli_reports_a_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        paper_tables.main([str(tmp_path), "--out", str(tmp_path / "gen")])
    assert exc.value.code == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_tables_runs_without_latex(tmp_path: Path) -> None:
    results = write_results(tmp_path / "ablation")
    out = tmp_path / "gen"
    done = subprocess.run(["make", "-s", "-C", str(REPO / "paper"), "tables", f"RESULTS={results}", f"OUT={out}",
                           f"PYTHON={sys.executable}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "ablation_table.tex").exists() and (out / "best_so_far.png").exists()
    # the suite's table and reading come from the committed suite rows (make's SUITE default)
    assert "\\label{tab:suite}" in (out / "suite_table.tex").read_text()
    assert "paired seeds" in (out / "suite_reading.tex").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_committed_tables_regenerate_from_the_committed_rows_with_one_command(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    done = subprocess.run(["make", "-s", "-C", str(REPO / "paper"), "tables", f"OUT={out}", f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    committed = REPO / "paper" / "generated"
    texts = sorted(p.name for p in committed.glob("*.tex"))
    assert "paired_table.tex" in texts and "suite_table.tex" in texts
    for name in texts:  # every number in the paper comes from the committed harness and suite rows
        assert (out / name).read_text(encoding="utf-8") == (committed / name).read_text(encoding="utf-8"), name
