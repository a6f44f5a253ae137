"""What running generated mechanisms in a sandboxed worker costs, against running the same code
in-process (as the loader did before) and against a 2 s trial.

Prints, for one mechanism overriding all five hooks:
* the cost of one hook call (p50 / p95), in-process vs. in the worker;
* the cost of one controller iteration with the mechanism attached (no-op trial), both ways;
* the load latency through every stage (write, policy, worker start in the sandbox, contract, live
  instance), p50 / p95 over several loads.

Run: ``python benchmarks/sandbox_overhead.py [--calls 2000] [--iterations 300] [--loads 10]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.inner_loop import InnerLoopController  # noqa: E402
from core.loader import MechanismLoader  # noqa: E402
from core.mechanism import Mechanism  # noqa: E402
from core.plugins import Evaluator, ExecContext, Executor, Proposer  # noqa: E402
from core.records import EvalInput, Evaluation, ExecutionResult, Proposal, ProposalContext  # noqa: E402
from core.sandbox import namespaces_available  # noqa: E402
from core.state import RunDir  # noqa: E402

SOURCE = '''
from core.mechanism import Mechanism
from core.records import Constraints, FilterVerdict, Guidance


class EveryHook(Mechanism):
    name = "every-hook"

    def __init__(self, **params):
        super().__init__(**params)
        self.seen = []

    def guidance(self, ctx):
        return Guidance(text="explore", constraints=Constraints(avoid_regions=tuple(self.seen[-3:])))

    def propose(self, ctx):
        return None

    def filter(self, proposal, ctx):
        return FilterVerdict.reject("seen") if proposal.region in self.seen[-3:] else None

    def decide(self, record, ctx):
        return None

    def observe(self, record):
        if record.proposal is not None:
            self.seen.append(record.proposal.region)
'''


class Counter(Proposer):
    def propose(self, ctx: ProposalContext) -> Proposal:
        return Proposal(changes={"x": float(ctx.iteration)}, region=f"r{ctx.iteration}")


class Noop(Executor):
    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        return ExecutionResult(status="ok", metrics={"loss": float(proposal.changes.get("x", 0.0))})


class Loss(Evaluator):
    def evaluate(self, inp: EvalInput) -> Evaluation:
        return Evaluation(score=inp.metrics["loss"])


def in_process_instance() -> Mechanism:
    namespace: dict = {}
    exec(compile(SOURCE, "every_hook.py", "exec"), namespace)  # the old in-process path, for comparison
    return namespace["EveryHook"]()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def time_calls(mechanism: Mechanism, calls: int) -> list[float]:
    ctx = ProposalContext(loop="inner", iteration=1, cycle=0)
    proposal = Proposal(changes={"x": 1.0}, region="r1")
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        if i % 2:
            mechanism.filter(proposal, ctx)
        else:
            mechanism.guidance(ctx)
        samples.append(time.perf_counter() - started)
    return samples


def time_iterations(root: Path, mechanism: Mechanism, iterations: int) -> list[float]:
    run = RunDir.create(root, fsync=False)
    loop = InnerLoopController(run=run, proposer=Counter(), executor=Noop(), evaluator=Loss())
    loop.attach(mechanism, name="every-hook", origin="generated")
    loop.ensure_baseline()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        loop.step(0)
        samples.append(time.perf_counter() - started)
    run.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    trial_s = 2.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loader = MechanismLoader(root / "loads")
        load_s = []
        sandbox = {}
        for i in range(args.loads):
            started = time.perf_counter()
            loaded = loader.load(SOURCE + f"\n# variant {i}\n")  # a new file each time: every stage runs
            load_s.append(time.perf_counter() - started)
            sandbox = loaded.sandbox
            loader.unload(loaded)

        local_calls = time_calls(in_process_instance(), args.calls)
        remote = loader.load(SOURCE)
        remote_calls = time_calls(remote.instance, args.calls)
        loader.unload(remote)

        local_iter = time_iterations(root / "local", in_process_instance(), args.iterations)
        remote = loader.load(SOURCE)
        remote_iter = time_iterations(root / "remote", remote.instance, args.iterations)
        loader.unload(remote)

    lp50, lp95 = percentiles(local_calls)
    rp50, rp95 = percentiles(remote_calls)
    li50, li95 = percentiles(local_iter)
    ri50, ri95 = percentiles(remote_iter)
    l50, l95 = percentiles(load_s)
    print(f"namespaces: {'on' if namespaces_available() else 'unavailable'}")
    print("sandbox layers: " + "; ".join(f"{k}: {v}" for k, v in sandbox.items()))
    print(f"{'measure':44s} {'in-process':>12s} {'worker':>12s} {'added':>10s}")
    print(f"{'hook call p50 (ms)':44s} {lp50 * 1e3:12.3f} {rp50 * 1e3:12.3f} {(rp50 - lp50) * 1e3:10.3f}")
    print(f"{'hook call p95 (ms)':44s} {lp95 * 1e3:12.3f} {rp95 * 1e3:12.3f} {(rp95 - lp95) * 1e3:10.3f}")
    print(f"{'iteration, 5 hooks, no-op trial, p50 (ms)':44s} {li50 * 1e3:12.3f} {ri50 * 1e3:12.3f} "
          f"{(ri50 - li50) * 1e3:10.3f}")
    print(f"{'iteration, 5 hooks, no-op trial, p95 (ms)':44s} {li95 * 1e3:12.3f} {ri95 * 1e3:12.3f} "
          f"{(ri95 - li95) * 1e3:10.3f}")
    print(f"load through every stage: p50 {l50:.3f} s, p95 {l95:.3f} s (target < 1.5 s)")
    print(f"added per iteration as a fraction of a {trial_s:g} s trial: {(ri50 - li50) / trial_s:.5%}")
    print(f"load p50 as a fraction of a {trial_s:g} s trial: {l50 / trial_s:.1%}")


if __name__ == "__main__":
    main()
