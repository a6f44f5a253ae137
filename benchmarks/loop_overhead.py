"""Print the train_opt loop's overhead as a fraction of trial time (target < 2%).

Runs a short three-level session on the bundled CPU harness with the offline researcher, then
splits the wall time into time spent inside trial processes and everything else (proposals,
editing, journaling, Level-1.5 analysis, Level-2 hot-loading). Not a test: it prints figures.

    python benchmarks/loop_overhead.py [--time-budget 5] [--inner-budget 2] [--outer-cycles 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from domains.train_opt.session import TrainSession, make_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=5.0)
    parser.add_argument("--inner-budget", type=int, default=2)
    parser.add_argument("--outer-cycles", type=int, default=3)
    args = parser.parse_args()
    settings = make_settings(levels=("1", "1.5", "2"), inner_budget=args.inner_budget,
                             outer_cycles=args.outer_cycles, time_budget=args.time_budget)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        session = TrainSession.start(settings, Path(tmp) / "run")
        summary = session.run()
        session.close()
        wall = time.perf_counter() - started
        inner = session.inner.history
        in_trials = sum(r.info.get("exec_seconds", 0.0) for r in inner)
    overhead = wall - in_trials
    print(f"trials: {len(inner)} (baseline + {summary['iterations']}), mechanisms: {len(summary['mechanisms'])}")
    print(f"wall time:              {wall:8.2f} s")
    print(f"inside trial processes: {in_trials:8.2f} s")
    print(f"loop overhead:          {overhead:8.2f} s = {overhead / in_trials:.2%} of trial time (target < 2%)")
    print(f"per trial:              {overhead / len(inner) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
