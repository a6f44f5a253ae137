"""Level 1 for article_opt: the pipeline as the inner loop's proposer and executor.

One :class:`~core.inner_loop.InnerLoopController` per article (loop ``inner.<name>``):

* :class:`StageProposer` runs the *propose* phase (analysis → hypotheses → planning, plus any
  generated stage placed there) on the working article with the lessons of earlier iterations;
  the candidate is the plan (``changes["plan"]``) and every stage output (``payload``, JSON), so
  the journal holds it before anything is executed;
* :class:`PipelineExecutor` runs the *execute* phase (assessment → revision) on that candidate and
  writes the revised article to the trial directory. A stage that fails twice ends the iteration
  as a crash with its reason; the working article is not touched;
* the judge scores the artifact text alone (:mod:`domains.article_opt.evaluator`); the core's
  strict-improvement decider keeps a revision only if the overall score rises;
* ``settle`` writes the working article: the kept revision, or the incumbent restored.

Every pipeline pass is journaled (``pipeline_pass``: stages run, calls per stage, failures), which is
how a report proves a generated stage was really called.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.plugins import ExecContext, Executor, Proposer
from core.records import ExecutionResult, Proposal, ProposalContext, Status, TrialRecord
from core.state import Journal, atomic_write_text
from domains.article_opt.articles import split_sections
from domains.article_opt.pipeline import PassResult, Pipeline, SectionView, StageContext, StageFailure

log = logging.getLogger(__name__)

ARTIFACT = "article.md"


def stage_context(article: str, *, lessons: tuple[str, ...] = (), iteration: int = 0, seed: int = 0,
                  guidance: str = "") -> StageContext:
    sections = tuple(SectionView(heading=s.heading, text=s.text) for s in split_sections(article))
    return StageContext(article=article, sections=sections, lessons=tuple(lessons), iteration=iteration,
                        seed=seed, guidance=guidance)


class ArticleState:
    """Where one article's texts live in the run directory."""

    def __init__(self, *, name: str, run_dir: Path, original: str) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.original = original
        self.working_path = self.run_dir / "working" / f"{name}.md"

    def incumbent_text(self, incumbent: str | None) -> str:
        if incumbent is None:
            return self.original
        return (self.run_dir / incumbent).read_text(encoding="utf-8")


def journal_pass(journal: Journal, result: PassResult | None, *, loop: str, iteration: int, cycle: int,
                 phase: str, pipeline: Pipeline, error: str = "") -> None:
    if result is None:
        return
    journal.append({
        "type": "pipeline_pass", "loop": loop, "iteration": iteration, "cycle": cycle, "phase": phase,
        "stages": list(result.stages), "calls": dict(result.calls),
        "generated": [s.name for s in pipeline.generated()], "failures": list(result.failures),
        "ejected": [e["stage"] for e in result.ejected], "error": error,
    })


class StageProposer(Proposer):
    """Runs the propose phase; raises :class:`StageFailure` (→ the controller records a crash)."""

    def __init__(self, *, pipeline: Pipeline, state: ArticleState, journal: Journal) -> None:
        self.pipeline = pipeline
        self.state = state
        self.journal = journal

    def propose(self, ctx: ProposalContext) -> Proposal:
        article = self.state.incumbent_text(ctx.incumbent)
        base = replace(stage_context(article, lessons=ctx.lessons, iteration=ctx.iteration, seed=ctx.seed),
                       attempt=len(ctx.feedback))  # refused before (e.g. the same plan as one in flight)
        tags = {"loop": ctx.loop, "iteration": ctx.iteration, "cycle": ctx.cycle}
        try:
            result = self.pipeline.run(base, phase="propose", tags=tags)
        except StageFailure as exc:
            journal_pass(self.journal, exc.result, phase="propose", pipeline=self.pipeline, error=str(exc), **tags)
            raise
        journal_pass(self.journal, result, phase="propose", pipeline=self.pipeline, **tags)
        plan = list(result.outputs.get("planning", {}).get("edits", []))
        first = plan[0] if plan else {}
        hypotheses = "; ".join(e.get("instruction", "")[:120] for e in plan)
        return Proposal(changes={"plan": plan}, hypothesis=hypotheses or "no edit planned",
                        region=f"{first.get('action', 'none')}@{first.get('section', '')}",
                        payload=json.dumps(result.outputs, ensure_ascii=False))


class PipelineExecutor(Executor):
    """Runs the execute phase on a journaled candidate and writes the revised article.

    The pipeline runs in this process and holds state across a pass (its stage workers, the pass's
    tags), so with ``--parallel K`` a batch's K candidates are proposed and decided as a batch but
    executed one at a time (``concurrent = False``, :class:`core.pool.LocalPool`)."""

    concurrent = False

    def __init__(self, *, pipeline: Pipeline, state: ArticleState, journal: Journal) -> None:
        self.pipeline = pipeline
        self.state = state
        self.journal = journal

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        target = ctx.trial_dir / ARTIFACT
        rel = str(target.relative_to(ctx.run_dir))
        if proposal.is_baseline:
            atomic_write_text(target, self.state.original)
            return ExecutionResult(status="ok", artifact=rel, detail={"sections_revised": []})
        article = self.state.incumbent_text(ctx.incumbent)
        outputs: dict[str, Any] = json.loads(proposal.payload or "{}")
        tags = {"loop": ctx.loop, "iteration": ctx.iteration, "cycle": ctx.cycle}
        base = stage_context(article, iteration=ctx.iteration, seed=ctx.iteration)
        try:
            result = self.pipeline.run(base, phase="execute", outputs=outputs, tags=tags)
        except StageFailure as exc:
            journal_pass(self.journal, exc.result, phase="execute", pipeline=self.pipeline, error=str(exc), **tags)
            return ExecutionResult(status="crash", log_tail=exc.reason,
                                   detail={"error": str(exc), "stage": exc.stage})
        journal_pass(self.journal, result, phase="execute", pipeline=self.pipeline, **tags)
        revision = result.outputs.get("revision")
        if revision is None:
            return ExecutionResult(status="crash", detail={"error": "the pipeline produced no revision", "stage": "revision"})
        atomic_write_text(target, revision["text"])
        atomic_write_text(ctx.trial_dir / "stages.json", json.dumps(result.outputs, indent=1, ensure_ascii=False))
        assessment = result.outputs.get("assessment", {})
        return ExecutionResult(status="ok", artifact=rel, detail={
            "sections_revised": revision.get("sections_revised", []), "changes": revision.get("changes", [])[:20],
            "approved": assessment.get("approved", []), "rejected": assessment.get("rejected", []),
            "stage_calls": dict(result.calls),
        })

    def settle(self, record: TrialRecord) -> None:
        """Keep: the revision becomes the working article. Anything else: the incumbent is restored."""
        if record.status is Status.KEEP and record.artifact:
            text = (self.state.run_dir / record.artifact).read_text(encoding="utf-8")
        else:
            text = self.state.incumbent_text(record.parent_artifact)
        atomic_write_text(self.state.working_path, text)
