"""Level 2 for article_opt: research new pipeline stages and hot-inject them into the running pipeline.

Level 2 is the same :class:`~core.inner_loop.InnerLoopController` as Level 1, run over stages:

* a candidate is a stage design — a name, where it goes (``after``) and its full Python source
  against :mod:`domains.article_opt.pipeline.contract` (:class:`StageDesigner`);
* executing it (:class:`StageTrialExecutor`) writes the source to the run directory and takes it
  through the core staged hot-loader with the stage contract (content-hash file → AST policy →
  contract check in a child process on a probe article → import under a unique module name),
  ``inject_stage(after=...)`` into the running pipeline, and runs the next inner cycle;
* its score is that cycle's gain per iteration minus the parent's (the previous cycle, run without
  it, same iteration budget): kept only if positive, otherwise ``settle`` removes it again.

The comparison with the previous cycle is conservative: later cycles start from a better article,
so a stage must beat diminishing returns to be kept. Generated sources live only under the run
directory (``mechanisms/<sha256>.py``), never in the package tree.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import MechanismError
from core.loader import LoadContract, MechanismLoader
from core.plugins import Decider, Evaluator, ExecContext, Executor, Proposer
from core.records import (
    EvalInput,
    Evaluation,
    ExecutionResult,
    Proposal,
    ProposalContext,
    Status,
    TrialRecord,
)
from core.state import Journal
from domains.article_opt.pipeline import Pipeline
from domains.article_opt.pipeline import contract as contract_module
from domains.article_opt.prompts import bullet, render
from domains.article_opt.stage_templates import render as render_template

log = logging.getLogger(__name__)

DESIGN_PURPOSE = "article.design_stage"
LOOP = "mechanism"
STAGE_CONTRACT = LoadContract(
    base="domains.article_opt.pipeline.contract.Stage",
    project_modules=frozenset({"domains.article_opt.pipeline.contract"}),
    check="domains.article_opt.pipeline.contract.contract_check",
    hooks=("run",),
    serve="domains.article_opt.pipeline.remote.serve_stage",
    proxy="domains.article_opt.pipeline.remote.stage_proxy",
)
NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


class StageDesign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="snake_case stage name, not already in the pipeline")
    after: str = Field(description="the existing stage it runs after (not 'revision')")
    rationale: str = Field(max_length=1000)
    source: str = Field(max_length=40_000, description="complete Python source of the stage module")


def contract_text() -> str:
    """The contract as the designer sees it: the module docstring and the public API."""
    doc = contract_module.__doc__ or ""
    api = [
        "class Finding(kind: objection|vague|contradiction|unsupported|structure|action|note, section='', quote='', suggestion='')",
        "class Findings(items: list[Finding] (at most 20), summary='')",
        "class StageContext: article: str; sections: tuple[SectionView(heading, text)]; outputs: dict of earlier "
        "stages' outputs; lessons; guidance; iteration; seed; ask(instruction) -> Findings; section(heading); "
        "paragraphs() -> list[(heading, paragraph)]",
        "class Stage: name: str; description: str; reads: tuple[str, ...]; output = Findings; run(self, ctx) -> Findings",
    ]
    return doc.strip() + "\n\n" + "\n".join(api)


class StageDesigner(Proposer):
    """Asks the researcher (the outer client) for one new stage aimed at the weakest criterion."""

    def __init__(self, *, llm: Any, pipeline: Pipeline, dimensions: Callable[[], dict[str, Any]]) -> None:
        self.llm = llm
        self.pipeline = pipeline
        self.dimensions = dimensions

    def propose(self, ctx: ProposalContext) -> Proposal:
        tried = [{"name": r.proposal.region, "verdict": r.status.value, "score": r.score, "error": r.error[:200]}
                 for r in ctx.history if r.proposal is not None and r.proposal.origin != "baseline"]
        context = {"stages": self.pipeline.names, "dimensions": self.dimensions(), "tried": tried,
                   "feedback": list(ctx.feedback), "avoid": list(ctx.guidance.constraints.avoid_regions),
                   "iteration": ctx.iteration}
        messages = render("design_stage", stages=", ".join(self.pipeline.names), contract=contract_text(),
                          example=render_template("evidence_audit"),
                          dimensions=json.dumps(context["dimensions"], indent=1),
                          tried=bullet([f"{t['name']}: {t['verdict']} (score {t['score']}) {t['error']}" for t in tried]),
                          feedback=bullet(ctx.feedback))
        design = self.llm.structured(purpose=DESIGN_PURPOSE, schema=StageDesign, messages=messages, context=context)
        if not NAME.match(design.name):
            raise ValueError(f"stage name {design.name!r} is not snake_case")
        if design.name in self.pipeline.names:
            raise ValueError(f"a stage named {design.name!r} is already in the pipeline; design a different stage")
        if design.after not in self.pipeline.names or design.after == "revision":
            raise ValueError(f"cannot place a stage after {design.after!r}; choose one of "
                             f"{[n for n in self.pipeline.names if n != 'revision']}")
        return Proposal(changes={"name": design.name, "after": design.after}, hypothesis=design.rationale,
                        region=design.name, payload=design.source)


class StageTrialExecutor(Executor):
    """Load → inject → run one inner cycle → report the gain; ``settle`` keeps or removes the stage."""

    def __init__(self, *, pipeline: Pipeline, loader: MechanismLoader, journal: Journal,
                 run_cycle: Callable[[int], None], cycle_gain: Callable[[int], float | None],
                 stage_calls: Callable[[str, int], int]) -> None:
        self.pipeline = pipeline
        self.loader = loader
        self.journal = journal
        self.run_cycle = run_cycle
        self.cycle_gain = cycle_gain
        self.stage_calls = stage_calls
        self._current: dict[str, Any] | None = None

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        self._current = None
        if proposal.origin == "baseline":  # the parent pipeline's own cycle
            self.run_cycle(ctx.cycle)
            gain = self.cycle_gain(ctx.cycle) or 0.0
            return ExecutionResult(status="ok", metrics={"gain": gain, "parent_gain": gain})
        parent_gain = self.cycle_gain(ctx.cycle - 1) or 0.0
        after = str(proposal.changes.get("after", "planning"))
        loaded = None
        try:
            loaded = self.loader.load(proposal.payload or "", context=None)
            self.pipeline.inject_stage(loaded.instance, after=after, digest=loaded.digest)
        except (MechanismError, ValueError, TypeError) as exc:
            if loaded is not None:
                self.loader.unload(loaded)
            stage = getattr(exc, "stage", "inject")
            tail = getattr(exc, "traceback_tail", "") or traceback.format_exc()[-2000:]
            self.journal.append({"type": "stage_load_failed", "loop": LOOP, "iteration": ctx.iteration,
                                 "cycle": ctx.cycle, "name": proposal.changes.get("name"), "load_stage": stage,
                                 "error": str(exc)[:600], "traceback_tail": tail})
            return ExecutionResult(status="crash", log_tail=tail,
                                   detail={"error": f"load failed at {stage}: {exc}", "load_stage": stage})
        name = type(loaded.instance).name
        self._current = {"name": name, "digest": loaded.digest, "path": loaded.path, "loaded": loaded}
        self.journal.append({"type": "stage_injected", "loop": LOOP, "iteration": ctx.iteration, "cycle": ctx.cycle,
                             "name": name, "after": after, "digest": loaded.digest, "path": loaded.path,
                             "pipeline": self.pipeline.names, "load_seconds": round(loaded.load_seconds, 3)})
        self.run_cycle(ctx.cycle)
        gain = self.cycle_gain(ctx.cycle) or 0.0
        calls = self.stage_calls(name, ctx.cycle)
        metrics = {"gain": gain, "parent_gain": parent_gain, "stage_calls": float(calls)}
        detail = {"stage": name, "digest": loaded.digest, "path": loaded.path, "stage_calls": calls}
        if self.pipeline.slot(name) is None:
            ejected = self.journal.last("stage_ejected", stage=name)
            reason = ejected["reason"] if ejected else "ejected"
            return ExecutionResult(status="crash", metrics=metrics, artifact=loaded.path,
                                   detail={**detail, "error": f"stage {name} was ejected: {reason}"})
        return ExecutionResult(status="ok", metrics=metrics, artifact=loaded.path, detail=detail)

    def settle(self, record: TrialRecord) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        name = current["name"]
        if record.status is Status.KEEP:
            self.journal.append({"type": "stage_kept", "loop": LOOP, "iteration": record.iteration,
                                 "cycle": record.cycle, "name": name, "digest": current["digest"],
                                 "stage_calls": record.metrics.get("stage_calls", 0)})
            return
        self.pipeline.remove_stage(name) if self.pipeline.slot(name) is not None else None
        self.loader.unload(current["loaded"])
        self.journal.append({"type": "stage_reverted", "loop": LOOP, "iteration": record.iteration,
                             "cycle": record.cycle, "name": name, "digest": current["digest"],
                             "status": record.status.value, "stage_calls": record.metrics.get("stage_calls", 0)})


class GainOverParent(Evaluator):
    """Score of a stage trial: its cycle's gain per iteration minus the parent cycle's (metrics only)."""

    def evaluate(self, inp: EvalInput) -> Evaluation:
        gain, parent = inp.metrics["gain"], inp.metrics["parent_gain"]
        return Evaluation(score=round(gain - parent, 6), details={"gain": gain, "parent_gain": parent})


class BeatsParent(Decider):
    """Keep a stage only when its cycle beat the parent pipeline's (score > 0)."""

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        return score > 1e-9
