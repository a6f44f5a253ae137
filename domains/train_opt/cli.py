"""train_opt command line: ``python -m domains.train_opt.cli [GLOBAL OPTIONS] COMMAND [OPTIONS]``.

Global options (provider, models, seed, target, run directory, time budget) go before the command,
as in ``python -m domains.train_opt.cli --provider deepseek bilevel --inner-budget 5 --outer-cycles 2``;
the run-shaping ones are also accepted after it. Every user mistake is a one-line error and exit 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from core.errors import UserError
from core.records import Status, TrialRecord
from core.state import DEFAULT_RUNS_ROOT

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Improve a GPT training script's val_bpb with a bilevel autoresearch loop.")
console = Console()
err = Console(stderr=True)
_STYLE = {Status.KEEP: "green", Status.DISCARD: "white", Status.CRASH: "red", Status.FAIL: "red",
          Status.TIMEOUT: "red", Status.REJECTED: "yellow"}


@app.callback()
def main_options(
    ctx: typer.Context,
    provider: str = typer.Option("offline", help="Researcher: offline | openai | anthropic | deepseek | compat | ollama | openrouter | replay:CASSETTE."),
    model: str | None = typer.Option(None, help="Model id (default: the provider's default)."),
    outer_provider: str | None = typer.Option(None, help="Provider for Levels 1.5 and 2 (default: --provider)."),
    outer_model: str | None = typer.Option(None, help="Model for Levels 1.5 and 2."),
    seed: int = typer.Option(0, help="Seed for the researcher and the search."),
    target_dir: Path | None = typer.Option(None, help="An autoresearch-style clone (train.py + prepare.py); default: the bundled CPU harness."),
    run_dir: Path | None = typer.Option(None, help=f"Run directory (default: a new folder under {DEFAULT_RUNS_ROOT}/)."),
    time_budget: float | None = typer.Option(None, help="Training seconds per trial (bundled harness only)."),
    data: Path | None = typer.Option(None, help="A UTF-8 text file or folder to train on instead of the bundled corpus."),
    threads: int | None = typer.Option(None, help="CPU threads per trial (default: all cores)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log diagnostics."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {k: v for k, v in locals().items() if k not in ("ctx", "verbose")}


def _settings(ctx: typer.Context, **overrides: Any) -> Any:
    from domains.train_opt.session import make_settings

    values = dict(ctx.obj)
    for key, value in overrides.items():
        if value is not None or key not in values:
            values[key] = value
    run_dir = values.pop("run_dir", None)
    for key in ("target_dir", "data"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    return make_settings(**values), run_dir


def _line(record: TrialRecord, best: list[float | None]) -> None:
    if record.status is Status.KEEP and record.score is not None:
        best[0] = record.score if best[0] is None else min(best[0], record.score)
    change = ", ".join(f"{k}={v!r}" for k, v in (record.proposal.changes if record.proposal else {}).items())
    change = change or ("baseline" if record.proposal and record.proposal.origin == "baseline" else "-")
    score = f"{record.score:.6f}" if record.score is not None else "   -    "
    best_s = f"{best[0]:.6f}" if best[0] is not None else "-"
    style = _STYLE.get(record.status, "white")
    mech = f" [dim]hooks: {', '.join(record.hook_calls)}[/dim]" if record.hook_calls else ""
    note = f" [dim]({record.error[:70]})[/dim]" if record.error and record.status is not Status.KEEP else ""
    console.print(f"[bold]#{record.iteration:>3}[/bold] c{record.cycle} {change:<44} val_bpb {score} "
                  f"[{style}]{record.status.value:<8}[/{style}] best {best_s}{mech}{note}", soft_wrap=True)


def _execute(session: Any, *, header: str) -> dict[str, Any]:
    from domains.train_opt.report import write_report

    best: list[float | None] = [session.inner.best_score]
    session.on_record = lambda r: _line(r, best)
    console.print(f"[bold]{header}[/bold] → {session.rundir.path}")
    if "offline" in {session.settings.provider, session.settings.outer_provider or session.settings.provider}:
        console.print("[dim]researcher: offline stand-in (deterministic rules, not an LLM)[/dim]")
    try:
        summary = session.run()
    except KeyboardInterrupt:
        err.print(f"interrupted; nothing finished is lost. Continue with: python -m domains.train_opt.cli resume {session.rundir.path}")
        raise typer.Exit(130) from None
    finally:
        session.close()  # whatever stopped the run (a full disk too), release the run directory's lock
    report = write_report(session.rundir.path)
    _final_table(summary)
    best_file = session.rundir.path / "best_train.py"
    if best_file.exists():
        from domains.train_opt.target import diff

        patch = diff((session.rundir.path / "original_train.py").read_text(), best_file.read_text())
        console.print("[bold]best train.py vs. original[/bold]")
        console.print(patch.rstrip() or "(unchanged)", markup=False, highlight=False)
    if summary.get("stopped"):
        console.print(f"[yellow]stopped: {summary['stopped']}[/yellow] — resume with: "
                      f"python -m domains.train_opt.cli resume {session.rundir.path}")
    console.print(f"report: {report}")
    return summary


def _final_table(summary: dict[str, Any]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.6f}"  # noqa: E731
    c = summary["counts"]
    table = Table(title="train_opt summary")
    for col in ("baseline", "best", "Δ val_bpb", "trials", "keep", "discard", "crash/fail/timeout"):
        table.add_column(col, justify="right")
    table.add_row(fmt(summary["baseline"]), fmt(summary["best"]), fmt(summary["delta"]), str(summary["iterations"]),
                  str(c["keep"]), str(c["discard"]), str(c["crash"] + c["fail"] + c["timeout"]))
    console.print(table)
    if summary["mechanisms"]:
        mech = Table(title="Level 2 mechanisms (each in its own sandboxed worker, attached to the running inner loop)")
        for col in ("cycle", "design", "worker", "verdict", "cycle gain", "parent gain", "hook calls"):
            mech.add_column(col)
        for m in summary["mechanisms"]:
            calls = ", ".join(f"{h} {n}" for h, n in m["hook_calls"].items()) or "0"
            worker = f"pid {m['worker_pid']}" if m.get("worker_pid") else "-"
            mech.add_row(str(m["cycle"]), m["region"], worker, m["verdict"], fmt(m["score"]), fmt(m["parent_score"]),
                         calls)
        console.print(mech)
        layers = next((m["sandbox"] for m in summary["mechanisms"] if m.get("sandbox")), None)
        if layers:
            console.print("sandbox: " + "; ".join(f"{k} {v}" for k, v in layers.items()), markup=False)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


_LEVELS_HELP = "Comma list of levels: 1 (inner), 1.5 (config), 2 (mechanisms)."


@app.command()
def once(ctx: typer.Context) -> None:
    """Run one baseline trial of the target and print its summary."""
    from domains.train_opt.session import TrainSession

    def go() -> None:
        settings, run_dir = _settings(ctx, levels=("1",), inner_budget=0, outer_cycles=1)
        _execute(TrainSession.start(settings, run_dir), header="train_opt once")

    _guard(go)


def _loop_command(ctx: typer.Context, *, levels: str, header: str, **options: Any) -> None:
    from domains.train_opt.session import TrainSession, parse_levels

    def go() -> None:
        settings, run_dir = _settings(ctx, levels=parse_levels(levels), **options)
        _execute(TrainSession.start(settings, run_dir), header=header)

    _guard(go)


@app.command()
def run(
    ctx: typer.Context,
    inner_budget: int = typer.Option(10, help="Level-1 trials (after the baseline)."),
    max_cost: float | None = typer.Option(None, help="Stop when LLM spend reaches this many USD."),
    max_calls: int | None = typer.Option(None, help="Stop after this many LLM calls."),
    noise_floor: float | None = typer.Option(None, help="Keep only gains larger than this (val_bpb)."),
    wall_time: float | None = typer.Option(None, help="Stop after this many seconds."),
    time_budget: float | None = typer.Option(None, help="Training seconds per trial."),
    record_cassette: bool = typer.Option(False, help="Record every LLM call to RUN_DIR/cassette.jsonl."),
) -> None:
    """Level 1 only: propose → train → keep/discard, for --inner-budget trials."""
    _loop_command(ctx, levels="1", header="train_opt run (Level 1)", inner_budget=inner_budget, outer_cycles=1,
                  max_cost_usd=max_cost, max_calls=max_calls, noise_floor=noise_floor, wall_time_s=wall_time,
                  time_budget=time_budget, record_cassette=record_cassette)


@app.command()
def bilevel(
    ctx: typer.Context,
    inner_budget: int = typer.Option(3, help="Level-1 trials per outer cycle."),
    outer_cycles: int = typer.Option(3, help="Outer cycles (Level 2 acts from the second one)."),
    levels: str = typer.Option("1,1.5,2", help=_LEVELS_HELP),
    max_cost: float | None = typer.Option(None, help="Stop when LLM spend reaches this many USD."),
    max_calls: int | None = typer.Option(None, help="Stop after this many LLM calls."),
    noise_floor: float | None = typer.Option(None, help="Keep only gains larger than this (val_bpb)."),
    wall_time: float | None = typer.Option(None, help="Stop after this many seconds."),
    time_budget: float | None = typer.Option(None, help="Training seconds per trial."),
    record_cassette: bool = typer.Option(False, help="Record every LLM call to RUN_DIR/cassette.jsonl."),
) -> None:
    """Levels 1 + 1.5 + 2 (choose with --levels): the inner loop, its config, and new mechanisms."""
    _loop_command(ctx, levels=levels, header=f"train_opt bilevel (levels {levels})", inner_budget=inner_budget,
                  outer_cycles=outer_cycles, max_cost_usd=max_cost, max_calls=max_calls, noise_floor=noise_floor,
                  wall_time_s=wall_time, time_budget=time_budget, record_cassette=record_cassette)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The run directory to continue."),
    max_cost: float | None = typer.Option(None, help="Raise the LLM spend limit (USD, whole run)."),
    max_calls: int | None = typer.Option(None, help="Raise the LLM call limit (whole run)."),
    wall_time: float | None = typer.Option(None, help="Change the wall-time limit (seconds, from this start)."),
) -> None:
    """Continue a stopped or killed run from its journal (no trial lost, none repeated)."""
    from domains.train_opt.session import TrainSession

    overrides = {"max_cost_usd": max_cost, "max_calls": max_calls, "wall_time_s": wall_time}
    _guard(lambda: _execute(TrainSession.resume(run_dir, overrides), header="train_opt resume"))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="The run directory to summarize.")) -> None:
    """Write REPORT.md and val_bpb.png into the run directory."""
    from domains.train_opt.report import write_report

    def go() -> None:
        out = write_report(run_dir)
        console.print(f"wrote {out} and {out.parent / 'val_bpb.png'}")

    _guard(go)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
