"""script_opt's outer levels: Level 1.5 patches core's typed ``SearchConfig``; Level 2 designs a
mechanism from core's templates (or writes one) for core's :class:`~core.level2.MechanismInstaller`."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from core.domain import ConfigLevel
from core.errors import ConfigError, ProviderError
from core.inner_loop import InnerLoopController
from core.mechanisms import TEMPLATES, render_template, template_source
from core.plugins import Proposer
from core.records import Proposal, ProposalContext, Status, TrialRecord
from core.search import ConfigPatch, SearchConfig, apply_patch, guard_patch, untried_directions
from core.state import Journal
from domains.script_opt.runner import load_prompt

log = logging.getLogger(__name__)
PURPOSE_ANALYZE = "script_opt.analyze"
PURPOSE_DESIGN = "script_opt.design"


def per_constant(records: list[TrialRecord]) -> dict[str, dict[str, int]]:
    """Tries, keeps and crashes per constant over ``records``."""
    stats: dict[str, Counter] = {}
    for r in records:
        for name in (r.proposal.changes if r.proposal else {}):
            c = stats.setdefault(name, Counter())
            c["tries"] += 1
            c["keeps"] += r.status is Status.KEEP
            c["crashes"] += r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT)
    return {name: {k: int(c[k]) for k in ("tries", "keeps", "crashes")} for name, c in stats.items()}


class ScriptConfigLevel(ConfigLevel):
    """Level 1.5: the analyzer reads the trace and returns a validated patch, journaled as ``config``
    (or ``config_rejected``: the configuration stays)."""

    applied, rejected = "config", "config_rejected"

    def __init__(self, *, client: Any, journal: Journal, inner: InnerLoopController, initial: SearchConfig) -> None:
        self.client = client
        self.journal = journal
        self.inner = inner
        self._initial = initial

    def initial(self) -> SearchConfig:
        return self._initial

    def config_of(self, event: dict[str, Any]) -> SearchConfig:
        return SearchConfig.model_validate(event["config"])

    def load(self, data: Any) -> SearchConfig:
        return SearchConfig.model_validate(data)

    def install(self, config: SearchConfig) -> None:
        self.inner.search = config

    def patch(self, cycle: int, config: SearchConfig) -> None:
        records = self.inner.records(cycle)
        untried = untried_directions(self.inner.history, config.active_params)
        context = {"config": config.model_dump(mode="json"), "stats": per_constant(self.inner.records()),
                   "untried": untried,
                   "cycle_stats": per_constant(records), "cycle": cycle,
                   "history": [{"changes": dict(r.proposal.changes), "status": r.status.value, "score": r.score}
                               for r in records if r.proposal is not None]}
        prompt = load_prompt("analyze").substitute(
            config=json.dumps(context["config"], indent=1), stats=json.dumps(context["stats"], indent=1),
            history="\n".join(f"- {h['changes']} → {h['score']} [{h['status']}]" for h in context["history"]) or "(none)",
            max_freeze=config.max_freeze_per_cycle, min_active=config.min_active,
            untried="\n".join(f"- {p}: {', '.join(d)}" for p, d in untried.items()) or "(none: every direction was tried)")
        try:
            patch = self.client.structured(purpose=PURPOSE_ANALYZE, schema=ConfigPatch,
                                           messages=[{"role": "user", "content": prompt}], context=context)
            patch, notes = guard_patch(patch, untried)  # never freeze a constant with an untried direction
            new = apply_patch(config, patch)
        except (ConfigError, ProviderError) as exc:  # an unusable answer, or none after the retries
            log.warning("Level 1.5 patch rejected after cycle %d: %s", cycle, exc)
            self.journal.append({"type": self.rejected, "cycle": cycle, "error": str(exc)})
            return
        self.journal.append({"type": self.applied, "cycle": cycle, "patch": patch.model_dump(mode="json"),
                             "config": new.model_dump(mode="json"), **({"not_frozen": notes} if notes else {})})


class DesignReply(BaseModel):
    template: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(default=None, max_length=40_000)
    rationale: str = Field(default="", max_length=2000)


def diagnose(records: list[TrialRecord]) -> dict[str, float]:
    """Shares of the recent search that show each weakness a library template addresses."""
    recent = [r for r in records if r.proposal is not None and not r.proposal.is_baseline][-12:]
    if not recent:
        return {"repeats": 0.0, "narrow": 0.0, "plateau": 0.0, "crashes/overshoot": 0.0}
    regions = Counter(r.proposal.region for r in recent if r.status is not Status.KEEP)
    names = Counter(n for r in recent for n in r.proposal.changes)
    n = len(recent)
    return {"repeats": round(sum(c - 1 for c in regions.values() if c > 1) / n, 3),
            "narrow": round(max(names.values(), default=0) / n, 3),
            "plateau": round(sum(r.status is not Status.KEEP for r in recent) / n, 3),
            "crashes/overshoot": round(sum(r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT) for r in recent) / n, 3)}


class MechanismDesigner(Proposer):
    """Asks the researcher for a mechanism aimed at the inner search's main weakness."""

    def __init__(self, *, client: Any, inner: InnerLoopController) -> None:
        self.client = client
        self.inner = inner

    def propose(self, ctx: ProposalContext) -> Proposal:
        tried = [{"region": r.proposal.region, "status": r.status.value, "error": r.error[:160]}
                 for r in ctx.history if r.proposal is not None and not r.proposal.is_baseline]
        menu = {name: {"addresses": meta["addresses"], "description": meta["description"], "params": meta["params"]}
                for name, meta in TEMPLATES.items()}
        context = {"diagnosis": diagnose(self.inner.history), "templates": menu, "tried": tried,
                   "avoid": list(ctx.guidance.constraints.avoid_regions), "feedback": list(ctx.feedback)}
        prompt = load_prompt("design").substitute(
            diagnosis=json.dumps(context["diagnosis"]), example=template_source("tabu"),
            templates="\n".join(f"- {n}: {m['description']} [addresses {m['addresses']}; params {m['params']}]"
                                for n, m in menu.items()),
            tried="\n".join(f"- {t['region']}: {t['status']} {t['error']}" for t in tried) or "(none)",
            feedback=("Rejected so far:\n" + "\n".join(f"- {f}" for f in ctx.feedback)) if ctx.feedback else "")
        reply = self.client.structured(purpose=PURPOSE_DESIGN, schema=DesignReply,
                                       messages=[{"role": "user", "content": prompt}], context=context)
        if reply.source:
            source, region = reply.source, f"custom:{hashlib.sha256(reply.source.encode()).hexdigest()[:10]}"
        elif reply.template:
            source, region = render_template(reply.template, reply.params), f"template:{reply.template}"
        else:
            raise ValueError("a design needs a template or source")
        return Proposal(changes={"template": reply.template, "params": reply.params}, payload=source,
                        hypothesis=reply.rationale, region=region, origin="designer")
