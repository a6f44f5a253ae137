"""Level 1.5 for article_opt: rewrite the pipeline's per-stage instructions between cycles.

After an inner cycle the outer analyzer (its own client, ``--outer-provider``) reads the
per-dimension score trace and the stage failures from the journal, picks a strategy from
``reference_frameworks.md`` and writes per-stage prompt overrides. Overrides are validated (a known
strategy, known stages, bounded length), merged with those of the last few cycles (the newest
first, older ones kept while they fit), journaled as an ``outer_patch`` event and handed to the
stages as ``ctx.guidance``. The schedule (:class:`core.schedule.BilevelRun`) scores each patch by the
cycle it governs and reverts one that did not pay; on resume the configuration in force is replayed
from the journal.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import RunStopped
from core.records import Status, TrialRecord
from core.state import Journal
from domains.article_opt.prompts import bullet, render

log = logging.getLogger(__name__)

FRAMEWORKS_PATH = Path(__file__).resolve().parent / "reference_frameworks.md"
OUTER_PURPOSE = "article.outer"
MAX_OVERRIDE_CHARS = 400  # one cycle's instruction for one stage
MAX_STAGE_GUIDANCE_CHARS = 900  # what a stage receives, all kept cycles together
KEEP_CYCLES = 3
TRACE_ROWS = 30


@dataclass(frozen=True)
class Framework:
    name: str
    when: str
    does: str
    guidance: str


def load_frameworks(path: Path = FRAMEWORKS_PATH) -> list[Framework]:
    """Parse ``## name`` blocks with ``- when:``, ``- does:``, ``- guidance:`` lines."""
    found: list[Framework] = []
    for block in re.split(r"(?m)^## ", path.read_text(encoding="utf-8"))[1:]:
        name, _, body = block.partition("\n")
        fields = dict(re.findall(r"(?m)^- (when|does|guidance):\s*(.+)$", body))
        if {"when", "does", "guidance"} <= fields.keys():
            found.append(Framework(name=name.strip(), **{k: fields[k].strip() for k in ("when", "does", "guidance")}))
    if not found:
        raise ValueError(f"{path} holds no '## name' framework with when/does/guidance lines")
    return found


class StageOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    instruction: str = Field(max_length=2000)


class OuterPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(description="the name of one reference framework")
    diagnosis: str = Field(max_length=800)
    overrides: list[StageOverride] = Field(min_length=1, max_length=6)


class PatchRejected(ValueError):
    pass


def score_trace(records: dict[str, list[TrialRecord]]) -> list[dict[str, Any]]:
    """One row per finished inner iteration, every article: status, overall, dimension scores."""
    rows = []
    for article, history in records.items():
        for r in history:
            rows.append({"article": article, "cycle": r.cycle, "iteration": r.iteration, "status": r.status.value,
                         "overall": r.score, "dims": dict(r.details), "error": r.error[:200] if r.error else ""})
    return rows[-TRACE_ROWS:]


def dimension_summary(records: dict[str, list[TrialRecord]], cycle: int) -> dict[str, dict[str, float]]:
    """Per dimension: the incumbent's score after ``cycle`` (mean over articles) and its change
    during that cycle (against the incumbent before it)."""
    now: dict[str, list[float]] = {}
    gain: dict[str, list[float]] = {}
    for history in records.values():
        kept = [r for r in history if r.status is Status.KEEP and r.details and r.cycle <= cycle]
        if not kept:
            continue
        before = [r for r in kept if r.cycle < cycle or (r.proposal is not None and r.proposal.is_baseline)]
        start = before[-1] if before else kept[0]
        for dim, value in kept[-1].details.items():
            now.setdefault(dim, []).append(value)
            gain.setdefault(dim, []).append(value - start.details.get(dim, value))
    return {dim: {"score": round(sum(v) / len(v), 3), "last_cycle_gain": round(sum(gain[dim]) / len(gain[dim]), 3)}
            for dim, v in now.items()}


def stage_failures(journal: Journal, *, limit: int = 10) -> list[dict[str, Any]]:
    events = [e for e in journal.events("stage_failed")] + [e for e in journal.events("stage_ejected")]
    events.sort(key=lambda e: e["seq"])
    return [{"stage": e.get("stage"), "error": (e.get("error") or e.get("reason") or "")[:200],
             "type": e["type"]} for e in events[-limit:]]


def current_overrides(journal: Journal) -> dict[str, str]:
    last = journal.last("outer_patch")
    return dict(last["effective"]) if last else {}


def merge(history: list[dict[str, Any]], new: dict[str, str], cycle: int) -> dict[str, str]:
    """What each stage receives: this cycle's instruction first, then those of up to
    ``KEEP_CYCLES - 1`` earlier patches, while the total stays under ``MAX_STAGE_GUIDANCE_CHARS``."""
    entries = [(cycle, new)] + [(p["cycle"], p["overrides"]) for p in reversed(history)][: KEEP_CYCLES - 1]
    effective: dict[str, str] = {}
    for stage in sorted({s for _, o in entries for s in o}):
        lines: list[str] = []
        for c, overrides in entries:
            if stage in overrides:
                line = f"(cycle {c}) {overrides[stage]}"
                if sum(len(x) + 1 for x in lines) + len(line) > MAX_STAGE_GUIDANCE_CHARS:
                    break
                lines.append(line)
        effective[stage] = "\n".join(lines)
    return effective


class OuterAnalyzer:
    """Level 1.5: one :meth:`step` per finished inner cycle."""

    def __init__(self, *, llm: Any, journal: Journal, stage_names: Any, frameworks: list[Framework] | None = None):
        self.llm = llm
        self.journal = journal
        self.stage_names = stage_names  # a callable returning the pipeline's current stage names
        self.frameworks = frameworks or load_frameworks()

    def step(self, cycle: int, records: dict[str, list[TrialRecord]]) -> dict[str, str] | None:
        """Analyze, validate, journal; return the effective overrides (``None`` if the patch was
        rejected twice: the previous overrides stay)."""
        # a patch the schedule reverted (its cycle did not beat the one before) is not merged again
        reverted = {e["cycle"] for e in self.journal.events("level15_verdict") if not e["kept"]}
        history = [p for p in self.journal.events("outer_patch") if p["cycle"] not in reverted]
        context = {
            "cycle": cycle, "trace": score_trace(records), "dimensions": dimension_summary(records, cycle),
            "failures": stage_failures(self.journal), "stages": list(self.stage_names()),
            "frameworks": [f.__dict__ for f in self.frameworks],
            "previous": [{"cycle": p["cycle"], "strategy": p["strategy"], "overrides": p["overrides"]}
                         for p in history[-KEEP_CYCLES:]],
        }
        error = None
        for _attempt in (1, 2):
            messages = render(
                "outer", frameworks="\n".join(f"- {f.name}: when {f.when} Does: {f.does} Guidance: {f.guidance}"
                                              for f in self.frameworks),
                stages=", ".join(context["stages"]), dimensions=json.dumps(context["dimensions"], indent=1),
                trace=json.dumps(context["trace"][-12:], indent=None), failures=bullet(context["failures"]),
                previous=bullet(context["previous"]), retry=f"\nYour previous patch was rejected: {error}" if error else "",
                max_chars=MAX_OVERRIDE_CHARS)
            try:
                patch = self.llm.structured(purpose=OUTER_PURPOSE, schema=OuterPatch, messages=messages,
                                            context={**context, "retry_error": error})
                overrides = self._validate(patch, context["stages"])
            except RunStopped:
                raise
            except Exception as exc:  # a bad patch never stops the run: the previous overrides stay
                error = f"{type(exc).__name__}: {exc}"[:400]
                log.warning("outer patch for cycle %d rejected: %s", cycle, error)
                continue
            effective = merge(history, overrides, cycle)
            self.journal.append({"type": "outer_patch", "cycle": cycle, "strategy": patch.strategy,
                                 "diagnosis": patch.diagnosis, "overrides": overrides, "effective": effective,
                                 "dimensions": context["dimensions"]})
            return effective
        self.journal.append({"type": "outer_rejected", "cycle": cycle, "error": error})
        return None

    def _validate(self, patch: OuterPatch, stages: list[str]) -> dict[str, str]:
        names = {f.name for f in self.frameworks}
        if patch.strategy not in names:
            raise PatchRejected(f"strategy {patch.strategy!r} is not one of the reference frameworks {sorted(names)}")
        overrides: dict[str, str] = {}
        for o in patch.overrides:
            if o.stage not in stages:
                raise PatchRejected(f"override for unknown stage {o.stage!r}; stages are {stages}")
            text = " ".join(o.instruction.split())
            overrides[o.stage] = text if len(text) <= MAX_OVERRIDE_CHARS else text[: MAX_OVERRIDE_CHARS - 3] + "..."
        return overrides
