"""The paper's ablation as one command, resumable, on one machine or a Ray cluster.

    python -m experiments.ablation run --groups A,B,C,D,RANDOM,TPE --repeats 5 --iterations 9 --cycles 3 \\
        --time-budget 6 --threads 1 --workers 2 --trial-timeout 45 --out experiments/results/cpu_offline
    python -m experiments.ablation report experiments/results/cpu_offline

``--iterations`` is the total Level-1 trial budget of a repeat after its baseline, spent as ``--cycles``
outer cycles of ``iterations // cycles`` trials in every group (see :mod:`experiments.groups`).
``OUT/ablation.json`` holds the arguments; ``OUT/results.jsonl`` gets one row per finished repeat
(appended by this process only, with ``fsync``); ``OUT/runs/<group>-r<repeat>/`` keeps each repeat's
full run directory.

Resuming: re-running the same command — or just ``run --out OUT``, since an option not given takes
its value from ``ablation.json`` — skips the repeats that have a row and resumes a half-done one from
its journal. Options that change what a row means (budget, cycles, time budget, researcher, target and
its ``train.py`` digest, seed, threads, trial timeout and memory cap) must match the stored ones, or
the run is refused; ``--groups`` and ``--repeats`` may grow, which adds repeats of the same ablation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console

from core.errors import UserError
from core.state import atomic_write_json
from experiments.groups import GROUPS, Plan, RepeatSpec, parse_groups, run_name

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Run the bilevel ablation (groups A/B/C/D vs. reference searches) and report it.")
console = Console()
err = Console(stderr=True)
RESULTS = "results.jsonl"
ARGS = "ablation.json"
HARNESS = Path(__file__).resolve().parents[1] / "domains" / "train_opt" / "harness"
# Identity of an ablation: a row is comparable to another only if all of these are equal.
IDENTITY = ("iterations", "cycles", "time_budget", "flop_budget", "endpoint_seeds", "parallel", "provider", "model", "target_dir", "target_sha256", "seed",
            "threads", "trial_timeout_s", "trial_memory_gb")


# -- the results file -------------------------------------------------------------------------------
def read_rows(out: Path) -> list[dict[str, Any]]:
    """Rows of ``OUT/results.jsonl``; a torn last line (a writer killed mid-line) is trimmed."""
    path = out / RESULTS
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows, good = [], 0
    lines = raw.split(b"\n")
    for index, line in enumerate(lines):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                if any(rest.strip() for rest in lines[index + 1:]):
                    raise UserError(f"{path} line {index + 1} is damaged; fix or remove that line, then rerun") from None
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                break
        good += len(line) + 1
    else:
        if raw and not raw.endswith(b"\n"):
            with open(path, "ab") as fh:
                fh.write(b"\n")
    return rows


def append_row(out: Path, row: dict[str, Any]) -> None:
    line = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
    with open(out / RESULTS, "ab") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- arguments --------------------------------------------------------------------------------------
def _target_sha(target_dir: str | None) -> str:
    path = (Path(target_dir) if target_dir else HARNESS) / "train.py"
    if not path.is_file():
        raise UserError(f"{path.parent} has no train.py; --target-dir must point at an autoresearch-style clone")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _default_memory_gb(target_dir: str | None, concurrent: int, executor: str) -> float | None:
    """Cap each trial's memory on a CPU-only box running the bundled harness (see groups._CAPPED)."""
    if target_dir is not None or executor != "local":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return round(max(2.0, 0.8 * total / max(concurrent, 1)), 1)


def resolve_arguments(out: Path, given: dict[str, Any], *, workers: int, executor: str) -> dict[str, Any]:
    """Merge the given options with ``OUT/ablation.json``: an option not given takes the stored value
    (so ``run --out OUT`` resumes), a given one must equal it; groups and repeats may only grow."""
    stored: dict[str, Any] = {}
    if (out / ARGS).exists():
        try:
            stored = json.loads((out / ARGS).read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{out / ARGS} is damaged; use a new --out") from None
    defaults = {"groups": "A,B,C,D", "repeats": 3, "iterations": 9, "cycles": 3, "time_budget": None,
                "flop_budget": None, "endpoint_seeds": 2, "parallel": 1, "provider": "offline", "model": None, "target_dir": None, "seed": 0, "threads": None,
                "trial_timeout_s": None, "trial_memory_gb": None}
    args: dict[str, Any] = {}
    for key, default in defaults.items():
        value = given.get(key)
        args[key] = value if value is not None else stored.get(key, default)
    groups = parse_groups(args["groups"]) if isinstance(args["groups"], str) else tuple(args["groups"])
    if stored:
        groups = tuple(dict.fromkeys([*stored.get("groups", ()), *groups]))
        args["repeats"] = max(int(args["repeats"]), int(stored.get("repeats", 0)))
    args["groups"] = list(groups)
    if args["target_dir"] is not None:
        args["target_dir"] = str(Path(args["target_dir"]).expanduser().resolve())
    args["target_sha256"] = _target_sha(args["target_dir"])
    if args["threads"] is None:
        args["threads"] = max(1, (os.cpu_count() or 1) // workers) if executor == "local" else 1
    if args["trial_memory_gb"] is None and not stored:
        args["trial_memory_gb"] = _default_memory_gb(args["target_dir"], workers, executor)
    elif args["trial_memory_gb"] == 0:
        args["trial_memory_gb"] = None
    _validate(args)
    if stored:
        changed = [k for k in IDENTITY if stored.get(k, defaults.get(k)) != args[k]]
        if changed:
            diffs = ", ".join(f"{k} {stored.get(k)!r} → {args[k]!r}" for k in changed)
            raise UserError(f"{out} holds an ablation with other settings ({diffs}); use a new --out")
    args["id"] = stored.get("id") or secrets.token_hex(8)
    args["created_at"] = stored.get("created_at") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return args


def _validate(args: dict[str, Any]) -> None:
    if args["repeats"] < 1:
        raise UserError("--repeats must be at least 1")
    if args["cycles"] < 1 or args["iterations"] < 1:
        raise UserError("--iterations and --cycles must be at least 1")
    if args["iterations"] % args["cycles"]:
        raise UserError(f"--iterations {args['iterations']} is not divisible by --cycles {args['cycles']}: it is the "
                        f"total Level-1 budget, spent as {args['cycles']} equal cycles")
    if args["time_budget"] is not None and args["time_budget"] <= 0:
        raise UserError("--time-budget must be positive")
    if args["flop_budget"] is not None and args["flop_budget"] <= 0:
        raise UserError("--flop-budget must be positive")
    if args["flop_budget"] is not None and args["time_budget"] is not None:
        raise UserError("--time-budget and --flop-budget both set; give one (fixed compute: --flop-budget)")
    if args["parallel"] < 1:
        raise UserError("--parallel must be at least 1")
    if args["endpoint_seeds"] < 0:
        raise UserError("--endpoint-seeds must be 0 or more")
    if args["threads"] < 1:
        raise UserError("--threads must be at least 1")


def plan_of(args: dict[str, Any]) -> Plan:
    return Plan(**{k: args[k] for k in Plan.model_fields})


# -- running ----------------------------------------------------------------------------------------
def pending_specs(out: Path, args: dict[str, Any], done: set[tuple[str, int]],
                  only: tuple[str, ...] | None = None) -> list[RepeatSpec]:
    """Repeats without a row, repeat-major (r0 of every group first) so a partial ablation stays balanced.
    ``only``: run just these groups (``--groups`` on an existing ablation: the others keep their rows)."""
    plan = plan_of(args).model_dump(mode="json")
    return [RepeatSpec(out=str(out.resolve()), group=g, repeat=r, plan=plan)
            for r in range(args["repeats"]) for g in args["groups"]
            if (g, r) not in done and (only is None or g in only)]


def _fmt(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def _progress(row: dict[str, Any], index: int, total: int) -> None:
    style = "green" if (row["delta"] or 0) < 0 else "white"
    console.print(f"[bold]{row['group']:<6}[/bold] r{row['repeat']:<3} baseline {_fmt(row['baseline'])} → best "
                  f"{_fmt(row['best'])}  [{style}]Δ {_fmt(row['delta'], True)}[/{style}]  {row['wall_s']:.0f}s  "
                  f"[dim]({index}/{total})[/dim]")


def execute(out: Path, args: dict[str, Any], *, workers: int, executor: Literal["local", "ray"],
            ray_address: str | None, gpus_per_repeat: float | None, only: tuple[str, ...] | None = None) -> int:
    from experiments import distributed

    done = {(str(r["group"]), int(r["repeat"])) for r in read_rows(out)}
    specs = pending_specs(out, args, done, only)
    total = len(only or args["groups"]) * args["repeats"]
    if done:
        console.print(f"[dim]{len(done)} repeat(s) already in {out / RESULTS}; skipping them[/dim]")
    if specs and "offline" in args["provider"] and any(GROUPS[s.group].uses_llm for s in specs):
        console.print("[dim]researcher: offline stand-in (deterministic rules, not an LLM)[/dim]")
    if executor == "ray":
        outcomes = distributed.run_ray(specs, address=ray_address, ablation_id=args["id"], threads=args["threads"],
                                       gpus_per_repeat=gpus_per_repeat, provider=args["provider"])
    else:
        outcomes = distributed.run_local(specs, workers=workers)
    failed = 0
    finished = sum(1 for g, _ in done if only is None or g in only)
    try:
        for spec, row, error in outcomes:
            if row is None:
                failed += 1
                err.print(f"error: {run_name(spec.group, spec.repeat)}: {error}", markup=False, highlight=False,
                          soft_wrap=True)
                continue
            append_row(out, row)
            finished += 1
            _progress(row, finished, total)
    finally:
        outcomes.close()  # stops running workers when interrupted
    console.print(f"results: {out / RESULTS} ({finished}/{total} repeats); "
                  f"report: python -m experiments.ablation report {out}", soft_wrap=True)
    return 1 if failed else 0


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the ablation like Ctrl-C does: running repeats are stopped and journaled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One runner per ablation directory: a second one would run the same repeats twice."""
    with open(out / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{out} is in use by another ablation run; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_parallelism(workers: int, threads: int, executor: str, allow_oversubscribe: bool) -> None:
    cores = os.cpu_count() or 1
    if executor == "local" and workers * threads > cores and not allow_oversubscribe:
        raise UserError(f"--workers {workers} × --threads {threads} = {workers * threads} exceeds the {cores} CPU "
                        "cores; lower one of them (or pass --allow-oversubscribe)")


@app.command()
def run(
    out: Path = typer.Option(..., help="Ablation directory (results.jsonl, ablation.json, runs/)."),
    groups: str | None = typer.Option(None, help=f"Comma list of {', '.join(GROUPS)} to run (default: A,B,C,D; on an "
                                      "existing ablation: its groups; given, only these run and the others keep their rows)."),
    repeats: int | None = typer.Option(None, help="Repeats per group (seed = --seed + repeat) (default: 3)."),
    iterations: int | None = typer.Option(None, help="Total Level-1 trials per repeat after the baseline (default: 9)."),
    cycles: int | None = typer.Option(None, help="Outer cycles; must divide --iterations (default: 3)."),
    time_budget: float | None = typer.Option(None, help="Training seconds per trial (bundled harness)."),
    flop_budget: float | None = typer.Option(None, help="Training FLOPs per trial (bundled harness; fixed compute: "
                                             "repeatable trials). Default on a CPU: the harness's own."),
    parallel: int | None = typer.Option(None, help="Trials each repeat runs at a time (default: 1), each with --threads "
                                        "threads: mind workers x parallel x threads against your cores."),
    endpoint_seeds: int | None = typer.Option(None, help="Held-out training seeds on which the baseline and each "
                                              "repeat's best configuration are re-measured (default: 2)."),
    provider: str | None = typer.Option(None, help="Researcher for every level of A-D (default: offline)."),
    model: str | None = typer.Option(None, help="Model id (default: the provider's default)."),
    target_dir: Path | None = typer.Option(None, help="An autoresearch-style clone (default: the bundled CPU harness)."),
    seed: int | None = typer.Option(None, help="Base seed (default: 0)."),
    threads: int | None = typer.Option(None, help="CPU threads per trial (default: cores // workers; 1 on Ray)."),
    trial_timeout: float | None = typer.Option(None, help="Hard limit per trial in seconds (default: the session's)."),
    trial_memory_gb: float | None = typer.Option(None, help="Address-space cap per trial, 0 = none (default: 80% of "
                                                    "RAM / workers for the bundled harness on CPU, else none)."),
    workers: int = typer.Option(1, min=1, help="Repeats run concurrently (local executor)."),
    executor: str = typer.Option("local", help="local | ray"),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: a running or new local instance)."),
    gpus_per_repeat: float | None = typer.Option(None, help="GPUs a Ray task asks for (default: 1 if the driver sees CUDA)."),
    allow_oversubscribe: bool = typer.Option(False, "--allow-oversubscribe", help="Allow workers × threads > cores."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log diagnostics."),
) -> None:
    """Run (or resume) the ablation: one results row per finished repeat."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if executor not in ("local", "ray"):
        _fail(f"--executor {executor!r} is invalid; use local or ray")
    given = {"groups": groups, "repeats": repeats, "iterations": iterations, "cycles": cycles,
             "time_budget": time_budget, "flop_budget": flop_budget, "endpoint_seeds": endpoint_seeds,
             "parallel": parallel,
             "provider": provider, "model": model,
             "target_dir": str(target_dir) if target_dir else None, "seed": seed, "threads": threads,
             "trial_timeout_s": trial_timeout, "trial_memory_gb": trial_memory_gb}
    try:
        if groups is not None:
            parse_groups(groups)
        if executor == "ray":
            from experiments.distributed import _import_ray

            _import_ray()
        args = resolve_arguments(out, given, workers=workers, executor=executor)
        _check_parallelism(workers, args["threads"], executor, allow_oversubscribe)
        out.mkdir(parents=True, exist_ok=True)
        with _exclusive(out), _sigterm_interrupts():
            atomic_write_json(out / ARGS, {**args, "argv": sys.argv[1:]})
            code = execute(out, args, workers=workers, executor=executor,  # type: ignore[arg-type]
                           ray_address=ray_address, gpus_per_repeat=gpus_per_repeat,
                           only=parse_groups(groups) if groups is not None else None)
    except UserError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print(f"interrupted; finished repeats are saved. Resume with: python -m experiments.ablation run --out {out}",
                  soft_wrap=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def report(directory: Path = typer.Argument(..., help="The ablation directory (holding results.jsonl).")) -> None:
    """Write REPORT.md and figures for an ablation directory."""
    try:
        from experiments.report import write_report
    except ImportError:
        _fail("the report module (experiments/report.py) is not available in this checkout")
    try:
        path = write_report(directory)
    except (UserError, OSError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"wrote {path}")


def _fail(message: str) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
