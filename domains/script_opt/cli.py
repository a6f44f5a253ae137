"""script_opt command line: ``python -m domains.script_opt.cli --target-dir DIR --cmd "python train.py"
--metric loss [--metric-regex RE] [--maximize] [--params A,B] COMMAND``.

Commands, flags and exit statuses are core's (:mod:`core.cli`); this module adds the script options
and a line per trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from core.cli import DECISION_OPTIONS, DomainCli, Opt, console, make_app
from core.errors import UserError
from core.level2 import design_line_verdict
from core.plugins import outcome
from core.records import Status, TrialRecord

_STYLE = {Status.KEEP: "green", Status.DISCARD: "white", Status.REJECTED: "yellow"}


def _session() -> Any:
    from domains.script_opt.session import ScriptSession

    return ScriptSession


def _make_settings() -> Any:
    from domains.script_opt.session import make_settings

    return make_settings


def _to_settings(values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    for flag, example in (("target_dir", "--target-dir ./my_project"), ("cmd", '--cmd "python train.py"')):
        if not values.get(flag):
            raise UserError(f"--{flag.replace('_', '-')} is required: name it before or after the command, e.g. {example}")
    values["direction"] = "maximize" if values.pop("maximize", False) else "minimize"
    values["params"] = tuple(p.strip() for p in (values.get("params") or "").split(",") if p.strip())
    if values.get("target_dir") is not None:
        values["target_dir"] = str(values["target_dir"])
    return values


def record_line(loop: str, record: TrialRecord) -> str:
    style = _STYLE.get(record.status, "red")
    if loop == "mechanism":
        baseline = record.proposal is None or record.proposal.is_baseline
        what = "parent mechanism set" if baseline else record.proposal.region
        note = f" [dim]({escape(record.error[:90])})[/dim]" if record.error else ""
        verdict = design_line_verdict(record)
        shown = f"{record.metrics.get('gain', 0.0):.6g}"
        if not baseline and record.metrics.get("parent_gain") is not None:  # the two numbers the verdict compared
            shown += f" vs its parent's {record.metrics['parent_gain']:.6g}"
        return (f"[bold]L2[/bold]  c{record.cycle} {escape(what):<30} [{style}]{verdict}[/{style}] "
                f"gain/iteration {shown}{note}")
    change = ", ".join(f"{k}={v!r}" for k, v in (record.proposal.changes if record.proposal else {}).items())
    change = change or ("baseline" if record.proposal and record.proposal.is_baseline else "-")
    score = f"{record.score:.6g}" if record.score is not None else "-"
    note = f" [dim]({escape(record.error[:70])})[/dim]" if record.error and record.status is not Status.KEEP else ""
    return (f"[bold]#{record.iteration:>3}[/bold] c{record.cycle} {escape(change):<36} {score:>12} "
            f"[{style}]{outcome(record):<8}[/{style}] best {'-' if record.best_after is None else f'{record.best_after:.6g}'}{note}")


def event_line(event: dict[str, Any]) -> str | None:
    if event.get("type") == "config":
        return f"[bold]L1.5[/bold] after cycle {event['cycle']}: {escape(event['patch']['reason'])}"
    if event.get("type") == "config_rejected":
        return f"[bold]L1.5[/bold] after cycle {event['cycle']}: [yellow]rejected[/yellow] {escape(event['error'][:100])}"
    if event.get("type") == "level15_verdict":
        return f"[bold]L1.5[/bold] patch of cycle {event['cycle']} {'kept' if event['kept'] else 'reverted'}"
    return None


def show_summary(run_path: Path, summary: dict[str, Any]) -> None:
    table = Table(title=f"script_opt: {summary['metric']} ({summary['direction']})")
    for col in ("baseline", "best", "trials", "keep", "discard", "crash/fail/timeout"):
        table.add_column(col, justify="right")
    c = summary["counts"]
    table.add_row(str(summary["baseline"]), str(summary["best"]), str(summary["iterations"]), str(c["keep"]),
                  str(c["discard"]), str(c["crash"] + c["fail"] + c["timeout"]))
    console.print(table)


def _write_report(run_path: Path) -> Path:
    """``REPORT.md``: the summary (from the journal, via the domain) and the diff of the best file."""
    from core import editable
    from core.state import RunDir, atomic_write_text
    from domains.script_opt.session import summarize

    # the settings are read before the folder is opened: a folder that is not a run is left untouched
    path = RunDir.check(run_path, expect=("settings.json",))
    try:
        settings = _make_settings()(**json.loads((path / "settings.json").read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} does not hold a script_opt run (settings.json: {str(exc).splitlines()[0]}); "
                        "pass the folder a script_opt run printed") from None
    with RunDir.open(path) as run:
        summary = summarize(run, settings)
    original = next(run_path.glob("original_*"), None)
    best = run_path / f"best_{original.name[9:]}" if original else None
    lines = [f"# script_opt run report: {summary['metric']} ({summary['direction']})", "",
             f"baseline {summary['baseline']} → best {summary['best']}; {summary['iterations']} trials, "
             f"counts {summary['counts']}", "", "## Level 1.5 verdicts", ""]
    lines += [f"- patch after cycle {v['cycle']}: {'kept' if v['kept'] else 'reverted'} (score {v['score']})"
              for v in summary["config_verdicts"]] or ["(none)"]
    lines += ["", "## Level 2 mechanisms", ""]
    lines += [f"- cycle {m['cycle']}: {m['region']}{' (retest)' if m['retest_of'] is not None else ''} "
              f"{'inconclusive: retested next cycle' if m['verdict'] == 'retest' else m['verdict']} "
              f"(its gain {m['gain']} vs its parent's {m['parent_gain']}"
              + (f"; {m['reason']}" if m["reason"] else "") + f"; hook calls {m['hook_calls']})"
              for m in summary["mechanisms"]] or ["(none)"]
    if original and best and best.is_file():
        patch = editable.diff(original.read_text(encoding="utf-8"), best.read_text(encoding="utf-8"), original.name[9:])
        lines += ["", "## Best vs. original", "", "```diff", patch.rstrip() or "(unchanged)", "```"]
    out = run_path / "REPORT.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


SPEC = DomainCli(
    name="script_opt",
    help="Tune the constants of any script that prints a metric, with a bilevel autoresearch loop.",
    session=_session, make_settings=_make_settings, inner_budget=3, outer_cycles=3,
    write_report=_write_report, show_summary=show_summary, record_line=record_line, event_line=event_line,
    run_options=DECISION_OPTIONS,
    to_settings=_to_settings, once_settings={"inner_budget": 0},
    global_options=[
        Opt("target_dir", Path | None, None, "The directory holding the script (copied into the run)."),
        Opt("cmd", str | None, None, 'The command a trial runs in the copy, e.g. "python train.py".'),
        Opt("file", str | None, None, "The file whose constants are edited (default: the .py file --cmd runs)."),
        Opt("metric", str, "score", "The metric's name in a 'metric: value' line of the output."),
        Opt("metric_regex", str | None, None, "A regex whose first group is the metric (instead of a key line)."),
        Opt("maximize", bool, False, "Higher is better (default: lower is better)."),
        Opt("params", str | None, None, "Comma list of the constants to tune (default: every UPPER_CASE number)."),
        Opt("trial_timeout", float, 600.0, "Seconds a trial may run before its process group is killed.",
            key="trial_timeout_s"),
    ],
)
app = make_app(SPEC)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
