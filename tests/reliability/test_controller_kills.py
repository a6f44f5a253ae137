"""The controller is SIGKILLed again and again — while proposing, while a trial trains, in the middle
of writing a journal line, or at a random moment from outside — and each time ``resume`` picks the
run up. At the end the run is complete: the journal parses, every loop's iterations are dense with
no duplicate, the total is the target, a re-run iteration re-ran its journaled candidate, and no
trial process outlived its controller.

The kill points come from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import alive, cli_env, journal_sound, ran, read_events, trials

KILLS = 21
SEED = 20_261_127
INNER, CYCLES = 8, 4
TOTAL = 1 + INNER * CYCLES
MODES = ("journal", "proposal", "trial", "outside")

pytestmark = [pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")]


def launch(args: list[str], *, mode: str, n: int, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.kill_runner", mode, str(n), *args], cwd=cwd,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stand_ins(pids_file: Path) -> list[int]:
    return [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []


@pytest.mark.slow  # ~35 s; the default suite keeps the per-domain SIGKILL-and-resume tests
def test_twenty_plus_sigkills_at_random_points_then_resume_loses_and_repeats_nothing(standin: Path, tmp_path: Path):
    rng = random.Random(SEED)
    run_dir, ledger, pids = tmp_path / "run", tmp_path / "ledger.txt", tmp_path / "pids.txt"
    env = cli_env(STANDIN_LEDGER=str(ledger), STANDIN_PIDS=str(pids), STANDIN_SLEEP="0.15")
    first = ["--target-dir", str(standin), "--run-dir", str(run_dir), "bilevel",
             "--inner-budget", str(INNER), "--outer-cycles", str(CYCLES)]
    kills, finished, log = 0, False, []
    while kills < KILLS:
        args = first if not (run_dir / "journal.jsonl").exists() else ["resume", str(run_dir)]
        mode = rng.choice(MODES)
        n = rng.randint(1, 2)
        delay = rng.uniform(0.3, 1.6)
        proc = launch(args, mode="none" if mode == "outside" else mode, n=n, cwd=tmp_path, env=env)
        try:
            code = proc.wait(timeout=delay if mode == "outside" else 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        log.append((mode, n, round(delay, 2), code))
        if code == 0:
            finished = True
            break
        assert code == -signal.SIGKILL, f"round {len(log)} ({mode}, n={n}) exited {code}: {stderr[-2000:]}"
        kills += 1
        time.sleep(0.1)
        survivors = [p for p in stand_ins(pids) if alive(p)]
        assert not survivors, f"trial processes outlived the SIGKILLed controller ({mode}): {survivors}"
    assert kills >= 20 and not finished, f"the run finished after only {kills} kills: {log}"

    done = subprocess.run([sys.executable, "-m", "domains.train_opt.cli", "resume", str(run_dir)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    events = journal_sound(run_dir)  # strict: every line parses, seq dense, iterations dense, no duplicate
    assert events[-1]["type"] == "run_finished"
    inner = trials(events)
    assert [r.iteration for r in inner] == list(range(TOTAL))
    assert all(sum(r.cycle == c for r in inner[1:]) == INNER for c in range(CYCLES))
    assert [r.iteration for r in trials(events, "mechanism")] == list(range(CYCLES))
    for loop in ("inner", "mechanism"):  # an iteration that was re-run re-ran the candidate journaled for it
        proposals: dict[int, list] = {}
        for e in events:
            if e["type"] == "proposal" and e["loop"] == loop:
                proposals.setdefault(e["iteration"], []).append(e["proposal"])
        for iteration, seen in proposals.items():
            assert all(p == seen[0] for p in seen), f"{loop} iteration {iteration} ran a different candidate"
        for record in trials(events, loop):
            if record.proposal is not None and record.proposal.origin != "baseline":
                assert record.proposal.model_dump(mode="json") == proposals[record.iteration][-1]
    ends = [line for line in ledger.read_text().splitlines() if line.startswith("end")]
    assert len(ran(inner)) <= len(ends) <= len(ran(inner)) + kills, "trials finished more often than kills explain"
    assert not [p for p in stand_ins(pids) if alive(p)]
    torn = sum(1 for mode, *_ in log if mode == "journal")
    assert torn >= 3 and len(read_events(run_dir)) == len(events), log
