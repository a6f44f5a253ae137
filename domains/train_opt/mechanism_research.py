"""Level 2 for train_opt: research new search mechanisms and hot-load them into the running loop.

Level 2 is the same :class:`~core.inner_loop.InnerLoopController` as Level 1, run over mechanisms.
This module is the domain's part of it: the designer. A candidate is a mechanism design — a
library template from :mod:`core.mechanisms` with parameters, or full source written by the
researcher (:class:`MechanismDesigner`). Executing, scoring and keeping or reverting it are core's
(:mod:`core.level2`: load in a sandboxed worker, attach to the **running** Level-1 controller, run
the next inner cycle as a paired trial — in each pair of iterations the design steers one and its
parent set the other — and keep it only if its arm gained more, beyond the noise). Pairing within the cycle
matters: early cycles harvest the easy gains, so comparing with an earlier cycle would revert
designs for being late, not for being worse.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.inner_loop import InnerLoopController
from core.mechanisms import TEMPLATES, render_template
from core.plugins import Proposer
from core.records import Proposal, ProposalContext
from domains.train_opt.design_prompt import render_design_prompt
from domains.train_opt.offline import PURPOSE_DESIGN
from domains.train_opt.trace import diagnose

log = logging.getLogger(__name__)


class DesignReply(BaseModel):
    template: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(default=None, max_length=40_000)
    rationale: str = Field(default="", max_length=2000)


DOMAIN_FILLED = ("space",)  # template parameters the domain fills in: the designer never writes them
EVIDENCE_PATH = Path(__file__).parent / "mechanisms" / "evidence.json"
EVIDENCE_COMMAND = ("python benchmarks/mechanisms_suite.py --targets lr_bowl,coupled,batch,cliff --seeds 20 "
                    "--first-seed 1000 --jobs 2 --evidence domains/train_opt/mechanisms/evidence.json")


class Measured(BaseModel):
    """One template's measured effect: attached to Level 1 vs not, paired runs on the cheap suite's
    training targets (``benchmarks/mechanisms_suite.py --evidence``, offline stand-in researcher)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    delta_regret: float  # mean paired difference of the final regret, with minus without (< 0: it helped)
    won: int = Field(ge=0)
    lost: int = Field(ge=0)
    p_sign: float = Field(ge=0, le=1)


class EvidenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    about: str
    targets: list[str]
    seeds: list[int]
    trials: int
    templates: dict[str, Measured]


@cache
def template_evidence(path: Path = EVIDENCE_PATH) -> dict[str, dict[str, Any]]:
    """Per template, its measured effect (``{}`` without the file). A damaged file is one clear error."""
    if not path.is_file():
        return {}
    try:
        data = EvidenceFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"{path.name} is damaged ({first}); regenerate it: {EVIDENCE_COMMAND}") from None
    return {name: m.model_dump() for name, m in data.templates.items()}


def template_menu() -> dict[str, dict[str, Any]]:
    """The library templates as the designer sees them, each with its measured effect (``None`` if
    not measured)."""
    evidence = template_evidence()
    return {name: {"addresses": meta["addresses"], "description": meta["description"],
                   "default_params": {k: v for k, v in meta["params"].items() if k not in DOMAIN_FILLED},
                   "evidence": evidence.get(name)}
            for name, meta in TEMPLATES.items()}


def design_region(template: str | None, source: str) -> str:
    if template:
        return f"template:{template}"
    return f"custom:{hashlib.sha256(source.encode()).hexdigest()[:10]}"


class MechanismDesigner(Proposer):
    """Asks the researcher for a mechanism addressing the diagnosed bottleneck of the inner search.

    ``space`` gives the parameter space (JSON) that the proposing templates (surrogate, pattern,
    multiscale) need in their ``space`` parameter; the designer fills it in, so a design can propose
    values the target accepts without the researcher copying the space into its answer."""

    def __init__(self, *, client: Any, inner: InnerLoopController, inner_budget: int,
                 space: Callable[[], str] | None = None) -> None:
        self.client = client
        self.inner = inner
        self.inner_budget = inner_budget
        self.space = space

    def propose(self, ctx: ProposalContext) -> Proposal:
        active = list(self.inner.search.active_params)  # the typed SearchConfig in force
        tried = [{"region": r.proposal.region, "status": r.status.value, "score": r.score, "iteration": r.iteration}
                 for r in ctx.history if r.proposal is not None and not r.proposal.is_baseline]
        # a template already attached (kept) is not offered again — a second copy adds nothing — unless
        # it proposes: the next design is attached in front and, if it proposes too, answers in its
        # place, so designing the kept proposer again is how to keep it proposing
        attached = {m.name for m in self.inner.mechanisms}
        active_templates = sorted({r.proposal.changes["template"] for r in ctx.history
                                   if r.proposal is not None and r.proposal.changes.get("template")
                                   and r.info.get("mechanism") in attached})
        menu = {k: v for k, v in template_menu().items()
                if k not in active_templates or "propose" in TEMPLATES[k]["hooks"]} or template_menu()
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
            params = dict(reply.params)
            wants_space = "space" in TEMPLATES.get(reply.template, {}).get("params", {})
            if wants_space and not params.get("space") and self.space is not None:
                params["space"] = self.space()
            try:
                source, template = render_template(reply.template, params), reply.template
            except ValueError as exc:
                raise ValueError(f"design names an unusable template: {exc}") from exc
        else:
            raise ValueError("design has neither a template nor source")
        return Proposal(changes={"template": template, "params": reply.params}, payload=source,
                        hypothesis=reply.rationale, region=design_region(template, source), origin="designer")
