"""Print the speed-up of parallel trials (``--parallel K``) and the batch controller's overhead.

1. A fixed script_opt run (baseline + 24 trials, Level 1, offline researcher) at K = 1 and K = 2 on a
   CPU-bound target: a pure-Python loop calibrated to take ``--trial-seconds`` (default ~1 s) on one
   core, each trial one thread (``--trial-threads 1``; at K = 2 each slot is pinned to its own core).
   Wall time of the whole run and of its 24 search trials (from the baseline's record to the last),
   their ratio, and the best score after 24 trials for each K (quality per trial).
2. The controller's own cost per trial at K = 4 (and K = 1) with a no-op target: an in-memory
   executor that returns at once, so everything measured is proposing, journaling, the pool's
   threads and the in-order decisions.
3. Quality per trial (``--quality-seeds N``): the same run on a near-instant version of the target
   for seeds 0…N-1 at K = 1 and K = 2, mean best-so-far after 6, 12 and 24 trials (a batch's
   candidates are all built on the incumbent at its start, so some loss per trial is expected).
4. With Ray installed: run 1 at K = 2 as Ray tasks on a local Ray instance (``--executor ray``,
   one CPU declared per trial); Ray's start-up is reported apart.

Not a test: it prints figures, with the machine's load average before and after (other work on
the machine slows trials; run it when it is quiet).

    python benchmarks/parallel_trials.py [--trials 24] [--trial-seconds 1.0] [--repeats 1] [--no-ray] [--json OUT]

``--repeats N`` alternates K = 1 and K = 2 runs N times and reports each pair's ratio and the median
(each run notes the load average when it ended).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.batch import BatchRunner  # noqa: E402
from core.inner_loop import InnerLoopController  # noqa: E402
from core.plugins import ExecContext, Executor, MetricEvaluator, Proposer  # noqa: E402
from core.pool import LocalPool  # noqa: E402
from core.records import ExecutionResult, Proposal, ProposalContext  # noqa: E402
from core.state import RunDir  # noqa: E402

TARGET = """import time
X = 3.0  # the main knob
Y = 2  # an integer knob
Z = 0.5  # a third knob
N = {n}  # loop length: calibrated to about {seconds:g} s on one core (fixed: not tuned)

acc = 0
for i in range(N):  # CPU-bound, one thread
    acc += i % 7
print("---")
print(f"loss: {{(X - 1.2) ** 2 + 0.1 * (Y - 5) ** 2 + (Z - 0.1) ** 2 + 0 * acc:.6f}}")
"""


def calibrate(seconds: float) -> int:
    n = 2_000_000
    while True:
        started = time.perf_counter()
        acc = 0
        for i in range(n):
            acc += i % 7
        took = time.perf_counter() - started
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


def script_run(project: Path, run_dir: Path, *, trials: int, k: int, executor: str = "local", seed: int = 0) -> dict:
    from domains.script_opt.session import ScriptSession, make_settings

    settings = make_settings(target_dir=str(project), cmd="python fn.py", metric="loss", levels=("1",),
                             inner_budget=trials, outer_cycles=1, parallel=k, executor=executor,
                             trial_threads=1, params=("X", "Y", "Z"), seed=seed)
    started = time.perf_counter()
    session = ScriptSession.start(settings, run_dir)
    ready = time.perf_counter()  # Ray's start-up (make_pool) happens while the session is built
    try:
        summary = session.run()
    finally:
        session.close()
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    stamps = [datetime.fromisoformat(e["ts"]) for e in events if e["type"] == "trial"]
    search = (stamps[-1] - stamps[0]).total_seconds()
    scores = [e["record"]["best_after"] for e in events if e["type"] == "trial"][1:]
    return {"k": k, "executor": executor, "load": round(os.getloadavg()[0], 2),
            "wall_s": round(wall, 2), "startup_s": round(ready - started, 2),
            "search_s": round(search, 2), "trials": summary["iterations"], "best": summary["best"],
            "best_so_far": scores}


class Instant(Executor):
    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        return ExecutionResult(status="ok", metrics={"loss": float(proposal.changes.get("x", 0.0)) ** 2})


class Distinct(Proposer):
    """Distinct candidates at once (no LLM, no search): x = iteration."""

    def propose(self, ctx: ProposalContext) -> Proposal:
        return Proposal(changes={"x": float(ctx.iteration)}, region=f"x{ctx.iteration}")


def overhead(k: int, n: int, tmp: Path) -> float:
    run = RunDir.create(tmp / f"noop{k}", fsync=True)
    ctl = InnerLoopController(run=run, proposer=Distinct(), executor=Instant(), evaluator=MetricEvaluator(metric="loss"))
    pool = None
    if k > 1:
        pool = LocalPool(size=k)
        ctl.batch = BatchRunner(ctl, pool, size=k)
    try:
        ctl.ensure_baseline()
        started = time.perf_counter()
        ctl.run_cycle(0, n)
        took = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.close()
        run.close()
    return took / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    parser.add_argument("--noop-trials", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1, help="alternate K=1 / K=2 runs this many times")
    parser.add_argument("--quality-seeds", type=int, default=0, help="seeds of the quality-per-trial comparison")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    out: dict = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                 "load_before": os.getloadavg()}
    n = calibrate(args.trial_seconds)
    out["loop_n"] = n
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        project = tmp / "project"
        project.mkdir()
        (project / "fn.py").write_text(TARGET.format(n=n, seconds=args.trial_seconds))
        pairs = [[script_run(project, tmp / f"k{k}-{i}", trials=args.trials, k=k) for k in (1, 2)]
                 for i in range(args.repeats)]
        out["runs"] = [r for pair in pairs for r in pair]
        runs = pairs[0]
        out["speedup_search_each"] = [round(one["search_s"] / two["search_s"], 3) for one, two in pairs]
        out["speedup_search"] = round(median(one["search_s"] / two["search_s"] for one, two in pairs), 3)
        out["speedup_wall"] = round(median(one["wall_s"] / two["wall_s"] for one, two in pairs), 3)
        if args.quality_seeds:
            fast = tmp / "fast"
            fast.mkdir()
            (fast / "fn.py").write_text(TARGET.format(n=1000, seconds=0.0))
            at = [t for t in (6, 12, 24) if t <= args.trials]
            curves = {k: [script_run(fast, tmp / f"q{k}-{seed}", trials=args.trials, k=k, seed=seed)["best_so_far"]
                          for seed in range(args.quality_seeds)] for k in (1, 2)}
            out["quality"] = {k: {t: round(sum(c[t - 1] for c in cs) / len(cs), 4) for t in at} for k, cs in curves.items()}
        out["overhead_ms_per_trial"] = {k: round(overhead(k, args.noop_trials, tmp) * 1000, 3) for k in (1, 4)}
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                out["ray"] = "not installed"
            else:
                ray_run = script_run(project, tmp / "ray", trials=args.trials, k=2, executor="ray")
                out["ray"] = ray_run
                out["ray_speedup_search"] = round(runs[0]["search_s"] / ray_run["search_s"], 3)
    out["load_after"] = os.getloadavg()
    print(f"cores: {out['cores']}; load average before {tuple(round(x, 2) for x in out['load_before'])}, "
          f"after {tuple(round(x, 2) for x in out['load_after'])}")
    for r in out["runs"]:
        print(f"K={r['k']} local: wall {r['wall_s']:7.2f} s, {r['trials']}-trial search {r['search_s']:7.2f} s, "
              f"best {r['best']:.6f} after {r['trials']} trials (load {r['load']})")
    print(f"speed-up K=2 vs K=1 (median of {len(pairs)}): {out['speedup_search']:.2f}x on the search trials "
          f"(each: {out['speedup_search_each']}), {out['speedup_wall']:.2f}x on the whole run (baseline included; "
          "target >= 1.8x)")
    print(f"controller overhead per trial (no-op target): K=1 {out['overhead_ms_per_trial'][1]:.2f} ms, "
          f"K=4 {out['overhead_ms_per_trial'][4]:.2f} ms")
    for k, means in out.get("quality", {}).items():
        print(f"K={k}: mean best-so-far over {args.quality_seeds} seeds after " +
              ", ".join(f"{t} trials {v:.4f}" for t, v in means.items()))
    if isinstance(out.get("ray"), dict):
        r = out["ray"]
        print(f"K=2 Ray (local instance): wall {r['wall_s']:.2f} s of which start-up {r['startup_s']:.2f} s, "
              f"search {r['search_s']:.2f} s = {out['ray_speedup_search']:.2f}x vs K=1 local; best {r['best']:.6f}")
    elif "ray" in out:
        print(f"Ray: {out['ray']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
