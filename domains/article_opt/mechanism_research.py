"""Level 2 for article_opt: research new pipeline stages and hot-inject them into the running pipeline.

Level 2 is the same :class:`~core.inner_loop.InnerLoopController` as Level 1, run over stages:

* a candidate is a stage design — a name, where it goes (``after``) and its full Python source
  against :mod:`domains.article_opt.pipeline.contract` (:class:`StageDesigner`);
* executing it is core's :class:`~core.level2.CycleTrialExecutor`: the source goes through the
  loader with the stage contract (content-hash file → AST policy → sandboxed worker → contract
  check on a probe article), :class:`StageInstaller` injects it (``inject_stage(after=...)``) into
  the running pipeline, and the next inner cycle runs;
* its score is that cycle's gain per iteration minus the parent's (the previous cycle, run without
  it, same iteration budget): kept only if positive, otherwise the installer removes it again.

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

from core.level2 import Installer
from core.loader import LoadContract, LoadedMechanism
from core.plugins import Proposer
from core.records import Proposal, ProposalContext, TrialRecord
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
                 for r in ctx.history if r.proposal is not None and not r.proposal.is_baseline]
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


class StageInstaller(Installer):
    """Injects a generated stage into the running pipeline after the stage its design names."""

    contract = STAGE_CONTRACT

    def __init__(self, *, pipeline: Pipeline, journal: Journal) -> None:
        self.pipeline = pipeline
        self.journal = journal

    def install(self, loaded: LoadedMechanism, proposal: Proposal, iteration: int, cycle: int) -> tuple[str, dict[str, Any]]:
        after = str(proposal.changes.get("after", "planning"))
        self.pipeline.inject_stage(loaded.instance, after=after, digest=loaded.digest)
        name = type(loaded.instance).name
        self.journal.append({"type": "stage_injected", "loop": LOOP, "iteration": iteration, "cycle": cycle,
                             "name": name, "after": after, "digest": loaded.digest, "path": loaded.path,
                             "pipeline": self.pipeline.names, "load_seconds": round(loaded.load_seconds, 3)})
        return name, {"stage": name, "digest": loaded.digest, "path": loaded.path}

    def failure(self, name: str) -> str | None:
        if self.pipeline.slot(name) is not None:
            return None
        ejected = self.journal.last("stage_ejected", stage=name)
        return f"stage {name} was ejected: {ejected['reason'] if ejected else 'ejected'}"

    def cycle_metrics(self, name: str, cycle: int) -> tuple[dict[str, float], dict[str, Any]]:
        calls = sum(int(e.get("calls", {}).get(name, 0)) for e in self.journal.events("pipeline_pass", cycle=cycle))
        return {"stage_calls": float(calls)}, {"stage_calls": calls}

    def load_failed(self, proposal: Proposal, iteration: int, cycle: int, exc: BaseException) -> None:
        stage = getattr(exc, "stage", "inject")
        tail = getattr(exc, "traceback_tail", "") or traceback.format_exc()[-2000:]
        self.journal.append({"type": "stage_load_failed", "loop": LOOP, "iteration": iteration, "cycle": cycle,
                             "name": proposal.changes.get("name"), "load_stage": stage, "error": str(exc)[:600],
                             "traceback_tail": tail})

    def kept(self, name: str, record: TrialRecord) -> None:
        self.journal.append({"type": "stage_kept", "loop": LOOP, "iteration": record.iteration, "cycle": record.cycle,
                             "name": name, "digest": record.info.get("digest"),
                             "stage_calls": record.metrics.get("stage_calls", 0)})

    def remove(self, name: str, loaded: LoadedMechanism, record: TrialRecord) -> None:
        if self.pipeline.slot(name) is not None:
            self.pipeline.remove_stage(name)
        loaded.instance.close()  # revert = kill its worker
        self.journal.append({"type": "stage_reverted", "loop": LOOP, "iteration": record.iteration,
                             "cycle": record.cycle, "name": name, "digest": record.info.get("digest"),
                             "status": record.status.value, "stage_calls": record.metrics.get("stage_calls", 0)})

    def removed_since(self, record: TrialRecord) -> bool:
        return record.info.get("stage") in {e["stage"] for e in self.journal.events("stage_ejected")}

    def reinstall(self, loaded: LoadedMechanism, record: TrialRecord) -> None:
        if type(loaded.instance).name in self.pipeline.names:
            loaded.instance.close()
            return
        after = str(record.proposal.changes.get("after", "planning")) if record.proposal else "planning"
        self.pipeline.inject_stage(loaded.instance, after=after, digest=loaded.digest)
