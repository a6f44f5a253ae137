"""How much the core machinery costs, next to the budgets it must stay within.

    python benchmarks/core_overhead.py [--iterations 2000] [--records 10000] [--loads 3] [--dir PATH]

1. Controller overhead per iteration: a toy proposer and a no-op executor, so every millisecond is the
   controller's own (context building, journal append, trial folder, records). Measured with the
   journal's fsync on and off, and with one mechanism overriding every hook (each hook call runs
   under a deadline timer).
2. Replay: constructing an ``InnerLoopController`` on a journal of N finished trials (what ``resume``
   does before anything else).
3. Hot-load: one generated mechanism through every stage of ``core.loader.MechanismLoader`` (write,
   parse, policy, contract check in a child process, import, instantiate) plus ``attach`` with replay.

Offline and deterministic; nothing here calls a model or the network. Figures depend on the disk
(fsync) and CPU, so the run directory is printed with them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import core  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from core.inner_loop import InnerLoopController
from core.mechanism import Mechanism
from core.plugins import ExecContext, Executor, MetricEvaluator, Proposer
from core.records import ExecutionResult, FilterVerdict, Guidance, Proposal, ProposalContext, Status
from core.state import JOURNAL_NAME, RunDir

TARGET_OVERHEAD_MS = 5.0
TARGET_REPLAY_S = 1.0
TARGET_HOTLOAD_S = 1.5

MECHANISM_SOURCE = '''"""Benchmark mechanism {n}: a tabu list over proposal regions."""
from core.mechanism import Mechanism
from core.records import FilterVerdict, Guidance


class BenchTabu(Mechanism):
    name = "bench_tabu_{n}"

    def __init__(self, **params):
        super().__init__(**params)
        self.seen = set()

    def guidance(self, ctx):
        return Guidance(text="avoid " + ", ".join(sorted(self.seen)[:5])) if self.seen else None

    def filter(self, proposal, ctx):
        if proposal.key() in self.seen and len(ctx.feedback) < 2:
            return FilterVerdict.reject("region already tried")
        return None

    def observe(self, record):
        if record.proposal is not None:
            self.seen.add(record.proposal.key())
'''


class ToyProposer(Proposer):
    """A random step on a 1-D quadratic; cheap and deterministic per iteration."""

    def propose(self, ctx: ProposalContext) -> Proposal:
        rng = random.Random(ctx.seed)
        x = round(rng.uniform(-3, 3), 4)
        return Proposal(changes={"x": x}, hypothesis="random step", region=f"x:{int(x)}")


class NoopExecutor(Executor):
    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        return ExecutionResult(status="ok", metrics={"loss": float(proposal.changes.get("x", 3.0)) ** 2})


class EveryHook(Mechanism):
    """Overrides every hook with a trivial answer: the cost of the hook machinery itself."""

    name = "every_hook"

    def guidance(self, ctx: ProposalContext) -> Guidance | None:
        return None

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        return None

    def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
        return None

    def decide(self, record, ctx):  # noqa: ANN001 - mirrors the protocol
        return None

    def observe(self, record) -> None:  # noqa: ANN001
        return None


def controller(run: RunDir) -> InnerLoopController:
    return InnerLoopController(run=run, proposer=ToyProposer(), executor=NoopExecutor(),
                               evaluator=MetricEvaluator(metric="loss"))


def bench_overhead(root: Path, iterations: int, *, fsync: bool, with_mechanism: bool = False,
                   chunk: int = 200) -> tuple[float, float, float]:
    """Milliseconds per iteration of run_cycle: over the whole run, over its first ``chunk``
    iterations and over its last ``chunk`` (the difference shows cost that grows with the history)."""
    with RunDir.create(root / f"overhead-fsync{int(fsync)}-mech{int(with_mechanism)}", fsync=fsync) as run:
        ctl = controller(run)
        if with_mechanism:
            ctl.attach(EveryHook())
        ctl.ensure_baseline()
        chunks = []
        done = 0
        while done < iterations:
            size = min(chunk, iterations - done)
            started = time.perf_counter()
            ctl.run_cycle(0, done + size)
            chunks.append((time.perf_counter() - started) / size * 1000)
            done += size
    total = sum(chunks[:-1]) * chunk + chunks[-1] * (iterations - chunk * (len(chunks) - 1))
    return total / iterations, chunks[0], chunks[-1]


def write_journal(path: Path, records: int) -> None:
    """A journal of ``records`` finished trials (a proposal and a trial event each), as a run writes it."""
    with RunDir.create(path, fsync=False) as run:
        ctl = controller(run)
        ctl.ensure_baseline()
        ctl.run_cycle(0, 1)
        proposal_event, trial_event = list(run.journal.events())[-2:]
    lines = []
    for i in range(records):
        proposal = {**proposal_event, "seq": 2 * i, "iteration": i}
        record = dict(trial_event["record"], iteration=i, score=float(i % 97),
                      status=Status.KEEP.value if i == 0 else Status.DISCARD.value)
        lines.append(json.dumps(proposal, separators=(",", ":")))
        lines.append(json.dumps({**trial_event, "seq": 2 * i + 1, "record": record}, separators=(",", ":")))
    (path / JOURNAL_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


def bench_replay(root: Path, records: int) -> tuple[float, float]:
    """Seconds to open the run directory (journal parse) and to construct the controller on it."""
    path = root / "replay"
    write_journal(path, records)
    started = time.perf_counter()
    run = RunDir.open(path, fsync=False)
    opened = time.perf_counter()
    ctl = controller(run)
    built = time.perf_counter()
    assert len(ctl.history) == records, (len(ctl.history), records)
    run.close()
    return opened - started, built - started


def bench_hotload(root: Path, loads: int) -> list[float] | str:
    """Seconds per hot-load (all loader stages + attach with replay), or why it could not run."""
    try:
        from core.loader import MechanismLoader
    except ImportError as exc:
        return f"loader not available ({exc})"
    timings = []
    with RunDir.create(root / "hotload", fsync=False) as run:
        ctl = controller(run)
        ctl.ensure_baseline()
        ctl.run_cycle(0, 20)
        loader = MechanismLoader(run.path)
        for n in range(loads):
            started = time.perf_counter()
            loaded = loader.load(MECHANISM_SOURCE.format(n=n), context=ctl.context(len(ctl.history), 0))
            ctl.attach(loaded.instance, name=loaded.name, origin="generated", digest=loaded.digest)
            timings.append(time.perf_counter() - started)
            record = ctl.step()
            if loaded.name not in record.hook_calls:
                raise RuntimeError(f"hot-loaded {loaded.name} was not called: {record.hook_calls}")
            ctl.detach(loaded.name, reason="benchmark done")
            loader.unload(loaded)
    return timings


def verdict(value: float, target: float) -> str:
    return "[green]ok[/]" if value < target else "[red]over[/]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the run directories (default: a temp dir)")
    args = parser.parse_args(argv)

    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory(prefix="bilevel-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        console.print(f"run directories under {root}")
        table = Table(title="core overhead")
        for column in ("measure", "figure", "target", ""):
            table.add_column(column)

        rows = [(f"fsync {'on' if fsync else 'off'}", fsync, False) for fsync in (True, False)]
        rows.append(("fsync off, 1 mechanism (all 5 hooks)", False, True))
        for label, fsync, mech in rows:
            ms, first, last = bench_overhead(root, args.iterations, fsync=fsync, with_mechanism=mech)
            table.add_row(f"controller, {label}, {args.iterations} iters",
                          f"{ms:.2f} ms/iter (first 200: {first:.2f}, last 200: {last:.2f})",
                          f"< {TARGET_OVERHEAD_MS:g} ms", verdict(ms, TARGET_OVERHEAD_MS))

        opened_s, built_s = bench_replay(root, args.records)
        table.add_row(f"replay {args.records} records: RunDir.open", f"{opened_s:.3f} s", "", "")
        table.add_row(f"replay {args.records} records: open + InnerLoopController", f"{built_s:.3f} s",
                      f"< {TARGET_REPLAY_S:g} s", verdict(built_s, TARGET_REPLAY_S))

        loads = bench_hotload(root, args.loads)
        if isinstance(loads, str):
            table.add_row("hot-load one mechanism", loads, f"< {TARGET_HOTLOAD_S:g} s", "")
        else:
            worst = max(loads)
            table.add_row(f"hot-load one mechanism, all stages + attach (median of {len(loads)})",
                          f"{statistics.median(loads):.3f} s (max {worst:.3f})", f"< {TARGET_HOTLOAD_S:g} s",
                          verdict(worst, TARGET_HOTLOAD_S))
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
