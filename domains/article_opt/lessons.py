"""Lessons: one line per planned edit of a recent iteration, saying what happened to it.

They are recomputed from the journaled history every iteration (never stored) and reach the
*proposal* stages (analysis, hypotheses, planning) through ``StageContext.lessons`` — never the
judge. The line format is fixed so that a stand-in handler can read it back as well as a model:

``[discard] qualify_claims on 'Why intuition fails' (rigor): overall 4.63 -> 4.61; rigor +0.4, clarity -0.5``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.records import Status, TrialRecord

MAX_LESSONS = 8
LINE = re.compile(r"^\[(?P<status>\w+)\] (?P<action>[\w-]+) on '(?P<section>[^']*)'")


@dataclass(frozen=True)
class Lesson:
    status: str
    action: str
    section: str


def parse(line: str) -> Lesson | None:
    m = LINE.match(line)
    return Lesson(m.group("status"), m.group("action"), m.group("section")) if m else None


def _delta(now: dict[str, float], before: dict[str, float]) -> str:
    parts = [f"{k} {now[k] - before[k]:+.1f}" for k in now if k in before and abs(now[k] - before[k]) >= 0.05]
    return ", ".join(parts) or "no dimension moved"


def extract(history: tuple[TrialRecord, ...], *, limit: int = MAX_LESSONS) -> list[str]:
    """Lessons from the most recent iterations, newest last."""
    lines: list[str] = []
    incumbent: TrialRecord | None = None
    for record in history:
        proposal = record.proposal
        if proposal is not None and proposal.is_baseline:
            incumbent = record if record.status is Status.KEEP else incumbent
            continue
        edits = (proposal.changes.get("plan") if proposal is not None else None) or []
        status = record.status.value
        if record.status in (Status.KEEP, Status.DISCARD) and record.score is not None:
            before = incumbent.details if incumbent is not None else {}
            tail = f"overall {record.best_before if record.best_before is not None else float('nan'):.2f} -> " \
                   f"{record.score:.2f}; {_delta(dict(record.details), dict(before))}"
        else:
            tail = f"failed: {record.error[:160] or status}"
        if not edits:
            lines.append(f"[{status}] none on '': {tail}")
        for edit in edits:
            lines.append(f"[{status}] {edit.get('action', 'other')} on '{edit.get('section', '')}' "
                         f"({edit.get('dimension', '?')}): {tail}")
        if record.status is Status.KEEP:
            incumbent = record
    return lines[-limit:]
