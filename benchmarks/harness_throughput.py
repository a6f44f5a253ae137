"""Throughput and val_bpb of the bundled CPU harness's default train.py on this machine.

    python benchmarks/harness_throughput.py [--budget SECONDS] [--threads N] [--keep]

Copies domains/train_opt/harness into a temporary run directory (as the runner does), runs
`python train.py` there once, and reports training tokens/s, val_bpb and where the wall time went.
Timings depend on the CPU and on whatever else is running; the busy share of the CPUs taken by
other processes during the run is printed so a contended measurement can be recognised.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "domains" / "train_opt" / "harness"


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks since boot, Linux only."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return None
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=None, help="BILEVEL_TIME_BUDGET (default: prepare.py's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="BILEVEL_THREADS (default: all CPUs)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory and its log")
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="harness_bench_"))
    shutil.copytree(HARNESS, run_dir, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "BILEVEL_DATA"}
    if args.budget is not None:
        env["BILEVEL_TIME_BUDGET"] = f"{args.budget:g}"
    if args.threads is not None:
        env["BILEVEL_THREADS"] = str(args.threads)

    ticks0, usage0, started = _busy_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    proc = subprocess.run([sys.executable, "train.py"], cwd=run_dir, env=env, capture_output=True)
    wall = time.time() - started
    ticks1, usage1 = _busy_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout = proc.stdout.decode(errors="replace")
    (run_dir / "run.log").write_text(stdout + proc.stderr.decode(errors="replace"))

    if "\n---\n" not in stdout:
        print(f"train.py failed (exit {proc.returncode}); log: {run_dir / 'run.log'}")
        print(proc.stderr.decode(errors="replace")[-2000:])
        return 1
    summary = {}
    for line in stdout.rsplit("\n---\n", 1)[1].splitlines():
        key, _, value = line.partition(":")
        summary[key.strip()] = float(value)

    tokens = summary["total_tokens_M"] * 1e6
    print(
        f"machine:            {os.cpu_count()} CPUs, threads {args.threads or 'all'}, python {sys.version.split()[0]}"
    )
    print(f"val_bpb:            {summary['val_bpb']:.6f}")
    print(f"tokens/s (train):   {tokens / summary['training_seconds']:,.0f}")
    print(f"steps:              {summary['num_steps']:.0f} ({summary['training_seconds']:.1f} s of training)")
    print(f"params:             {summary['num_params_M']:.3f} M, depth {summary['depth']:.0f}")
    print(f"total_seconds:      {summary['total_seconds']:.1f} (train.py's own clock)")
    print(f"wall incl. startup: {wall:.1f} s")
    if ticks0 and ticks1:
        own = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        others = (
            max(0.0, (ticks1[0] - ticks0[0]) / os.sysconf("SC_CLK_TCK") - own) / wall / (os.cpu_count() or 1)
        )
        print(f"other processes:    {others:.0%} of the CPUs during the run (contended if well above 0)")
    if args.keep:
        print(f"run directory:      {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
