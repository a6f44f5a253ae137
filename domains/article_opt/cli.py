"""article_opt command line: ``python -m domains.article_opt.cli [GLOBAL OPTIONS] COMMAND [OPTIONS]``.

The commands, flags and exit statuses are core's (:mod:`core.cli`), as in
``python -m domains.article_opt.cli --provider openai once --article article1`` and
``python -m domains.article_opt.cli run --articles article1 --max-inner 5 --max-outer 4``; this module
adds the article options (``--articles``, the judge) and the report pieces: a line per iteration,
the rubric table, the score trace, the Level-1.5 and Level-2 tables and a word diff of each best article.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from core.cli import DomainCli, Opt, console, make_app
from core.errors import UserError
from core.records import Status, TrialRecord
from core.state import RunDir
from domains.article_opt.mechanism_research import LOOP as LEVEL2_LOOP

_STYLE = {Status.KEEP: "green", Status.DISCARD: "white", Status.CRASH: "red", Status.FAIL: "red",
          Status.TIMEOUT: "red", Status.REJECTED: "yellow"}


def record_line(loop: str, record: TrialRecord) -> str:
    style = _STYLE.get(record.status, "white")
    score = f"{record.score:6.3f}" if record.score is not None else "   -  "
    best = f"{record.best_after:.3f}" if record.best_after is not None else "-"
    if loop == LEVEL2_LOOP:
        what = escape(record.proposal.region if record.proposal else "-")
        verdict = {Status.KEEP: "kept", Status.DISCARD: "reverted"}.get(record.status, record.status.value)
        if record.proposal is not None and record.proposal.is_baseline:
            return f"[bold]L2[/bold]  c{record.cycle} parent pipeline: gain/iteration {record.metrics.get('gain', 0):.3f}"
        if record.status not in (Status.KEEP, Status.DISCARD) and "gain" not in record.metrics:
            return (f"[bold]L2[/bold]  c{record.cycle} stage [bold]{what}[/bold] [{style}]{verdict}[/{style}] "
                    f"[dim]({escape(record.error[:120])})[/dim]")
        note = f" [dim]({escape(record.error[:90])})[/dim]" if record.error else ""
        return (f"[bold]L2[/bold]  c{record.cycle} stage [bold]{what}[/bold] [{style}]{verdict}[/{style}] "
                f"gain/iteration {record.metrics.get('gain', 0):.3f} vs parent "
                f"{record.metrics.get('parent_gain', 0):.3f}, called {int(record.metrics.get('stage_calls', 0))}x{note}")
    article = escape(loop.split(".", 1)[-1])
    if record.proposal is not None and record.proposal.is_baseline:
        what = "original"
    else:
        plan = (record.proposal.changes.get("plan") if record.proposal else None) or []
        what = ", ".join(f"{e.get('action')}@{e.get('section', '')[:24]}" for e in plan) or "-"
    stage = record.info.get("stage") if record.info else None
    note = f" [red]stage {escape(str(stage))}[/red]" if stage else ""
    note += f" [dim]({escape(record.error[:90])})[/dim]" if record.error and record.status is not Status.KEEP else ""
    return (f"[bold]#{record.iteration:>3}[/bold] c{record.cycle} {article:<10} score {score} "
            f"[{style}]{record.status.value:<8}[/{style}] best {best}  {escape(what[:70])}{note}")


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


def event_line(event: dict[str, Any]) -> str | None:
    if event.get("type") == "outer_patch":
        return (f"[bold]L1.5[/bold] after cycle {event['cycle']}: strategy [bold]{escape(event['strategy'])}[/bold] → "
                f"overrides for {escape(', '.join(event['overrides']))}")
    if event.get("type") == "outer_rejected":
        return (f"[bold]L1.5[/bold] after cycle {event['cycle']}: [yellow]patch rejected[/yellow] "
                f"[dim]({escape(str(event.get('error'))[:100])})[/dim]")
    if event.get("type") == "level15_verdict":
        verdict = "[green]kept[/green]" if event["kept"] else "[yellow]reverted[/yellow]"
        return (f"[bold]L1.5[/bold] overrides of cycle {event['cycle']} {verdict}: cycle {event['governed']} "
                f"gain/iteration {event['gain']:.3f} vs {event['parent_gain']:.3f}")
    return None


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


def _session() -> Any:
    from domains.article_opt.session import ArticleSession

    return ArticleSession


def _make_settings() -> Any:
    from domains.article_opt.session import make_settings

    return make_settings


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _to_settings(values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    if "article" in values:  # once
        values["articles"] = (values.pop("article"),)
    elif "articles" in values:
        values["articles"] = tuple(_split(values["articles"]) + _split(values.pop("extra", None)))
    return values


def _write_report(run_path: Path) -> Path:
    from domains.article_opt.report import write_report

    with RunDir.open(run_path, expect=("settings.json",)) as run:
        return write_report(run)


def _show_report(run_dir: Path) -> None:
    from domains.article_opt.report import summarize, write_report

    with RunDir.open(run_dir, expect=("settings.json",)) as run:
        summary = summarize(run)
        if not summary["articles"]:
            raise UserError(f"{run_dir} holds no article_opt iterations; pass a folder an article_opt run printed")
        _print_summary(run.path, summary)
        console.print(f"wrote {write_report(run)}", markup=False)


SPEC = DomainCli(
    name="article_opt",
    help="Improve an essay against a rubric with a bilevel autoresearch loop.",
    session=_session, make_settings=_make_settings, inner_budget=5, outer_cycles=4,
    write_report=_write_report, show_summary=_print_summary, record_line=record_line, event_line=event_line,
    show_report=_show_report, to_settings=_to_settings,
    global_options=[
        Opt("judge_provider", str | None, None, "Provider of the judge (default: --provider)."),
        Opt("judge_model", str | None, None, "Model of the judge."),
    ],
    run_options=[
        Opt("articles", list[str], ..., "Article names or .md paths (repeat, or separate with commas)."),
        Opt("extra", list[str] | None, None, "More article names or paths.", argument=True),
    ],
    once_options=[Opt("article", str, ..., "An article name from articles/ or a path to a .md file.")],
    once_settings={"inner_budget": 1},
)
app = make_app(SPEC)


def main() -> None:
    """Console script ``bilevel-article``."""
    app()


if __name__ == "__main__":
    main()
