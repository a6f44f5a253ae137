"""Level 1 for train_opt: the proposer that asks the researcher (an LLM, or the offline stand-in)
for one hyperparameter change at a time.

The request carries both a rendered prompt (for an LLM) and the structured context the prompt was
rendered from (for the offline researcher). The prompt defines its terms (strategy, step scale),
states the run's budget, the measured baseline and the noise floor when one is set, shows why
failed trials failed, and carries Level 1.5's guidance and the mechanisms' guidance. The reply is
validated against the parameter specs; an invalid change gets one repair round with the error,
then the iteration is recorded as a crash whose error the next proposal sees.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, Field

from core import editable
from core.plugins import Proposer, pooled_noise
from core.records import Proposal, ProposalContext, Status, TrialRecord
from domains.train_opt import target as tgt
from domains.train_opt.offline import PURPOSE_PROPOSE
from domains.train_opt.trace import param_stats, search_records

PROMPTS = Path(__file__).parent / "prompts"
HISTORY_LINES = 12
MEASURED_MAX_CHANGES = 4  # a measured configuration further from the incumbent cannot be re-proposed in one step
REASON_CHARS = 160
STRATEGY_MEANING = {
    "explore": "try parameters and directions not tried yet; larger moves are fine",
    "exploit": "refine around the best configuration: small moves on parameters that already gave keeps",
    "focused": "concentrate on the few parameters the guidance prefers",
}
BASELINE_FACTS = ("training_seconds", "num_steps", "peak_vram_mb", "mfu_percent", "num_params_M", "total_tokens_M")


def load_prompt(name: str) -> Template:
    return Template((PROMPTS / f"{name}.md").read_text(encoding="utf-8"))


class ChangeReply(BaseModel):
    changes: dict[str, Any] = Field(min_length=1, max_length=4)
    hypothesis: str = Field(default="", max_length=2000)


class InvalidProposal(ValueError):
    """The researcher's change failed validation twice."""


def spec_view(spec: tgt.ParamSpec, value: Any) -> dict[str, Any]:
    return {"kind": spec.kind, "value": value, "low": spec.low, "high": spec.high, "log": spec.log,
            "pow2": spec.pow2, "pattern": spec.pattern, "comment": spec.comment}


def failure_reason(record: TrialRecord) -> str:
    """Why a trial failed, in one line: the recorded error and the last line of its log."""
    if record.status in (Status.KEEP, Status.DISCARD):
        return ""
    last = next((line.strip() for line in reversed(record.log_tail.splitlines()) if line.strip()), "")
    parts = [p for p in (record.error, last) if p]
    if len(parts) == 2 and parts[1] in parts[0]:
        parts = parts[:1]
    return " | ".join(parts)[:REASON_CHARS]


def history_lines(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> list[str]:
    lines = []
    for record in search_records(history)[-HISTORY_LINES:]:
        score = f"{record.score:.6f}" if record.score is not None else "-"
        changes = json.dumps(dict(record.proposal.changes)) if record.proposal else "{}"
        why = failure_reason(record)
        lines.append(f"#{record.iteration} {changes} → val_bpb {score} [{record.status.value}]" + (f" ({why})" if why else ""))
    return lines


def measured_noise(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> float | None:
    """The noise across training seeds the run has measured (replicates), as the controller pools it."""
    groups: dict[str, list[float]] = {}
    for r in history:
        key = r.info.get("config_key")
        if key and r.finished_ok and r.score is not None:
            groups.setdefault(key, []).append(r.score)
    return pooled_noise(list(groups.values()))


def run_facts(ctx: ProposalContext, settings: dict[str, Any]) -> str:
    """Budget, hardware and noise as far as the run knows them."""
    lines = []
    budget = settings.get("inner_budget")
    done = sum(1 for r in search_records(ctx.history) if r.cycle == ctx.cycle)
    if budget:
        cycles = settings.get("outer_cycles")
        of = f" of {cycles}" if cycles else ""
        lines.append(f"- budget: trial {done + 1} of {budget} in cycle {ctx.cycle + 1}{of}; every trial costs the same time")
    if settings.get("time_budget"):
        lines.append(f"- each trial trains for {settings['time_budget']:g} s of wall time")
    baseline = next((r for r in ctx.history if r.proposal is not None and r.proposal.is_baseline), None)
    if baseline is not None:
        facts = ", ".join(f"{k} {baseline.metrics[k]:g}" for k in BASELINE_FACTS if k in baseline.metrics)
        device = next((line.strip() for line in baseline.log_tail.splitlines() if line.startswith("device:")), "")
        if baseline.score is not None:
            facts = f"val_bpb {baseline.score:.6f}" + (f", {facts}" if facts else "")
        lines.append(f"- baseline trial: {facts or 'no summary'}" + (f" ({device})" if device else ""))
    noise = settings.get("noise_floor")
    measured = measured_noise(ctx.history)
    if noise:
        lines.append(f"- noise floor: a gain must exceed {noise:g} val_bpb to be kept; smaller differences are noise")
    elif measured is not None and settings.get("decision", "noise-aware") == "noise-aware":
        lines.append(f"- noise: val_bpb varies by {measured:.2g} (std) across training seeds of the same train.py; "
                     f"a one-seed gain below about {2 * 2 ** 0.5 * measured:.2g} is noise (near-ties are re-measured)")
    else:
        lines.append("- noise floor: not measured; each trial is one seed, so a gain of a few 0.001 may be noise")
    return "\n".join(lines)


class LLMProposer(Proposer):
    """Asks ``client`` for a change to the incumbent ``train.py``."""

    def __init__(self, *, client: Any, run_dir: Path, original: Path, specs: dict[str, tgt.ParamSpec]) -> None:
        self.client = client
        self.run_dir = Path(run_dir)
        self.original = Path(original)
        self.specs = specs

    def run_settings(self) -> dict[str, Any]:
        """The run's ``settings.json`` (budget, time budget, noise floor), or nothing."""
        try:
            return dict(json.loads((self.run_dir / "settings.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    def incumbent_values(self, ctx: ProposalContext) -> dict[str, Any]:
        path = self.run_dir / ctx.incumbent if ctx.incumbent else self.original
        return tgt.values(path.read_text(encoding="utf-8"))

    def measured_changes(self, ctx: ProposalContext, current: dict[str, Any]) -> list[dict[str, Any]]:
        """Each configuration already measured in this loop, as its changes from the incumbent
        (the researcher is told not to propose them again; the controller refuses them anyway)."""
        return editable.measured_changes(ctx.history, self.run_dir, current, read=tgt.values,
                                         max_changes=MEASURED_MAX_CHANGES)

    def request_context(self, ctx: ProposalContext, current: dict[str, Any]) -> dict[str, Any]:
        search = ctx.search
        active = [p for p in search.get("active_params", self.specs) if p in self.specs and self.specs[p].editable]
        return {
            "params": {n: spec_view(self.specs[n], current[n]) for n in active},
            "active_params": active,
            "frozen_params": list(search.get("frozen_params", ())),
            "strategy": search.get("strategy", "explore"),
            "step_scale": search.get("step_scale", 1.0),
            "max_changes": search.get("max_changes", 1),
            "best": ctx.best_score,
            "history": [
                {"iteration": r.iteration, "changes": r.proposal.changes, "status": r.status.value, "score": r.score}
                for r in search_records(ctx.history)[-HISTORY_LINES:]
            ],
            "param_stats": param_stats(ctx.history),
            "constraints": ctx.guidance.constraints.model_dump(mode="json"),
            "lessons": list(ctx.lessons),
            "feedback": list(ctx.feedback),
            "iteration": ctx.iteration,
        }

    def render(self, context: dict[str, Any], *, ctx: ProposalContext | None = None,
               settings: dict[str, Any] | None = None) -> str:
        params = "\n".join(f"- {tgt.ParamSpec(name=n, kind=v['kind'], default=v['value'], low=v['low'], high=v['high'], pow2=v['pow2'], pattern=v['pattern'], comment=v['comment']).describe()}"
                           for n, v in context["params"].items())
        cons = context["constraints"]
        guidance_lines = [line for line in context.get("guidance_text", "").splitlines() if line.strip()]
        if cons.get("avoid_regions"):
            guidance_lines.append(f"Avoid these regions (recently failed): {', '.join(cons['avoid_regions'])}")
        if cons.get("prefer_params"):
            guidance_lines.append(f"Prefer changing: {', '.join(cons['prefer_params'])}")
        if cons.get("avoid_params"):
            guidance_lines.append(f"Do not change: {', '.join(cons['avoid_params'])}")
        feedback = ""
        if context["feedback"]:
            feedback = "Your previous proposals this iteration were rejected:\n" + "\n".join(f"- {f}" for f in context["feedback"]) + "\n"
        best = context["best"]
        settings = settings or {}
        noise = settings.get("noise_floor")
        history = history_lines(ctx.history) if ctx is not None else self._history_text(context)
        return load_prompt("propose").substitute(
            params=params or "(none)", frozen=", ".join(context["frozen_params"]) or "none",
            strategy=context["strategy"], strategy_meaning=STRATEGY_MEANING.get(context["strategy"], ""),
            step_scale=context["step_scale"], max_changes=context["max_changes"],
            history="\n".join(history) or "(no trials yet)",
            best=f"{best:.6f}" if best is not None else "-",
            lessons="\n".join(f"- {x}" for x in context["lessons"]) or "(none yet)",
            guidance="\n".join(guidance_lines) or "(none)", feedback=feedback,
            keep_rule=f" by more than the noise floor ({noise:g})" if noise else "",
            run=run_facts(ctx, settings) if ctx is not None else "(unknown)",
        )

    @staticmethod
    def _history_text(context: dict[str, Any]) -> list[str]:
        out = []
        for h in context["history"]:
            score = f"{h['score']:.6f}" if h["score"] is not None else "-"
            out.append(f"#{h['iteration']} {json.dumps(h['changes'])} → val_bpb {score} [{h['status']}]")
        return out

    def validate(self, reply: ChangeReply, active: list[str], max_changes: int) -> dict[str, Any]:
        inactive = sorted(set(reply.changes) - set(active))
        if inactive:
            raise ValueError(f"{', '.join(inactive)} not editable now; choose among {', '.join(active)}")
        if len(reply.changes) > max_changes:
            raise ValueError(f"change at most {max_changes} parameter(s), got {len(reply.changes)}")
        return {name: tgt.coerce(self.specs[name], value) for name, value in reply.changes.items()}

    def propose(self, ctx: ProposalContext) -> Proposal:
        current = self.incumbent_values(ctx)
        context = self.request_context(ctx, current)
        # Level 1.5's guidance for this cycle and the mechanisms': the prompt and the offline researcher
        # read the same text
        outer = str(ctx.search.get("guidance") or "").strip()
        context["guidance_text"] = "\n".join(t for t in (outer, ctx.guidance.text) if t)
        context["measured"] = self.measured_changes(ctx, current)
        messages = [{"role": "user", "content": self.render(context, ctx=ctx, settings=self.run_settings())}]
        error = None
        for _round in range(2):
            if error:
                messages = [*messages, {"role": "user", "content": f"That change is invalid: {error}. Propose a valid one."}]
                context = {**context, "feedback": [*context["feedback"], f"invalid: {error}"]}
            reply = self.client.structured(purpose=PURPOSE_PROPOSE, schema=ChangeReply, messages=messages, context=context)
            try:
                changes = self.validate(reply, context["active_params"], context["max_changes"])
            except ValueError as exc:
                error = str(exc)
                continue
            changes = {k: v for k, v in changes.items() if v != current[k]}
            if not changes:
                error = "the proposed values equal the current ones"
                continue
            return Proposal(changes=changes, hypothesis=reply.hypothesis,
                            region=tgt.region(self.specs, current, changes), origin="proposer")
        raise InvalidProposal(f"researcher proposed an invalid change twice: {error}")
