"""article_opt command line: ``python -m domains.article_opt.cli [GLOBAL OPTIONS] COMMAND [OPTIONS]``.

Global options (providers, models, run directory, seed) go before the command, as in
``python -m domains.article_opt.cli --provider openai once --article article1``. Commands:
``once`` (one revision, a smoke test), ``run`` (all levels), ``resume RUN_DIR``, ``report RUN_DIR``.
Every user mistake is a one-line error, exit status 2, and no run directory left behind.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.errors import UserError
from core.records import Status, TrialRecord
from core.state import DEFAULT_RUNS_ROOT
from domains.article_opt.mechanism_research import LOOP as LEVEL2_LOOP

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Improve an essay against a rubric with a bilevel autoresearch loop.")
console = Console()
err = Console(stderr=True)
_STYLE = {Status.KEEP: "green", Status.DISCARD: "white", Status.CRASH: "red", Status.FAIL: "red",
          Status.TIMEOUT: "red", Status.REJECTED: "yellow"}
_PROVIDERS = "offline | openai | anthropic | deepseek | compat | ollama | openrouter | replay:CASSETTE"


@app.callback()
def main_options(
    ctx: typer.Context,
    provider: str = typer.Option("offline", help=f"Inner pipeline model: {_PROVIDERS}."),
    model: str | None = typer.Option(None, help="Model id (default: the provider's default)."),
    outer_provider: str | None = typer.Option(None, help="Provider for Levels 1.5 and 2 (default: --provider)."),
    outer_model: str | None = typer.Option(None, help="Model for Levels 1.5 and 2."),
    judge_provider: str | None = typer.Option(None, help="Provider of the judge (default: --provider)."),
    judge_model: str | None = typer.Option(None, help="Model of the judge."),
    run_dir: Path | None = typer.Option(None, help=f"Run directory (default: a new folder under {DEFAULT_RUNS_ROOT}/)."),
    seed: int = typer.Option(0, help="Seed of the offline stand-in and of the search."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log diagnostics."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {k: v for k, v in locals().items() if k not in ("ctx", "verbose")}


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except UserError as exc:
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(2) from None


def _settings(ctx: typer.Context, **values: Any) -> tuple[Any, Path | None]:
    from domains.article_opt.session import make_settings

    merged = dict(ctx.obj)
    run_dir = merged.pop("run_dir", None)
    merged.update(values)
    return make_settings(**merged), run_dir


def _line(loop: str, record: TrialRecord) -> None:
    style = _STYLE.get(record.status, "white")
    score = f"{record.score:6.3f}" if record.score is not None else "   -  "
    best = f"{record.best_after:.3f}" if record.best_after is not None else "-"
    if loop == LEVEL2_LOOP:
        what = record.proposal.region if record.proposal else "-"
        verdict = {Status.KEEP: "kept", Status.DISCARD: "reverted"}.get(record.status, record.status.value)
        if record.proposal is not None and record.proposal.origin == "baseline":
            console.print(f"[bold]L2[/bold]  c{record.cycle} parent pipeline: gain/iteration "
                          f"{record.metrics.get('gain', 0):.3f}")
            return
        if record.status not in (Status.KEEP, Status.DISCARD) and "gain" not in record.metrics:
            console.print(f"[bold]L2[/bold]  c{record.cycle} stage [bold]{what}[/bold] [{style}]{verdict}[/{style}] "
                          f"[dim]({record.error[:120]})[/dim]")
            return
        note = f" [dim]({record.error[:90]})[/dim]" if record.error else ""
        console.print(f"[bold]L2[/bold]  c{record.cycle} stage [bold]{what}[/bold] [{style}]{verdict}[/{style}] "
                      f"gain/iteration {record.metrics.get('gain', 0):.3f} vs parent "
                      f"{record.metrics.get('parent_gain', 0):.3f}, called {int(record.metrics.get('stage_calls', 0))}x{note}")
        return
    article = loop.split(".", 1)[-1]
    if record.proposal is not None and record.proposal.origin == "baseline":
        what = "original"
    else:
        plan = (record.proposal.changes.get("plan") if record.proposal else None) or []
        what = ", ".join(f"{e.get('action')}@{e.get('section', '')[:24]}" for e in plan) or "-"
    stage = record.info.get("stage") if record.info else None
    note = f" [red]stage {stage}[/red]" if stage else ""
    note += f" [dim]({record.error[:90]})[/dim]" if record.error and record.status is not Status.KEEP else ""
    console.print(f"[bold]#{record.iteration:>3}[/bold] c{record.cycle} {article:<10} score {score} "
                  f"[{style}]{record.status.value:<8}[/{style}] best {best}  {what[:70]}{note}")


def word_diff(original: str, revised: str) -> list[Text]:
    """Each changed paragraph, with removed words struck through in red and added words in green."""
    a, b = original.splitlines(), revised.splitlines()
    out: list[Text] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        old, new = " ".join(a[i1:i2]).split(), " ".join(b[j1:j2]).split()
        text = Text()
        for wop, w1, w2, v1, v2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if wop in ("delete", "replace"):
                text.append(" ".join(old[w1:w2]) + " ", style="red strike")
            if wop in ("insert", "replace"):
                text.append(" ".join(new[v1:v2]) + " ", style="green")
            if wop == "equal":
                words = old[w1:w2]
                shown = words if len(words) <= 12 else [*words[:5], "…", *words[-5:]]
                text.append(" ".join(shown) + " ", style="dim")
        if text.plain.strip():
            out.append(text)
    return out


def _patch_line(event: dict[str, Any]) -> None:
    if event.get("type") == "outer_patch":
        console.print(f"[bold]L1.5[/bold] after cycle {event['cycle']}: strategy [bold]{event['strategy']}[/bold] → "
                      f"overrides for {', '.join(event['overrides'])}")
    elif event.get("type") == "outer_rejected":
        console.print(f"[bold]L1.5[/bold] after cycle {event['cycle']}: [yellow]patch rejected[/yellow] "
                      f"[dim]({str(event.get('error'))[:100]})[/dim]")


def _dimension_table(summary: dict[str, Any]) -> Table:
    table = Table(title="rubric scores: original → best")
    table.add_column("dimension")
    for name in summary["articles"]:
        table.add_column(name, justify="right")
    dims = next(iter(summary["articles"].values()))["baseline_dims"] if summary["articles"] else {}
    for dim in [*dims, "overall"]:
        row = [dim]
        for a in summary["articles"].values():
            before = a["baseline"] if dim == "overall" else a["baseline_dims"].get(dim)
            after = a["best"] if dim == "overall" else a["best_dims"].get(dim, before)
            row.append("-" if before is None or after is None else f"{before:.2f} → {after:.2f} ({after - before:+.2f})")
        table.add_row(*row, style="bold" if dim == "overall" else None)
    return table


def _print_summary(run_path: Path, summary: dict[str, Any]) -> None:
    from domains.article_opt.report import trace_line

    console.print(_dimension_table(summary))
    for name, a in summary["articles"].items():
        console.print(f"[bold]score trace {name}[/bold] (✓ kept, · discarded, ✗ crashed): baseline {a['baseline']:.2f}"
                      if a["baseline"] is not None else f"[bold]score trace {name}[/bold]")
        for cycle in sorted({t["cycle"] for t in a["trace"]}):
            console.print(f"  cycle {cycle}: {trace_line(a['trace'], cycle)}", markup=False, highlight=False)
    if summary["outer_patches"]:
        table = Table(title="Level 1.5: stage overrides")
        for col in ("after cycle", "strategy", "stages"):
            table.add_column(col)
        for p in summary["outer_patches"]:
            table.add_row(str(p["cycle"]), p["strategy"], ", ".join(p["overrides"]))
        console.print(table)
    if summary["stages"]:
        table = Table(title="Level 2: generated stages (hot-loaded into the running pipeline)")
        for col in ("cycle", "stage", "after", "verdict", "gain/iter", "parent", "calls"):
            table.add_column(col)
        for s in summary["stages"]:
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            table.add_row(str(s["cycle"]), s["name"], str(s["after"]), s["verdict"], fmt(s["gain"]),
                          fmt(s["parent_gain"]), str(s["stage_calls"]))
        console.print(table)
    for name in summary["articles"]:
        best, original = run_path / "best" / f"{name}.md", run_path / "originals" / f"{name}.md"
        if not (best.is_file() and original.is_file()):
            continue
        console.print(f"[bold]best {name}[/bold]: {best}  (changes against the original: "
                      "[red strike]removed[/red strike] [green]added[/green]; unified diff in REPORT.md)")
        changed = word_diff(original.read_text(encoding="utf-8"), best.read_text(encoding="utf-8"))
        for paragraph in changed or [Text("(unchanged)")]:
            console.print(paragraph, soft_wrap=False)
            console.print()
    if summary["note"]:
        console.print(f"[yellow]note:[/yellow] {summary['note']}.")


def _execute(session: Any, *, header: str) -> dict[str, Any]:
    from domains.article_opt.report import write_report

    session.on_record = _line
    session.on_patch = _patch_line
    console.print(f"[bold]{header}[/bold] → {session.rundir.path}")
    ids = session.settings.client_ids()
    console.print("[dim]" + "; ".join(f"{level}: {p}{':' + m if m else ''}" for level, (p, m) in ids.items()) + "[/dim]")
    if any(p == "offline" for p, _ in ids.values()):
        console.print("[dim]offline = a deterministic stand-in (text measurements and rule-based edits), not an LLM[/dim]")
    try:
        summary = session.run()
    except KeyboardInterrupt:
        err.print(f"interrupted; nothing finished is lost. Continue with: python -m domains.article_opt.cli resume "
                  f"{session.rundir.path}")
        session.close()
        raise typer.Exit(130) from None
    except BaseException:
        session.close()
        raise
    session.close()
    _print_summary(session.rundir.path, summary)
    report = write_report(session.rundir)
    if summary.get("stopped"):
        console.print(f"[yellow]stopped: {summary['stopped']}[/yellow] — resume with: "
                      f"python -m domains.article_opt.cli resume {session.rundir.path}")
    console.print(f"run directory: {session.rundir.path}  (journal.jsonl, best/, REPORT.md: {report.name})")
    return summary


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command()
def once(ctx: typer.Context, article: str = typer.Option(..., help="An article name from articles/ or a path to a .md file.")) -> None:
    """One pass of the pipeline on one article (baseline + one revision, judged): a smoke test."""
    from domains.article_opt.session import ArticleSession

    def go() -> None:
        settings, run_dir = _settings(ctx, articles=(article,), levels=("1",), max_inner=1, max_outer=1)
        _execute(ArticleSession.start(settings, run_dir), header="article_opt once")

    _guard(go)


@app.command()
def run(
    ctx: typer.Context,
    articles: list[str] = typer.Option(..., help="Article names or .md paths (repeat, or separate with commas)."),
    extra: list[str] = typer.Argument(None, help="More article names or paths.", show_default=False),
    max_inner: int = typer.Option(5, help="Level-1 iterations per article per outer cycle."),
    max_outer: int = typer.Option(4, help="Outer cycles (Level 2 acts from the second one)."),
    levels: str = typer.Option("1,1.5,2", help="Comma list of levels: 1 (inner), 1.5 (stage overrides), 2 (new stages)."),
    max_cost: float | None = typer.Option(None, help="Stop when LLM spend reaches this many USD."),
    max_calls: int | None = typer.Option(None, help="Stop after this many LLM calls."),
    record_cassette: bool = typer.Option(False, help="Record every LLM call to RUN_DIR/cassette.jsonl."),
) -> None:
    """Levels 1 + 1.5 + 2: revise, rewrite stage instructions, generate and inject new stages."""
    from domains.article_opt.session import ArticleSession, parse_levels

    def go() -> None:
        settings, run_dir = _settings(ctx, articles=tuple(_split(articles) + _split(extra or [])),
                                      levels=parse_levels(levels), max_inner=max_inner, max_outer=max_outer,
                                      max_cost_usd=max_cost, max_calls=max_calls, record_cassette=record_cassette)
        _execute(ArticleSession.start(settings, run_dir), header=f"article_opt run (levels {levels})")

    _guard(go)


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="The run directory to continue.")) -> None:
    """Continue a stopped or killed run from its journal (no iteration lost, none repeated)."""
    from domains.article_opt.session import ArticleSession

    _guard(lambda: _execute(ArticleSession.resume(run_dir), header="article_opt resume"))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="The run directory to summarize.")) -> None:
    """Print the summary of a run (tables, trace, diff) and write RUN_DIR/REPORT.md."""
    from core.state import RunDir
    from domains.article_opt.report import summarize, write_report

    def go() -> None:
        run = RunDir.open(run_dir)
        try:
            summary = summarize(run)
            if not summary["articles"]:
                raise UserError(f"{run_dir} holds no article_opt iterations; pass a folder an article_opt run printed")
            _print_summary(run.path, summary)
            console.print(f"wrote {write_report(run)}")
        finally:
            run.close()

    _guard(go)


def main() -> None:
    """Console script ``bilevel-article``."""
    app()


if __name__ == "__main__":
    main()
