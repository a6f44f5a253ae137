"""The Level-2 designer's prompt for train_opt: protocol reference, code rules, tried designs.

The rules it states are those of the isolated host: the policy's import allow-list
(:data:`core.policy.DEFAULT_ALLOWED`), what the lint refuses and why, the worker's isolation, the
validation of what a hook returns (:mod:`core.host`) and the hook deadline. Tried designs are listed
by name with their verdict, their cycle's gain and — for a failed one — the stage, rule and error the
loader or the hooks reported, plus the last line of its traceback, so a designer can fix what broke.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from core.host import MAX_CHANGES, MAX_STR
from core.level2 import design_verdict
from core.policy import DEFAULT_ALLOWED
from core.records import ProposalContext, Status, TrialRecord

PROMPT = Path(__file__).parent / "prompts" / "design.md"
TRIED_LINES = 10
REASON_CHARS = 240

EXAMPLE = '''\
from core.mechanism import Mechanism
from core.records import FilterVerdict, Status


class CrashCooldown(Mechanism):
    """Reject moves on a parameter for a few iterations after it crashed a trial."""

    name = "crash_cooldown"

    def __init__(self, **params):
        super().__init__(**params)
        self.cooldown = int(params.get("iterations", 3))
        self.blocked = {}  # parameter -> last iteration it stays blocked

    def observe(self, record):
        if record.proposal is not None and record.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT):
            for name in record.proposal.changes:
                self.blocked[name] = record.iteration + self.cooldown

    def filter(self, proposal, ctx):
        hot = [n for n in proposal.changes if self.blocked.get(n, -1) >= ctx.iteration]
        if hot:
            return FilterVerdict.reject(f"{', '.join(hot)} crashed recently; change another parameter")
        return None
'''


def design_name(record: TrialRecord) -> str:
    """A tried design's name: the mechanism it loaded as, else its template, else its region."""
    proposal = record.proposal
    named = record.info.get("mechanism")
    if isinstance(named, str) and named:
        return named
    if proposal is not None and proposal.changes.get("template"):
        return f"template {proposal.changes['template']}"
    return proposal.region if proposal is not None else "?"


def verdict(record: TrialRecord) -> str:
    said = design_verdict(record)
    if said == "kept":
        return "kept"
    if said == "retest":
        return "inconclusive (within the noise either way): tried again in the next cycle"
    if said == "reverted":
        return "reverted (its iterations gained no more than its parent's, beyond the noise)"
    return f"failed ({record.status.value})"


def failure(record: TrialRecord) -> str:
    """Stage, rule, error and the traceback's last line of a design that did not run."""
    if record.status in (Status.KEEP, Status.DISCARD):
        return ""
    parts = []
    stage, rule = record.info.get("stage"), record.info.get("rule")
    if stage:
        parts.append(f"stage {stage}" + (f", rule {rule}" if rule else ""))
    if record.error:
        parts.append(record.error)
    last = next((line.strip() for line in reversed(record.log_tail.splitlines()) if line.strip()), "")
    if last and last not in record.error:
        parts.append(last)
    return "; ".join(parts)[:REASON_CHARS]


def tried_lines(history: tuple[TrialRecord, ...] | list[TrialRecord]) -> list[str]:
    lines = []
    for record in [r for r in history if r.proposal is not None and not r.proposal.is_baseline][-TRIED_LINES:]:
        gain = f"gain {record.score:+.6f}" if record.score is not None else "no gain measured"
        why = failure(record)
        lines.append(f"- #{record.iteration} {design_name(record)}: {verdict(record)}, {gain}" + (f". Why: {why}" if why else ""))
    return lines


def measured(evidence: dict[str, Any] | None) -> str:
    """A template's measured effect, as the menu line shows it."""
    if not evidence:
        return "not measured"
    return (f"measured: Δregret {evidence['delta_regret']:+.4f} vs none, won/lost {evidence['won']}/{evidence['lost']}, "
            f"p {evidence['p_sign']:g}")


def render_design_prompt(context: dict[str, Any], ctx: ProposalContext, *, hook_timeout_s: float = 5.0) -> str:
    templates = "\n".join(
        f"- {n}: {m['description']} [addresses: {m['addresses']}; params {json.dumps(m['default_params'])}; "
        f"{measured(m.get('evidence'))}]"
        for n, m in context["templates"].items()
    )
    diagnosis = ", ".join(f"{k} {v:.2f}" for k, v in context["diagnosis"].items())
    feedback = ("Rejected so far this iteration:\n" + "\n".join(f"- {f}" for f in ctx.feedback) + "\n") if ctx.feedback else ""
    return Template(PROMPT.read_text(encoding="utf-8")).substitute(
        inner_budget=context.get("inner_budget", "?"),
        allowed=", ".join(sorted(m for m in DEFAULT_ALLOWED if m != "__future__")),
        max_changes=MAX_CHANGES,
        max_str=MAX_STR,
        hook_timeout=f"{hook_timeout_s:g}",
        diagnosis=diagnosis or "(no trials yet)",
        tried="\n".join(tried_lines(ctx.history)) or "(none yet)",
        templates=templates or "(none)",
        example=EXAMPLE.rstrip(),
        feedback=feedback,
    )
