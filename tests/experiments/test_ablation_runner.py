"""The ablation runner end to end on the fast stand-in target (a trial takes tens of milliseconds).

One tiny ablation — groups A, C, RANDOM and TPE × 2 repeats × 2 iterations in 2 cycles, so Level 2
acts in C's second cycle — is shared by most tests; the others run their own small ablations.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.records import Proposal, ProposalContext, Status, TrialRecord
from domains.train_opt import target as tgt
from experiments import distributed
from experiments.ablation import app, append_row, read_rows
from experiments.classic import ReferenceProposer, target_space
from experiments.groups import MECHANISM_KEYS, RESULT_KEYS, Plan, RepeatSpec, make_row, prepare_run_dir

STANDIN = Path(__file__).resolve().parents[1] / "domains" / "train_opt" / "standin_target"
TINY = ["--repeats", "2", "--iterations", "2", "--cycles", "2", "--threads", "1", "--trial-timeout", "20",
        "--endpoint-seeds", "1"]
VOLATILE = ("wall_s", "finished_at")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def inner_records(run_dir: Path) -> list[TrialRecord]:
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines() if line.strip()]
    return [TrialRecord.model_validate(e["record"]) for e in events if e["type"] == "trial" and e["loop"] == "inner"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("target") / "clone"
    shutil.copytree(STANDIN, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


@pytest.fixture(scope="module")
def tiny(standin: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ablation") / "out"
    result = invoke("run", "--groups", "A,C,RANDOM,TPE", *TINY, "--target-dir", standin, "--out", out)
    assert result.exit_code == 0, result.output
    return out, read_rows(out)


def test_tiny_ablation_writes_one_row_per_repeat_with_exactly_the_agreed_keys(tiny, standin):
    out, rows = tiny
    assert sorted((r["group"], r["repeat"]) for r in rows) == sorted(
        (g, r) for g in ("A", "C", "RANDOM", "TPE") for r in (0, 1))
    for row in rows:
        assert tuple(row) == RESULT_KEYS
        assert row["iterations"] == 2 and sum(row["counts"].values()) == 2
        assert set(row["counts"]) == {s.value for s in Status}
        assert set(row["usage"]) == {"calls", "prompt_tokens", "completion_tokens", "cost_usd"}
        assert row["settings"] == {"time_budget": None, "flop_budget": None, "endpoint_seeds": 1, "parallel": 1, "cycles": 2,
                                   "iterations": 2, "threads": 1, "target": str(standin.resolve())}
        assert row["delta"] == pytest.approx(row["best"] - row["baseline"])
        # the endpoint re-measures baseline and final incumbent on a held-out seed, not the run's own
        endpoint = row["endpoint"]
        assert endpoint["seeds"] == [10_000] and endpoint["seeds"][0] != row["seed"]
        assert endpoint["delta"] == pytest.approx(endpoint["best"][0] - endpoint["baseline"][0])
        kept_nothing = row["counts"]["keep"] == 0  # (counts exclude the baseline) the incumbent is the baseline
        assert not kept_nothing or endpoint["best"] == endpoint["baseline"]
        assert (out / row["run_dir"] / "journal.jsonl").is_file()
        assert row["run_dir"] == f"runs/{row['group']}-r{row['repeat']}"
    args = json.loads((out / "ablation.json").read_text())
    assert args["groups"] == ["A", "C", "RANDOM", "TPE"] and args["repeats"] == 2 and args["iterations"] == 2


def test_every_group_shares_seed_and_baseline_per_repeat_and_traces_are_best_so_far(tiny):
    _, rows = tiny
    for repeat in (0, 1):
        same = [r for r in rows if r["repeat"] == repeat]
        assert {r["seed"] for r in same} == {repeat}
        assert len({r["baseline"] for r in same}) == 1
    for row in rows:
        trace = row["trace"]
        assert len(trace) == row["iterations"] + 1
        assert trace[0] == row["baseline"] and trace[-1] == row["best"]
        assert all(b <= a for a, b in zip(trace, trace[1:], strict=False))


def test_level_2_rows_list_their_mechanisms_with_verdicts_and_hook_calls(tiny):
    _, rows = tiny
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("A", "C", "RANDOM", "TPE")}
    mechanisms = [m for r in by_group["C"] for m in r["mechanisms"]]
    assert mechanisms, "Level 2 should design a mechanism in C's second cycle"
    for m in mechanisms:
        assert tuple(m) == MECHANISM_KEYS and m["cycle"] == 1
        assert m["verdict"] in ("kept", "reverted", "crash", "rejected", "fail", "timeout")
    assert any(sum(m["hook_calls"].values()) > 0 for m in mechanisms)
    assert all(not r["mechanisms"] for g in ("A", "RANDOM", "TPE") for r in by_group[g])
    assert all(r["levels"] == ["1", "1.5", "2"] and r["provider"] == "offline" for r in by_group["C"])
    assert all(r["usage"]["calls"] > 0 for r in by_group["A"] + by_group["C"])
    for r in by_group["RANDOM"] + by_group["TPE"]:
        assert r["provider"] == "none" and r["model"] is None and r["levels"] == [] and r["usage"]["calls"] == 0


def test_references_search_a_local_box_with_the_batch_constraint_built_in(tiny, standin):
    out, _ = tiny
    specs = tgt.discover((standin / "train.py").read_text())
    space = target_space(specs, standin)
    assert space.constraints and space.constraints[0].name == "TOTAL_BATCH_SIZE"
    for d in space.dims:  # a local box around the start, not train_opt's validation range
        start = specs[d.name].default
        if d.kind in ("int", "float") and start > 0:
            assert d.low >= start / 4 - 1 and d.high <= start * 4 + 1, d
    for group in ("RANDOM", "TPE"):
        for repeat in (0, 1):
            run = out / "runs" / f"{group}-r{repeat}"
            marker = json.loads((run / "classic.json").read_text())
            assert marker["search"] == group.lower() and marker["constraints"]
            search = [r for r in inner_records(run) if r.proposal.origin != "baseline"]
            assert len(search) == 2
            for record in search:
                assert set(record.proposal.changes) == set(space.names)
                assert space.feasible(record.proposal.changes) is None


def _fake_record(iteration: int, changes: dict, score: float | None, kept: bool = False) -> TrialRecord:
    status = (Status.KEEP if kept else Status.DISCARD) if score is not None else Status.CRASH
    origin = "baseline" if iteration == 0 else "tpe"
    return TrialRecord(loop="inner", iteration=iteration, status=Status.KEEP if iteration == 0 else status,
                       proposal=Proposal(changes=changes, origin=origin), score=score)


@pytest.mark.parametrize("search", ["random", "local", "tpe", "cmaes"])
def test_a_reference_rebuilt_from_the_journal_proposes_what_the_uninterrupted_one_would(standin, search):
    specs = tgt.discover((standin / "train.py").read_text())
    space = target_space(specs, standin)
    start = {n: s.default for n, s in specs.items()}
    live = ReferenceProposer(search=search, space=space, start=start, seed=7)
    rng = random.Random(3)
    history = [_fake_record(0, {}, 1.0)]
    seen = set()
    for i in range(1, 9):
        ctx = ProposalContext(loop="inner", iteration=i, cycle=0, history=tuple(history), seed=1000 + i)
        proposal = live.propose(ctx)
        rebuilt = ReferenceProposer(search=search, space=space, start=start, seed=7).propose(ctx)
        assert rebuilt.changes == proposal.changes, f"{search}: resume diverged at iteration {i}"
        assert space.feasible(proposal.changes) is None
        key = json.dumps(proposal.changes, sort_keys=True)
        assert key not in seen  # a measured configuration is never proposed again
        seen.add(key)
        score = None if i % 4 == 0 else rng.uniform(0.9, 1.5)
        history.append(_fake_record(i, proposal.changes, score, kept=score is not None and score < 0.95))


def test_workers_2_gives_the_same_rows_as_workers_1(tiny, standin, tmp_path):
    _, rows = tiny
    out = tmp_path / "parallel"
    result = invoke("run", "--groups", "A,C,RANDOM,TPE", *TINY, "--target-dir", standin, "--out", out, "--workers", "2")
    assert result.exit_code == 0, result.output
    key = lambda r: (r["group"], r["repeat"])  # noqa: E731
    assert sorted(map(stable, read_rows(out)), key=key) == sorted(map(stable, rows), key=key)


def test_rerun_skips_finished_repeats_and_resumes_a_half_done_one(standin, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    command = ["run", "--groups", "A", *TINY, "--cycles", "1", "--target-dir", standin, "--out", out]
    assert invoke(*command).exit_code == 0
    before = {r["repeat"]: r for r in read_rows(out)}
    # Interrupt repeat 1 after its first search trial: drop its row and the journal past that trial.
    (out / "results.jsonl").write_text(json.dumps(before[0]) + "\n")
    journal = out / "runs" / "A-r1" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines)
               if json.loads(line)["type"] == "trial" and json.loads(line)["record"]["iteration"] == 1)
    journal.write_text("".join(lines[:cut + 1]))
    ledger = tmp_path / "executions.txt"
    monkeypatch.setenv("STANDIN_LEDGER", str(ledger))

    result = invoke(*command)
    assert result.exit_code == 0, result.output
    assert "1 repeat(s) already in" in result.output
    assert [line.split()[0] for line in ledger.read_text().splitlines()] == ["start", "end"]  # one trial, not three
    after = {r["repeat"]: r for r in read_rows(out)}
    assert len(read_rows(out)) == 2 and stable(after[1]) == stable(before[1])
    assert len(inner_records(out / "runs" / "A-r1")) == 3
    assert invoke(*command).exit_code == 0 and len(read_rows(out)) == 2  # nothing left to run


def test_a_repeat_shipped_to_a_worker_without_the_ablation_dir_comes_back_whole(standin, tmp_path):
    plan = Plan(iterations=2, cycles=1, target_dir=str(standin), threads=1, trial_timeout_s=20)
    spec = RepeatSpec(out=str(tmp_path / "out"), group="A", repeat=0, plan=plan.model_dump(mode="json"))
    path = prepare_run_dir(spec)
    row, error, archive = distributed.remote_repeat(spec, "an-id-this-worker-cannot-see", distributed.pack(path))
    assert error is None and archive is not None
    assert inner_records(path) == []  # nothing ran in the driver's copy
    distributed.unpack(archive, path)
    assert len(inner_records(path)) == 3
    assert stable(make_row(spec)) == stable(row)


def test_a_trial_memory_cap_runs_train_py_under_an_address_space_limit(tiny, standin, tmp_path):
    _, rows = tiny
    out = tmp_path / "capped"
    result = invoke("run", "--groups", "A", "--repeats", "1", "--iterations", "1", "--cycles", "1", "--threads", "1",
                    "--trial-memory-gb", "2", "--target-dir", standin, "--out", out)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "runs" / "A-r0" / "settings.json").read_text())
    assert "RLIMIT_AS" in " ".join(settings["command"]) and settings["command"][-1] == "2"
    assert read_rows(out)[0]["baseline"] == next(r["baseline"] for r in rows if r["repeat"] == 0)


def test_a_torn_last_results_line_is_trimmed_before_the_next_append(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"group": "A", "repeat": 0}\n{"group": "A", "rep')
    assert read_rows(tmp_path) == [{"group": "A", "repeat": 0}]
    append_row(tmp_path, {"group": "A", "repeat": 1})
    assert [r["repeat"] for r in read_rows(tmp_path)] == [0, 1]


def test_other_settings_in_an_existing_out_are_refused_in_one_line(tiny, standin):
    out, _ = tiny
    result = invoke("run", "--groups", "A", "--repeats", "2", "--iterations", "4", "--cycles", "2",
                    "--target-dir", standin, "--out", out)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "use a new --out" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--groups", "A,X"], "--groups"),
    (["--groups", ","], "--groups"),
    (["--iterations", "3", "--cycles", "2"], "not divisible"),
    (["--workers", "2", "--threads", str(os.cpu_count())], "--allow-oversubscribe"),
])
def test_bad_arguments_exit_2_with_one_line_and_create_nothing(args, message, standin, tmp_path):
    out = tmp_path / "never"
    result = invoke("run", *args, "--target-dir", standin, "--out", out)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not out.exists()


def test_ray_executor_without_ray_installed_is_a_one_line_hint(standin, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke("run", "--groups", "A", *TINY, "--target-dir", standin, "--out", tmp_path / "o", "--executor", "ray")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: install the ray extra: pip install -e '.[ray]'"


def test_report_dispatches_to_the_report_module_or_says_it_is_missing(tiny, tmp_path):
    out, _ = tiny
    try:
        import experiments.report  # noqa: F401
    except ImportError:
        result = invoke("report", out)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        return
    assert invoke("report", out).exit_code == 0 and (out / "REPORT.md").is_file()
    missing = invoke("report", tmp_path)
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_the_report_exports_every_trial_of_every_repeat_and_keeps_it_without_the_journals(tiny, tmp_path):
    import gzip

    out, rows = tiny
    assert invoke("report", out).exit_code == 0
    trials = [json.loads(line) for line in gzip.open(out / "trials.jsonl.gz", "rt")]
    inner = [t for t in trials if t["loop"] == "inner"]
    assert len(inner) == sum(len(inner_records(out / r["run_dir"])) for r in rows)
    assert {(t["group"], t["repeat"]) for t in inner} == {(r["group"], r["repeat"]) for r in rows}
    assert any(t["loop"] == "mechanism" for t in trials if t["group"] == "C")  # Level 2's trials too
    # a committed results folder holds no journals: the report still regenerates, the export is kept
    copy = tmp_path / "committed"
    copy.mkdir()
    for name in ("results.jsonl", "ablation.json", "trials.jsonl.gz"):
        shutil.copy(out / name, copy / name)
    assert invoke("report", copy).exit_code == 0
    assert gzip.open(copy / "trials.jsonl.gz", "rt").read() == gzip.open(out / "trials.jsonl.gz", "rt").read()


def test_groups_given_on_an_existing_ablation_run_only_those_and_keep_the_others_rows(standin, tmp_path):
    out = tmp_path / "grow"
    base = ["--iterations", "1", "--cycles", "1", "--threads", "1", "--trial-timeout", "20", "--endpoint-seeds", "0",
            "--target-dir", standin, "--out", out]
    assert invoke("run", "--groups", "A,RANDOM", "--repeats", "1", *base).exit_code == 0
    result = invoke("run", "--groups", "A", "--repeats", "3", *base)
    assert result.exit_code == 0, result.output
    assert sorted((r["group"], r["repeat"]) for r in read_rows(out)) == [("A", 0), ("A", 1), ("A", 2), ("RANDOM", 0)]
    assert "(3/3)" in result.output  # progress counts the groups that run
    assert json.loads((out / "ablation.json").read_text())["groups"] == ["A", "RANDOM"]


def test_an_ablation_runs_its_repeats_with_parallel_trials_and_the_same_trial_count(standin, tmp_path):
    out = tmp_path / "k2"
    result = invoke("run", "--groups", "A,TPE", "--repeats", "1", "--iterations", "4", "--cycles", "2", "--threads", "1",
                    "--trial-timeout", "20", "--endpoint-seeds", "0", "--parallel", "2", "--target-dir", standin,
                    "--out", out)
    assert result.exit_code == 0, result.output
    for row in read_rows(out):
        assert row["settings"]["parallel"] == 2
        assert sum(row["counts"].values()) == 4  # K = 2 spends the budget K = 1 would
        assert json.loads((out / row["run_dir"] / "settings.json").read_text())["parallel"] == 2
    assert invoke("run", "--parallel", "0", "--out", tmp_path / "bad").exit_code == 2
