"""Level 2 for train_opt: research new search mechanisms and hot-load them into the running loop.

Level 2 is the same :class:`~core.inner_loop.InnerLoopController` as Level 1, run over mechanisms:

* a candidate is a mechanism design — a library template with parameters, or full source written
  by the researcher (:class:`MechanismDesigner`);
* executing it (:class:`MechanismTrialExecutor`) stages the source through the core hot-loader,
  attaches the mechanism to the **running** Level-1 controller and runs the next inner cycle;
* its score is that cycle's improvement of val_bpb (same iteration budget for every cycle), and it
  is kept only if it beats the cycle just before it (:class:`PreviousCycleDecider`); otherwise
  ``settle`` detaches it. Comparing with the previous cycle rather than the best cycle so far
  matters: early cycles harvest the easy gains, so a best-so-far rule would revert nearly every
  design for being late, not for being worse.

Because Level 2 is the same controller, Level-1 mechanisms attach to it unchanged: the session
attaches the library tabu list, so a design that was reverted is not proposed again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from pydantic import BaseModel, Field

from core.errors import MechanismError
from core.inner_loop import InnerLoopController, hook_call_totals
from core.loader import MechanismLoader
from core.plugins import Decider, ExecContext, Executor, Proposer
from core.records import ExecutionResult, Proposal, ProposalContext, Status, TrialRecord
from core.mechanisms import TEMPLATES
from core.mechanisms import render_template
from domains.train_opt.design_prompt import render_design_prompt
from domains.train_opt.offline import PURPOSE_DESIGN
from domains.train_opt.trace import diagnose

log = logging.getLogger(__name__)


class DesignReply(BaseModel):
    template: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(default=None, max_length=40_000)
    rationale: str = Field(default="", max_length=2000)


def template_menu() -> dict[str, dict[str, Any]]:
    return {name: {"addresses": meta["addresses"], "description": meta["description"],
                   "default_params": meta["params"]} for name, meta in TEMPLATES.items()}


def design_region(template: str | None, source: str) -> str:
    if template:
        return f"template:{template}"
    return f"custom:{hashlib.sha256(source.encode()).hexdigest()[:10]}"


def previous_cycle_score(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> float | None:
    """The gain of the most recent measured cycle: what a new design has to beat."""
    for record in reversed(history):
        if record.score is not None:
            return record.score
    return None


class PreviousCycleDecider(Decider):
    """Keep a design only if its cycle's gain strictly beats the previous cycle's gain."""

    def decide(self, score: float, incumbent: float | None, ctx: ProposalContext) -> bool:
        reference = previous_cycle_score(ctx.history)
        return reference is None or score > reference


class MechanismDesigner(Proposer):
    """Asks the researcher for a mechanism addressing the diagnosed bottleneck of the inner search."""

    def __init__(self, *, client: Any, inner: InnerLoopController, inner_budget: int) -> None:
        self.client = client
        self.inner = inner
        self.inner_budget = inner_budget

    def propose(self, ctx: ProposalContext) -> Proposal:
        active = list(self.inner.search.get("active_params", ()))
        tried = [{"region": r.proposal.region, "status": r.status.value, "score": r.score, "iteration": r.iteration}
                 for r in ctx.history if r.proposal is not None and r.proposal.origin != "baseline"]
        # a template already attached (kept) is not offered again: a second copy adds nothing
        attached = {m.name for m in self.inner.mechanisms}
        active_templates = sorted({r.proposal.changes["template"] for r in ctx.history
                                   if r.proposal is not None and r.proposal.changes.get("template")
                                   and r.info.get("mechanism") in attached})
        menu = {k: v for k, v in template_menu().items() if k not in active_templates} or template_menu()
        context = {
            "diagnosis": diagnose(self.inner.history, active), "templates": menu, "tried": tried,
            "active_templates": active_templates,
            "constraints": ctx.guidance.constraints.model_dump(mode="json"), "feedback": list(ctx.feedback),
            "inner_budget": self.inner_budget, "iteration": ctx.iteration,
        }
        prompt = render_design_prompt(context, ctx, hook_timeout_s=self.inner.hook_timeout_s)
        messages = [{"role": "user", "content": prompt}]
        reply = self.client.structured(purpose=PURPOSE_DESIGN, schema=DesignReply, messages=messages, context=context)
        if reply.source:
            source, template = reply.source, None
        elif reply.template:
            try:
                source, template = render_template(reply.template, reply.params), reply.template
            except ValueError as exc:
                raise ValueError(f"design names an unusable template: {exc}") from exc
        else:
            raise ValueError("design has neither a template nor source")
        return Proposal(changes={"template": template, "params": reply.params}, payload=source,
                        hypothesis=reply.rationale, region=design_region(template, source), origin="designer")


class MechanismTrialExecutor(Executor):
    """Hot-loads a design into the running Level-1 controller and runs one inner cycle under it."""

    def __init__(self, *, inner: InnerLoopController, loader: MechanismLoader, run_cycle: Any) -> None:
        self.inner = inner
        self.loader = loader
        self.run_cycle = run_cycle  # callable(cycle) -> None, runs (or finishes) that inner cycle
        self.attached: dict[int, str] = {}

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        name = None
        artifact = None
        detail: dict[str, Any] = {}
        if proposal.origin != "baseline":
            try:
                loaded = self.loader.load(proposal.payload or "", params=None)
            except MechanismError as exc:
                log.warning("mechanism rejected at stage %s: %s", exc.stage, exc)
                return ExecutionResult(status="crash", log_tail=exc.traceback_tail or str(exc),
                                       detail={"error": f"{exc.stage}: {exc}", "stage": exc.stage, "rule": exc.rule})
            name = f"{loaded.name}#{ctx.iteration}"
            try:
                self.inner.attach(loaded.instance, name=name, origin="generated", digest=loaded.digest)
            except (MechanismError, ValueError) as exc:
                self.loader.unload(loaded)
                return ExecutionResult(status="crash", log_tail=getattr(exc, "traceback_tail", "") or str(exc),
                                       detail={"error": f"attach: {exc}", "stage": "attach"})
            self.attached[ctx.iteration] = name
            artifact = loaded.path
            detail = {"mechanism": name, "digest": loaded.digest, "hooks": list(loaded.hooks_overridden),
                      "load_seconds": round(loaded.load_seconds, 3), "worker_pid": loaded.worker_pid,
                      "sandbox": loaded.sandbox}
        best_before = self._cycle_start_best(ctx.cycle)
        self.run_cycle(ctx.cycle)
        records = self.inner.records(ctx.cycle)
        best_after = self.inner.best_score
        gain = (best_before - best_after) if best_before is not None and best_after is not None else 0.0
        metrics = {"improvement": gain, "improvement_per_iter": gain / max(len(records), 1),
                   "keeps": float(sum(r.status is Status.KEEP for r in records)),
                   "crashes": float(sum(r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT) for r in records))}
        if name is not None:
            calls = hook_call_totals(records).get(name, {})
            detail["hook_calls"] = calls
            metrics["hook_calls"] = float(sum(calls.values()))
            if not any(m.name == name for m in self.inner.mechanisms):
                return ExecutionResult(status="crash", metrics=metrics, artifact=artifact,
                                       detail={**detail, "error": "mechanism was detached during the cycle (hook failure)"})
        return ExecutionResult(status="ok", metrics=metrics, artifact=artifact, detail=detail)

    def _cycle_start_best(self, cycle: int) -> float | None:
        """The incumbent score when ``cycle`` began (also right after a resume mid-cycle)."""
        before = [r for r in self.inner.history if r.cycle < cycle or (r.proposal and r.proposal.origin == "baseline")]
        for record in reversed(before):
            if record.status is Status.KEEP:
                return record.score
        return None

    def settle(self, record: TrialRecord) -> None:
        name = self.attached.pop(record.iteration, None)
        if name is None:
            return
        if record.status is not Status.KEEP:
            self.inner.detach(name, reason=f"reverted: {record.status.value} (cycle gain {record.score})")
