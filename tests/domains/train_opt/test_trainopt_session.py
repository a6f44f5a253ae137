"""A whole train_opt run on the stand-in target: all three levels, the Level-2 tabu demo, resume after
SIGKILL, and a failing baseline.

The stand-in (standin_target/) makes a trial take tens of milliseconds, so a run of every level takes
a few seconds; the researcher is the offline stand-in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.records import Status, TrialRecord
from domains.train_opt import target as tgt
from domains.train_opt.session import TrainSession, make_settings

STANDIN = Path(__file__).parent / "standin_target"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """The user's clone: a copy of the stand-in target that the run must never modify."""
    path = tmp_path / "clone"
    shutil.copytree(STANDIN, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def inner_records(session) -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in session.rundir.journal.events("trial", loop="inner")]


def run_session(standin: Path, run_dir: Path, *, detach_level2_tabu: bool = False, **settings):
    session = TrainSession.start(make_settings(target_dir=str(standin), **settings), run_dir)
    try:
        if detach_level2_tabu:
            session.level2.detach("tabu", reason="counterfactual: Level 2 without its tabu list")
        summary = session.run()
    finally:
        session.close()
    return session, summary


def standin_bpb(train_py: Path) -> float:
    spec = importlib.util.spec_from_file_location("standin_prepare_for_tests", STANDIN / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate_bpb(tgt.values(train_py.read_text(encoding="utf-8")))


# -- group C: levels 1, 1.5 and 2 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def group_c(tmp_path_factory):
    """One run of every level (3 cycles of 3 trials), shared by the group-C tests below."""
    tmp = tmp_path_factory.mktemp("group_c")
    clone = tmp / "clone"
    shutil.copytree(STANDIN, clone, ignore=shutil.ignore_patterns("__pycache__"))
    before = tree_digest(clone)
    session, summary = run_session(clone, tmp / "run", levels=("1", "1.5", "2"), inner_budget=3,
                                   outer_cycles=3, seed=0)
    return session, summary, (clone, before)


def test_group_c_run_completes_and_leaves_the_users_clone_untouched(group_c):
    session, summary, (standin, before) = group_c
    assert summary["complete"] and summary["stopped"] is None
    assert session.rundir.journal.last("run_finished") is not None
    assert tree_digest(standin) == before
    assert (session.rundir.path / "target" / "prepare.py").read_bytes() == (standin / "prepare.py").read_bytes()


def test_group_c_journals_a_level_1_5_config_after_every_cycle_but_the_last(group_c):
    session, _, _ = group_c
    journal = session.rundir.journal
    patched = sorted(e["cycle"] for e in journal.events() if e["type"] in ("config", "config_rejected"))
    assert patched == [0, 1]
    for event in journal.events("config"):
        assert event["patch"]["reason"] and set(event["config"]["active_params"]) <= set(session.specs)


def test_group_c_frozen_parameters_are_not_touched_in_later_cycles(group_c):
    session, _, _ = group_c
    records = inner_records(session)
    for event in session.rundir.journal.events("config"):
        frozen = set(event["config"]["frozen_params"])
        for record in records:
            if record.cycle > event["cycle"] and record.proposal and record.proposal.origin != "baseline":
                assert not frozen & set(record.proposal.changes), (event["cycle"], record.iteration)


def test_group_c_loads_a_generated_mechanism_calls_its_hooks_and_records_a_verdict(group_c):
    session, summary, _ = group_c
    run = session.rundir.path
    designs = summary["mechanisms"]
    assert len(designs) == 2  # cycles 1 and 2; cycle 0 is Level 2's baseline
    records = inner_records(session)
    for m in designs:
        assert m["verdict"] in ("kept", "reverted"), m
        source = run / m["source"]
        assert source.parent == run / "mechanisms" and source.is_file()
        assert "class " in source.read_text() and "Mechanism" in source.read_text()
        cycle = [r for r in records if r.cycle == m["cycle"] and not r.proposal.is_baseline]
        start = cycle[0].iteration
        steering = {r.iteration: sum(n for hook, n in r.hook_calls.get(m["name"], {}).items() if hook != "observe")
                    for r in cycle}
        # a paired trial: it steers one iteration of the pair (start, start + 1), its parent set the other
        assert len(cycle) == 3 and (steering[start] > 0) != (steering[start + 1] > 0), (m["name"], steering)
        (record,) = [r for r in session.level2.history if r.info.get("mechanism") == m["name"]]
        assert {"design_gain", "parent_arm_gain", "cycle_gain"} <= set(record.metrics)
        assert record.metrics["gain"] == record.metrics["design_gain"]
        # a kept mechanism stays attached for the rest of the run, a reverted one only for its cycle
        attached = [sum(r.hook_calls.get(m["name"], {}).values()) for r in records
                    if r.cycle == m["cycle"] or (m["verdict"] == "kept" and r.cycle > m["cycle"])]
        assert sum(m["hook_calls"].values()) == sum(attached)
        if m["verdict"] == "reverted":
            detached = [e for e in session.rundir.journal.events("mechanism_detached", loop="inner")
                        if e["name"] == m["name"]]
            assert len(detached) == 1 and detached[0]["reason"].startswith("reverted")
            later = [r for r in records if r.cycle > m["cycle"]]
            assert all(m["name"] not in r.hook_calls for r in later), "a reverted mechanism was still called"


def test_group_c_summary_counts_are_consistent_with_the_journal(group_c):
    session, summary, _ = group_c
    records = inner_records(session)
    search = [r for r in records if r.proposal.origin != "baseline"]
    assert [r.iteration for r in records] == list(range(1 + 3 * 3))
    assert summary["iterations"] == len(search) == 9
    assert sum(summary["counts"].values()) == 9
    assert summary["counts"]["keep"] == sum(r.status is Status.KEEP for r in search)
    kept = [r.score for r in records if r.status is Status.KEEP]
    assert summary["best"] == min(kept) and summary["baseline"] == records[0].score
    assert summary["delta"] == pytest.approx(summary["best"] - summary["baseline"])
    assert summary["best"] <= summary["baseline"]
    stored = json.loads((session.rundir.path / "summary.json").read_text())
    assert stored["counts"] == summary["counts"] and stored["best"] == summary["best"]
    usage = summary["usage"]
    assert set(usage) == {"inner", "outer", "mechanism"} and summary["providers"] == ["offline"]
    # a candidate from the researcher costs a call; a replicate or a mechanism's candidate does not
    assert usage["outer"]["calls"] == 2 and usage["inner"]["calls"] >= sum(r.proposal.origin == "proposer" for r in search)


def test_group_c_best_train_py_is_the_incumbent_and_scores_the_best(group_c):
    session, summary, _ = group_c
    best = session.rundir.path / "best_train.py"
    assert best.read_text() == session.rundir.abs(session.inner.incumbent).read_text()
    assert standin_bpb(best) == pytest.approx(summary["best"], abs=2e-6)
    patch = tgt.diff((session.rundir.path / "original_train.py").read_text(), best.read_text())
    assert patch  # the run found something better than the defaults


def test_each_inner_trial_keeps_its_train_py_diff_and_log(group_c):
    session, _, _ = group_c
    for record in inner_records(session):
        trial = session.rundir.path / "trials" / "inner" / f"{record.iteration:05d}"
        assert {"train.py", "diff.patch", "run.log"} <= {p.name for p in trial.iterdir()}, record.iteration


# -- Level 2 searches with the tabu mechanism attached to its own loop -------------------------------


def _level2(session) -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in session.rundir.journal.events("trial", loop="mechanism")]


def _reproposed_after_revert(level2: list[TrialRecord], *, same_parent: bool = False) -> list[str]:
    """Regions proposed again after a non-kept try, never having been kept before (``same_parent``:
    only since the last keep — a design kept in between changed the parent set, so the design is then
    a new configuration)."""
    repeats = []
    for i, record in enumerate(level2):
        region = record.proposal.region
        earlier = level2[1:i]
        if same_parent:
            keeps = [j for j, r in enumerate(earlier) if r.status is Status.KEEP]
            earlier = earlier[keeps[-1] + 1:] if keeps else earlier
        if any(r.proposal.region == region and r.status is not Status.KEEP for r in earlier) and \
                not any(r.proposal.region == region and r.status is Status.KEEP for r in earlier):
            repeats.append(f"{region} at Level-2 iteration {record.iteration}")
    return repeats


def test_level_2_does_not_repropose_a_reverted_design_because_tabu_is_attached_to_its_loop(standin, tmp_path):
    # seed 3: every design of this trajectory is reverted, so a repeat would show (the demo needs reverts)
    settings = {"levels": ("1", "1.5", "2"), "inner_budget": 2, "outer_cycles": 5, "seed": 3}
    with_tabu, _ = run_session(standin, tmp_path / "with", **settings)
    level2 = _level2(with_tabu)
    designs = level2[1:]
    assert len(designs) == 4
    assert any(r.status is not Status.KEEP for r in designs[:-1]), "no design was reverted: the demo shows nothing"
    assert _reproposed_after_revert(level2) == []
    # the tabu list really sat in Level 2's loop: its hooks ran on every design iteration
    for record in designs:
        assert record.hook_calls.get("tabu", {}).get("guidance", 0) >= 1
        assert record.hook_calls["tabu"].get("observe", 0) == 1
    assert any("tabu" in "".join(r.rejections) for r in designs) or \
        all(r.hook_calls["tabu"].get("filter", 0) >= 1 for r in designs)

    # the same run with Level 2's tabu list detached: the designer re-proposes a reverted design, and
    # the core refuses it as a duplicate (never executed again), so it does not recur either
    without, _ = run_session(standin, tmp_path / "without", detach_level2_tabu=True, **settings)
    assert any(r.startswith("duplicate:") for rec in _level2(without) for r in rec.rejections), \
        "counterfactual: without tabu the designer repeats a reverted design"
    assert _reproposed_after_revert(_level2(without), same_parent=True) == []


# -- failing baseline --------------------------------------------------------------------------------


def test_a_failing_baseline_is_a_clear_user_error(standin: Path, tmp_path: Path):
    train = standin / "train.py"
    train.write_text(tgt.apply_changes(train.read_text(), {"MATRIX_LR": 0.9}))  # diverges: FAIL, exit 1
    session = TrainSession.start(make_settings(target_dir=str(standin), inner_budget=2, outer_cycles=1),
                                 tmp_path / "run")
    try:
        with pytest.raises(UserError, match=r"baseline trial failed \(fail") as info:
            session.run()
    finally:
        session.close()
    assert "trials/inner/00000/run.log" in str(info.value)
    assert "\n" not in str(info.value)
    assert len(inner_records(session)) == 1  # nothing was searched from a broken starting point


def test_a_target_without_train_py_is_refused_before_a_run_dir_is_made(tmp_path: Path):
    with pytest.raises(UserError, match="no train.py"):
        TrainSession.start(make_settings(target_dir=str(tmp_path)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- resume after SIGKILL ----------------------------------------------------------------------------

INNER_BUDGET, OUTER_CYCLES = 2, 2
KILL_AT = 3  # the first trial of cycle 1: inside Level 2's step, with a hot-loaded mechanism attached
SLEEP_S = 0.6


def _events(run_dir: Path) -> list[dict]:
    try:
        text = (run_dir / "journal.jsonl").read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return events


def _ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    clone = tmp / "clone"
    shutil.copytree(STANDIN, clone, ignore=shutil.ignore_patterns("__pycache__"))
    run_dir, ledger = tmp / "run", tmp / "ledger.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_")}
    env.update(PYTHONPATH=str(REPO), STANDIN_SLEEP=str(SLEEP_S), STANDIN_LEDGER=str(ledger))
    cmd = [sys.executable, "-m", "domains.train_opt.cli", "--target-dir", str(clone), "--run-dir", str(run_dir),
           "bilevel", "--inner-budget", str(INNER_BUDGET), "--outer-cycles", str(OUTER_CYCLES)]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never reached the trial to kill"
            events = _events(run_dir)
            trials = [e for e in events if e["type"] == "trial" and e["loop"] == "inner"]
            pending = [e for e in events if e["type"] == "proposal" and e["loop"] == "inner"
                       and e["iteration"] == KILL_AT]
            if len(trials) == KILL_AT and pending and len(_ledger(ledger)) == 2 * KILL_AT + 1:
                break  # the trial's process has started and not finished: kill mid-trial
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = _ledger(ledger)
    time.sleep(SLEEP_S + 0.6)  # long enough for an orphaned trial to finish, if one survived the kill
    after_grace = _ledger(ledger)
    before_resume = _events(run_dir)
    resumed = subprocess.run([sys.executable, "-m", "domains.train_opt.cli", "resume", str(run_dir)],
                             cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    return {"run_dir": run_dir, "at_kill": at_kill, "after_grace": after_grace, "ledger": _ledger(ledger),
            "before_resume": before_resume, "resumed": resumed, "events": _events(run_dir)}


def test_resume_after_sigkill_finishes_with_no_trial_lost_or_repeated(killed_and_resumed):
    k = killed_and_resumed
    assert k["resumed"].returncode == 0, k["resumed"].stderr
    records = [TrialRecord.model_validate(e["record"]) for e in k["events"]
               if e["type"] == "trial" and e["loop"] == "inner"]
    assert [r.iteration for r in records] == list(range(1 + INNER_BUDGET * OUTER_CYCLES))
    assert {r.cycle for r in records[1:]} == set(range(OUTER_CYCLES))
    assert all(sum(r.cycle == c for r in records[1:]) == INNER_BUDGET for c in range(OUTER_CYCLES))
    # the killed iteration ran again with the candidate journaled before the kill, not a new one
    proposals = [e for e in k["events"] if e["type"] == "proposal" and e["loop"] == "inner"
                 and e["iteration"] == KILL_AT]
    assert len(proposals) == 2 and proposals[0]["proposal"] == proposals[1]["proposal"]
    assert records[KILL_AT].proposal.model_dump(mode="json") == proposals[0]["proposal"]
    # every trial the resumed process started, it started once; the killed one is among them exactly once
    killed_digest = k["at_kill"][-1].split()[1]
    resumed_starts = [line.split()[1] for line in k["ledger"][len(k["after_grace"]):] if line.startswith("start")]
    assert resumed_starts.count(killed_digest) == 1
    assert len(resumed_starts) == len(set(resumed_starts)) == 1 + INNER_BUDGET * OUTER_CYCLES - KILL_AT
    # Level 2 was mid-step too: its design was re-executed, once, and judged once
    level2 = [e["record"] for e in k["events"] if e["type"] == "trial" and e["loop"] == "mechanism"]
    assert [r["iteration"] for r in level2] == list(range(OUTER_CYCLES))
    assert k["events"][-1]["type"] == "run_finished"


def test_sigkill_of_the_cli_leaves_no_trial_process_running(killed_and_resumed):
    k = killed_and_resumed
    killed_digest = k["at_kill"][-1].split()[1]
    finished_after_kill = [line for line in k["after_grace"][len(k["at_kill"]):] if line.startswith("end")]
    assert finished_after_kill == [], (
        f"the trial {killed_digest} kept running after its CLI was SIGKILLed and finished on its own; "
        "resume then ran it a second time alongside"
    )


def test_group_c_writes_only_event_types_with_a_typed_model(group_c):
    from core.events import EVENTS

    session, _, _ = group_c
    assert {e["type"] for e in session.rundir.journal.events()} <= set(EVENTS)


def test_group_c_scores_each_level_1_5_patch_by_the_cycle_it_governs(group_c):
    session, summary, _ = group_c
    journal = session.rundir.journal
    applied = [e["cycle"] for e in journal.events("config")]
    verdicts = list(journal.events("level15_verdict"))
    assert [v["cycle"] for v in verdicts] == applied and all(v["governed"] == v["cycle"] + 1 for v in verdicts)
    gains = {e["cycle"]: e["gain"] for e in journal.events("cycle_end")}
    for v in verdicts:
        assert (v["gain"], v["parent_gain"]) == (gains[v["governed"]], gains[v["cycle"]])
        assert v["kept"] == (v["gain"] > v["parent_gain"]) and v["kept"] == ("restored" not in v)
    if verdicts and not verdicts[-1]["kept"]:  # a revert restores the configuration the patch replaced
        assert session.inner.search.model_dump(mode="json") == verdicts[-1]["restored"]
    assert [(v["cycle"], v["kept"]) for v in summary["config_verdicts"]] == [(v["cycle"], v["kept"]) for v in verdicts]
