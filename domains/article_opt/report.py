"""Figures of an article_opt run, from its journal alone (used by ``run``, ``resume`` and ``report``)."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any

from core.records import Status, TrialRecord
from core.state import RunDir, atomic_write_text
from domains.article_opt.mechanism_research import LOOP

OFFLINE_NOTE = ("provider 'offline' is a deterministic stand-in (text measurements and rule-based edits), "
                "not a language model: these figures show the machinery works, not what a model would achieve")


def _records(run: RunDir, loop: str) -> list[TrialRecord]:
    return [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop=loop)]


def inner_loops(run: RunDir) -> list[str]:
    seen: dict[str, None] = {}
    for e in run.journal.events("trial"):
        if e["loop"].startswith("inner."):
            seen.setdefault(e["loop"], None)
    return list(seen)


def article_summary(records: list[TrialRecord]) -> dict[str, Any]:
    baseline = next((r for r in records if r.proposal is not None and r.proposal.is_baseline), None)
    kept = [r for r in records if r.status is Status.KEEP]
    best = kept[-1] if kept else None
    search = [r for r in records if r.proposal is None or not r.proposal.is_baseline]
    return {
        "baseline": baseline.score if baseline else None,
        "baseline_dims": dict(baseline.details) if baseline else {},
        "best": best.score if best else None,
        "best_dims": dict(best.details) if best else {},
        "best_artifact": best.artifact if best else None,
        "delta": (best.score - baseline.score) if best and baseline and best.score is not None
        and baseline.score is not None else None,
        "iterations": len(search),
        "counts": {s.value: sum(r.status is s for r in search) for s in Status},
        "trace": [{"cycle": r.cycle, "iteration": r.iteration, "status": r.status.value, "score": r.score,
                   "best": r.best_after, "region": r.proposal.region if r.proposal else "", "error": r.error[:200]}
                  for r in records],
    }


def stage_summary(run: RunDir) -> list[dict[str, Any]]:
    rows = []
    for record in _records(run, LOOP):
        if record.proposal is None or record.proposal.is_baseline:
            continue
        verdict = {Status.KEEP: "kept", Status.DISCARD: "reverted"}.get(record.status, record.status.value)
        rows.append({
            "iteration": record.iteration, "cycle": record.cycle, "name": record.proposal.region,
            "after": record.proposal.changes.get("after"), "verdict": verdict,
            "gain": record.metrics.get("gain"), "parent_gain": record.metrics.get("parent_gain"),
            "stage_calls": int(record.metrics.get("stage_calls", 0)), "source": record.artifact,
            "error": record.error[:300],
        })
    return rows


def summarize(run: RunDir) -> dict[str, Any]:
    journal = run.journal
    articles = {loop.split(".", 1)[1]: article_summary(_records(run, loop)) for loop in inner_loops(run)}
    calls: Counter = Counter()
    for e in journal.events("pipeline_pass"):
        calls.update(e.get("calls", {}))
    usage: dict[str, Any] = {}
    llm = list(journal.events("llm_call"))
    for level in sorted({c["level"] for c in llm}):
        rows = [c for c in llm if c["level"] == level]
        usage[level] = {"calls": len(rows), "prompt_tokens": sum(c["prompt_tokens"] for c in rows),
                        "completion_tokens": sum(c["completion_tokens"] for c in rows),
                        "cost_usd": round(sum(c["cost_usd"] for c in rows), 6)}
    providers = sorted({c["provider"] for c in llm})
    return {
        "articles": articles,
        "stages": stage_summary(run),
        "stage_calls": dict(calls),
        "outer_patches": [{"cycle": e["cycle"], "strategy": e["strategy"], "overrides": e["overrides"]}
                          for e in journal.events("outer_patch")],
        "cycles": [{"cycle": e["cycle"], "gain": e["gain"], "stages": e["stages"]} for e in journal.events("cycle_end")],
        "usage": usage,
        "providers": providers,
        "note": OFFLINE_NOTE if "offline" in providers else "",
    }


def article_diff(original: str, best: str, *, name: str, context: int = 1) -> str:
    return "".join(difflib.unified_diff(original.splitlines(keepends=True), best.splitlines(keepends=True),
                                        fromfile=f"{name} (original)", tofile=f"{name} (best)", n=context))


def trace_line(trace: list[dict[str, Any]], cycle: int) -> str:
    marks = {"keep": "✓", "discard": "·", "crash": "✗", "rejected": "∅", "fail": "✗", "timeout": "✗"}
    rows = [t for t in trace if t["cycle"] == cycle and t["region"] != "baseline"]
    items = [f"{t['score']:.2f}{marks.get(t['status'], '?')}" if t["score"] is not None
             else f"--{marks.get(t['status'], '?')}" for t in rows]
    best = rows[-1]["best"] if rows else None
    return " ".join(items) + (f"  | best {best:.2f}" if best is not None else "")


def write_report(run: RunDir) -> Any:
    """``REPORT.md`` in the run directory: scores per dimension, trace, outer patches, stages, diffs."""
    summary = summarize(run)
    lines = ["# article_opt run report", ""]
    if summary["note"]:
        lines += [f"> Note: {summary['note']}.", ""]
    for name, a in summary["articles"].items():
        lines += [f"## {name}", "", f"Overall: {a['baseline']} → {a['best']} (Δ {a['delta']}); "
                  f"{a['iterations']} iterations, counts {a['counts']}", "",
                  "| dimension | original | best | Δ |", "|---|---|---|---|"]
        for dim, before in a["baseline_dims"].items():
            after = a["best_dims"].get(dim, before)
            lines.append(f"| {dim} | {before:.2f} | {after:.2f} | {after - before:+.2f} |")
        lines += ["", "Score trace (✓ kept, · discarded, ✗ crashed):", ""]
        for cycle in sorted({t["cycle"] for t in a["trace"]}):
            lines.append(f"- cycle {cycle}: {trace_line(a['trace'], cycle)}")
        lines.append("")
    if summary["outer_patches"]:
        lines += ["## Level 1.5: stage overrides", ""]
        for p in summary["outer_patches"]:
            lines.append(f"- after cycle {p['cycle']}: **{p['strategy']}** → {', '.join(p['overrides'])}")
        lines.append("")
    if summary["stages"]:
        lines += ["## Level 2: generated stages", "", "| cycle | stage | after | verdict | gain/iter | parent | calls |",
                  "|---|---|---|---|---|---|---|"]
        for s in summary["stages"]:
            lines.append(f"| {s['cycle']} | {s['name']} | {s['after']} | {s['verdict']} | {s['gain']} | "
                         f"{s['parent_gain']} | {s['stage_calls']} |")
        lines.append("")
    lines += ["## Stage calls", "", ", ".join(f"{k}: {v}" for k, v in summary["stage_calls"].items()), ""]
    lines += ["## LLM usage", ""] + [f"- {level}: {u}" for level, u in summary["usage"].items()] + [""]
    for name, a in summary["articles"].items():
        original = run.path / "originals" / f"{name}.md"
        if a["best_artifact"] and original.is_file():
            diff = article_diff(original.read_text(encoding="utf-8"),
                                run.abs(a["best_artifact"]).read_text(encoding="utf-8"), name=name)
            lines += [f"## Diff: {name}", "", "```diff", diff.rstrip() or "(unchanged)", "```", ""]
    out = run.path / "REPORT.md"
    atomic_write_text(out, "\n".join(lines))
    return out
