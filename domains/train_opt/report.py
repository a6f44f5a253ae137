"""``report RUN_DIR``: a markdown summary and a PNG of val_bpb per iteration with the best-so-far line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.records import Status, TrialRecord
from core.state import RunDir, atomic_write_text
from domains.train_opt.session import summarize


def inner_records(run: RunDir) -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="inner")]


def plot(records: list[TrialRecord], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    colors = {Status.KEEP: "tab:green", Status.DISCARD: "tab:gray"}
    ok = [r for r in records if r.score is not None]
    ax.scatter([r.iteration for r in ok], [r.score for r in ok], c=[colors.get(r.status, "tab:red") for r in ok],
               s=28, zorder=3, label="trial (green = kept)")
    best, xs, ys = None, [], []
    for r in records:
        if r.status is Status.KEEP and r.score is not None:
            best = r.score if best is None else min(best, r.score)
        if best is not None:
            xs.append(r.iteration)
            ys.append(best)
    ax.step(xs, ys, where="post", color="tab:blue", label="best so far")
    for r in records:
        if r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT):
            ax.axvline(r.iteration, color="tab:red", alpha=0.25, lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: Any, digits: int = 6) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def write_report(run_dir: Path) -> Path:
    # a folder that is not a run is refused before anything in it is touched
    run = RunDir(RunDir.check(run_dir, expect=("settings.json",)), lock=False)
    summary = summarize(run)
    records = inner_records(run)
    png = plot(records, run.path / "val_bpb.png", f"train_opt — {run.path.name}")
    providers = ", ".join(summary["providers"]) or "none"
    lines = [
        f"# train_opt run `{run.path.name}`", "",
        f"- baseline val_bpb: {_fmt(summary['baseline'])}",
        f"- best val_bpb: {_fmt(summary['best'])} (Δ {_fmt(summary['delta'])})",
        f"- trials: {summary['iterations']} — " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v),
        f"- researcher providers: {providers}"
        + (" (the offline provider is a deterministic stand-in, not an LLM)" if "offline" in summary["providers"] else ""),
        "", "![val_bpb per iteration](val_bpb.png)", "",
        "## Trials", "", "| # | cycle | change | val_bpb | status | mechanisms called |", "|---|---|---|---|---|---|",
    ]
    for r in records:
        change = ", ".join(f"{k}={v!r}" for k, v in (r.proposal.changes if r.proposal else {}).items()) or "(baseline)"
        hooks = ", ".join(f"{n}:{sum(c.values())}" for n, c in r.hook_calls.items()) or ""
        lines.append(f"| {r.iteration} | {r.cycle} | {change} | {_fmt(r.score)} | {r.status.value} | {hooks} |")
    configs = list(run.journal.events("config"))
    if configs:
        lines += ["", "## Level 1.5 configuration patches", ""]
        for e in configs:
            p = e["patch"]
            lines.append(f"- after cycle {e['cycle']}: freeze {p['freeze'] or '-'}, unfreeze {p['unfreeze'] or '-'}, "
                         f"strategy {p.get('strategy') or '-'}; {p['reason']}")
    if summary["mechanisms"]:
        lines += ["", "## Level 2 mechanisms", "", "| cycle | design | verdict | its gain | parent's gain | hook calls (effects) |",
                  "|---|---|---|---|---|---|"]
        for m in summary["mechanisms"]:
            effects = m.get("hook_effects", {})
            calls = ", ".join(f"{h}={c} ({effects.get(h, 0)})" for h, c in m["hook_calls"].items()) or "0"
            lines.append(f"| {m['cycle']} | {m['region']} | {m['verdict']} | {_fmt(m['score'])} | "
                         f"{_fmt(m['parent_score'])} | {calls} |")
    if summary["usage"]:
        lines += ["", "## LLM usage", "", "| level | calls | prompt tokens | completion tokens | cost (USD) |",
                  "|---|---|---|---|---|"]
        for level, u in summary["usage"].items():
            lines.append(f"| {level} | {u['calls']} | {u['prompt_tokens']} | {u['completion_tokens']} | {u['cost_usd']:.4f} |")
    best = run.path / "best_train.py"
    if best.exists():
        from domains.train_opt.target import diff

        patch = diff((run.path / "original_train.py").read_text(encoding="utf-8"), best.read_text(encoding="utf-8"))
        lines += ["", "## Best train.py vs. the original", "", "```diff", patch.rstrip() or "(unchanged)", "```"]
    out = run.path / "REPORT.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out if png else out
