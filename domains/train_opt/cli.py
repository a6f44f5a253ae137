"""train_opt command line: ``python -m domains.train_opt.cli [GLOBAL OPTIONS] COMMAND [OPTIONS]``.

The commands, flags, exit statuses and the rule that global options may come before or after the
command are core's (:mod:`core.cli`); this module adds the target options and the report pieces:
a line per trial, the summary table, the Level-2 table and the diff of the best ``train.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from core.cli import DECISION_OPTIONS, DomainCli, Opt, console, make_app
from core.level2 import design_line_verdict
from core.plugins import outcome
from core.records import Status, TrialRecord

_STYLE = {Status.KEEP: "green", Status.DISCARD: "white", Status.CRASH: "red", Status.FAIL: "red",
          Status.TIMEOUT: "red", Status.REJECTED: "yellow"}


def _session() -> Any:
    from domains.train_opt.session import TrainSession

    return TrainSession


def _make_settings() -> Any:
    from domains.train_opt.session import make_settings

    return make_settings


def _to_settings(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if k in ("target_dir", "data") and v is not None else v for k, v in values.items()}


def record_line(loop: str, record: TrialRecord) -> str:
    style = _STYLE.get(record.status, "white")
    if loop == "mechanism":
        baseline = record.proposal is None or record.proposal.is_baseline
        what = "parent mechanism set" if baseline else record.proposal.region
        verdict = design_line_verdict(record)
        gain, parent = record.metrics.get("gain"), record.metrics.get("parent_gain")
        shown = "-" if gain is None else f"{gain:.6f}"
        if not baseline and parent is not None:  # the two numbers the verdict compared
            shown += f" vs its parent's {parent:.6f}"
        note = f" [dim]({escape(record.error[:90])})[/dim]" if record.error else ""
        return (f"[bold]L2[/bold]  c{record.cycle} {escape(what):<30} [{style}]{verdict}[/{style}] "
                f"gain/iteration {shown}{note}")
    change = ", ".join(f"{k}={v!r}" for k, v in (record.proposal.changes if record.proposal else {}).items())
    change = change or ("baseline" if record.proposal and record.proposal.is_baseline else "-")
    score = f"{record.score:.6f}" if record.score is not None else "   -    "
    best = f"{record.best_after:.6f}" if record.best_after is not None else "-"
    mech = f" [dim]hooks: {escape(', '.join(record.hook_calls))}[/dim]" if record.hook_calls else ""
    note = f" [dim]({escape(record.error[:70])})[/dim]" if record.error and record.status is not Status.KEEP else ""
    return (f"[bold]#{record.iteration:>3}[/bold] c{record.cycle} {escape(change):<44} val_bpb {score} "
            f"[{style}]{outcome(record):<8}[/{style}] best {best}{mech}{note}")


def event_line(event: dict[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "config":
        patch = event["patch"]
        parts = [f"freeze {', '.join(patch['freeze'])}" if patch["freeze"] else "",
                 f"unfreeze {', '.join(patch['unfreeze'])}" if patch["unfreeze"] else "",
                 f"strategy {patch['strategy']}" if patch.get("strategy") else ""]
        return (f"[bold]L1.5[/bold] after cycle {event['cycle']}: "
                f"{escape('; '.join(p for p in parts if p) or 'guidance only')}")
    if kind == "config_rejected":
        return f"[bold]L1.5[/bold] after cycle {event['cycle']}: [yellow]patch rejected[/yellow] [dim]({escape(str(event['error'])[:100])})[/dim]"
    if kind == "level15_verdict":
        verdict = "[green]kept[/green]" if event["kept"] else "[yellow]reverted[/yellow]"
        return (f"[bold]L1.5[/bold] patch of cycle {event['cycle']} {verdict}: cycle {event['governed']} gain/iteration "
                f"{event['gain']:.6f} vs {event['parent_gain']:.6f}")
    return None


def show_summary(run_path: Path, summary: dict[str, Any]) -> None:
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
        for col in ("cycle", "design", "worker", "verdict", "its gain", "parent's gain", "hook calls (effects)"):
            mech.add_column(col)
        for m in summary["mechanisms"]:
            effects = m.get("hook_effects", {})
            calls = ", ".join(f"{h} {n} ({effects.get(h, 0)})" for h, n in m["hook_calls"].items()) or "0"
            worker = f"pid {m['worker_pid']}" if m.get("worker_pid") else "-"
            mech.add_row(str(m["cycle"]), escape(m["region"]), worker, m["verdict"], fmt(m["score"]),
                         fmt(m["parent_score"]), escape(calls))
        console.print(mech)
        layers = next((m["sandbox"] for m in summary["mechanisms"] if m.get("sandbox")), None)
        if layers:
            console.print("sandbox: " + "; ".join(f"{k} {v}" for k, v in layers.items()), markup=False)
    best_file = run_path / "best_train.py"
    if best_file.exists():
        from domains.train_opt.target import diff

        patch = diff((run_path / "original_train.py").read_text(), best_file.read_text())
        console.print("[bold]best train.py vs. original[/bold]")
        console.print(patch.rstrip() or "(unchanged)", markup=False, highlight=False)


def _write_report(run_path: Path) -> Path:
    from domains.train_opt.report import write_report

    return write_report(run_path)


def _show_report(run_dir: Path) -> None:
    out = _write_report(run_dir)
    console.print(f"wrote {out} and {out.parent / 'val_bpb.png'}", markup=False)


MECHANISM_OPTIONS = [
    Opt("memory", bool, False, "Remember the best keeps of this run for later runs on the same target, and try "
        "what earlier runs found first ($XDG_CACHE_HOME/bilevel-autoresearch/memory/)."),
    Opt("early_stop", bool, False, "Stop a trial whose training loss is clearly behind the incumbent's at the same "
        "point of training (>5% after 30%); recorded as FAIL 'stopped early'."),
]

SPEC = DomainCli(
    name="train_opt",
    help="Improve a GPT training script's val_bpb with a bilevel autoresearch loop.",
    session=_session, make_settings=_make_settings, inner_budget=3, outer_cycles=3,
    write_report=_write_report, show_summary=show_summary, record_line=record_line, event_line=event_line,
    show_report=_show_report, to_settings=_to_settings,
    global_options=[
        Opt("target_dir", Path | None, None, "An autoresearch-style clone (train.py + prepare.py); default: the bundled CPU harness."),
        Opt("time_budget", float | None, None, "Training seconds per trial (bundled harness only; default on a CPU: fixed compute)."),
        Opt("flop_budget", float | None, None, "Training FLOPs per trial (bundled harness only): the same train.py and seed give the same val_bpb."),
        Opt("data", Path | None, None, "A UTF-8 text file or folder to train on (bundled harness only)."),
        Opt("threads", int | None, None, "CPU threads per trial (default: all cores)."),
    ],
    run_options=[*DECISION_OPTIONS, *MECHANISM_OPTIONS],
    once_settings={"inner_budget": 0},
)
app = make_app(SPEC)


def main() -> None:
    """Console script ``bilevel-train``."""
    app()


if __name__ == "__main__":
    main()
