"""Statistics of an inner-loop trace, shared by the proposer, Level 1.5 and Level 2.

All of it is derived from the journaled records; nothing here is stored.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.records import Status, TrialRecord


def search_records(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in history if r.proposal is not None and not r.proposal.is_baseline]


def param_stats(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> dict[str, dict[str, Any]]:
    """Per parameter: tries, keeps, crashes, the direction of its last kept change and the
    directions in which a move failed (crash, FAIL, timeout)."""
    stats: dict[str, dict[str, Any]] = {}
    for record in search_records(history):
        region_dirs = dict(part.split(":", 1) for part in record.proposal.region.split("+") if ":" in part)
        for name in record.proposal.changes:
            entry = stats.setdefault(name, {"tries": 0, "keeps": 0, "crashes": 0, "kept_direction": None,
                                            "crashed_directions": []})
            entry["tries"] += 1
            way = region_dirs.get(name)
            if record.status is Status.KEEP:
                entry["keeps"] += 1
                entry["kept_direction"] = way
            elif record.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT):
                entry["crashes"] += 1
                if way and way not in entry["crashed_directions"]:
                    entry["crashed_directions"].append(way)  # a move this way has failed: past an edge
    return stats


def trace_stats(history: tuple[TrialRecord, ...] | list[TrialRecord], *, window: int | None = None) -> dict[str, Any]:
    records = search_records(history)
    if window:
        records = records[-window:]
    n = len(records)
    regions = Counter(r.proposal.region for r in records)
    plateau = 0
    for record in reversed(records):
        if record.status is Status.KEEP:
            break
        plateau += 1
    failed = sum(r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT) for r in records)
    touched = Counter(name for r in records for name in r.proposal.changes)
    return {
        "trials": n,
        "keeps": sum(r.status is Status.KEEP for r in records),
        "crashes": failed,
        "crash_rate": failed / n if n else 0.0,
        "rejected": sum(r.status is Status.REJECTED for r in records),
        "repeats": sum(c - 1 for c in regions.values() if c > 1),
        "plateau": plateau,
        "distinct_params": len(touched),
        "top_param_share": (touched.most_common(1)[0][1] / sum(touched.values())) if touched else 0.0,
        "per_param": param_stats(records),
    }


def diagnose(history: tuple[TrialRecord, ...] | list[TrialRecord], active_params: list[str]) -> dict[str, float]:
    """Scores in [0, 1] for the bottlenecks the mechanism library addresses."""
    stats = trace_stats(history, window=12)
    n = max(stats["trials"], 1)
    untried = [p for p in active_params if p not in stats["per_param"]]
    return {
        "repeats": min(1.0, stats["repeats"] / n * 2),
        "narrow": min(1.0, stats["top_param_share"] * (1.0 if untried else 0.5)),
        "plateau": min(1.0, stats["plateau"] / n),
        "crashes/overshoot": stats["crash_rate"],  # the key TEMPLATES["step_size"] addresses
    }


def lessons(history: tuple[TrialRecord, ...]) -> list[str]:
    """Short lessons for the proposer: what moved val_bpb, what failed."""
    out = []
    for name, entry in sorted(param_stats(history).items()):
        line = f"{name}: {entry['keeps']} kept of {entry['tries']} tried"
        if entry["kept_direction"]:
            line += f", last kept moving {entry['kept_direction']}"
        if entry["crashes"]:
            line += f", {entry['crashes']} crashed"
        out.append(line)
    for record in search_records(history)[-3:]:
        if record.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT):
            last_line = (record.log_tail.strip().splitlines() or [record.error])[-1][:160]
            out.append(f"iteration {record.iteration} {record.status.value}: {last_line}")
    return out
