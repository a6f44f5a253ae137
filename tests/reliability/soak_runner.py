"""The soak: thousands of offline iterations with no-op trials while generated mechanisms are loaded
through the real staged loader, attached, and reverted (detached by the controller after a hook
failure, or reverted at the end of their window), one after another.

    python -m tests.reliability.soak_runner RUN_DIR ITERATIONS WINDOW

Runs in its own process so its memory figures are its own; prints one JSON line of figures.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
from pathlib import Path

from core.inner_loop import InnerLoopController
from core.loader import MechanismLoader
from core.plugins import Executor, MetricEvaluator, Proposer
from core.records import ExecutionResult, Proposal
from core.state import RunDir

MECHANISM = '''
from core.mechanism import Mechanism
from core.records import Guidance

GENERATION = {generation}


class Soak{generation}(Mechanism):
    name = "soak-{generation}"

    def __init__(self, **params):
        super().__init__(**params)
        self.seen = 0

    def guidance(self, ctx):
        return Guidance(text="generation {generation} after " + str(self.seen) + " records")

    def observe(self, record):
        self.seen += 1
        if {faulty} and self.seen > {fail_after}:
            raise ValueError("soak mechanism {generation} gives up")
'''


class Walk(Proposer):
    """A seeded random walk on x; keeps nothing."""

    def propose(self, ctx):
        rng = random.Random(ctx.seed)
        return Proposal(changes={"x": round(rng.uniform(-5, 5), 6)}, region=f"x:{rng.randint(0, 9)}")


class Noop(Executor):
    def execute(self, proposal, ctx):
        return ExecutionResult(status="ok", metrics={"loss": proposal.changes.get("x", 3.0) ** 2})


def status(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children() -> list[int]:
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[2]) == me:
            found.append(int(stat.parent.name))
    return found


def controller(run: RunDir) -> InnerLoopController:
    return InnerLoopController(run=run, proposer=Walk(), executor=Noop(), evaluator=MetricEvaluator(metric="loss"),
                               hook_timeout_s=5.0, seed=7)


def main(run_dir: Path, iterations: int, window: int) -> dict:
    run = RunDir.create(run_dir)
    loop = controller(run)
    loader = MechanismLoader(run_dir, check_timeout_s=20.0)
    loop.ensure_baseline()
    started = time.monotonic()
    loads = reverted_by_fault = reverted_by_window = 0
    warm_rss = warm_fds = None
    for generation, first in enumerate(range(0, iterations, window)):
        faulty = generation % 2 == 1
        loaded = loader.load(MECHANISM.format(generation=generation, faulty=faulty, fail_after=window // 2))
        loads += 1
        loop.attach(loaded.instance, name=loaded.name, origin="generated", digest=loaded.digest, replay=False)
        loop.run_cycle(generation, min(window, iterations - first))
        if loop.detach(loaded.name, reason="window over: reverted") is None:
            reverted_by_fault += 1
        else:
            reverted_by_window += 1
        loader.unload(loaded)
        del loaded
        if generation == 0:
            gc.collect()
            warm_rss, warm_fds = status("VmRSS"), fds()
    seconds = time.monotonic() - started
    gc.collect()
    figures = {
        "iterations": len(loop.history) - 1, "loads": loads, "reverted_by_fault": reverted_by_fault,
        "reverted_by_window": reverted_by_window, "seconds": round(seconds, 2),
        "ms_per_iteration": round(1000 * seconds / iterations, 3),
        "rss_warm_kib": warm_rss, "rss_end_kib": status("VmRSS"), "peak_rss_kib": status("VmHWM"),
        "fds_warm": warm_fds, "fds_end": fds(), "children": children(),
        "mechanism_modules": sorted(m for m in sys.modules if m.startswith("bilevel_mech_")),
        "journal_events": len(run.journal), "best": loop.best_score,
    }
    live = [r.model_dump(mode="json") for r in loop.history]
    run.close()
    with RunDir.open(run_dir) as again:
        replayed = controller(again)
        figures["replay_equal"] = [r.model_dump(mode="json") for r in replayed.history] == live
        figures["replay_best"] = replayed.best_score
    return figures


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
