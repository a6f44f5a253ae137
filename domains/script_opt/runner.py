"""script_opt Level 1: propose new values for the script's constants, run the command, read the metric."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, Field

from core import editable
from core.plugins import ExecContext, Executor, Proposer
from core.pool import slot_workdir
from core.process import FAIL, SUMMARY_WINDOW_CHARS, read_tail, run_command
from core.records import ExecutionResult, Proposal, ProposalContext
from core.state import atomic_write_text

PURPOSE_PROPOSE = "script_opt.propose"
PROMPTS = Path(__file__).parent / "prompts"
HISTORY_ROWS = 20


def load_prompt(name: str) -> Template:
    return Template((PROMPTS / f"{name}.md").read_text(encoding="utf-8"))


class ChangeReply(BaseModel):
    changes: dict[str, float | int | bool] = Field(min_length=1)
    hypothesis: str = Field(default="", max_length=1000)


def region(current: dict[str, Any], changes: dict[str, Any]) -> str:
    """``NAME:up`` / ``NAME:down`` / ``NAME:set`` per changed constant, joined with ``+``."""
    parts = []
    for name in sorted(changes):
        old, new = current.get(name), changes[name]
        numeric = isinstance(old, (int, float)) and not isinstance(old, bool) and not isinstance(new, bool)
        parts.append(f"{name}:{('up' if new > old else 'down') if numeric else 'set'}")
    return "+".join(parts)


class ConstantProposer(Proposer):
    """Asks the researcher for new values of at most ``max_changes`` active constants."""

    def __init__(self, *, client: Any, run_dir: Path, original: Path, constants: dict[str, editable.Constant],
                 metric: str, direction: str, command: str) -> None:
        self.client = client
        self.run_dir = run_dir
        self.original = original
        self.constants = constants
        self.metric = metric
        self.direction = direction
        self.command = command

    def measured(self, ctx: ProposalContext, current: dict[str, Any]) -> list[dict[str, Any]]:
        """Each configuration already measured, as its changes from the incumbent (never re-proposed)."""
        return editable.measured_changes(ctx.history, self.run_dir, current)

    def propose(self, ctx: ProposalContext) -> Proposal:
        parent = self.run_dir / ctx.incumbent if ctx.incumbent else self.original
        current = editable.values(parent.read_text(encoding="utf-8"))
        search = ctx.search
        avoid = set(ctx.guidance.constraints.avoid_params)
        active = [n for n in search.get("active_params", self.constants) if n in self.constants and n not in avoid]
        active = active or [n for n in search.get("active_params", self.constants) if n in self.constants]
        step = ctx.guidance.constraints.step_scale or search.get("step_scale", 1.0)
        max_changes = int(search.get("max_changes", 1))
        history = [{"changes": dict(r.proposal.changes), "score": r.score, "status": r.status.value, "error": r.error[:120]}
                   for r in ctx.history[-HISTORY_ROWS:] if r.proposal is not None and not r.proposal.is_baseline]
        context = {"constants": {n: {"value": current[n], "kind": self.constants[n].kind.__name__,
                                     "comment": self.constants[n].comment} for n in active},
                   "history": history, "direction": self.direction, "metric": self.metric, "step_scale": step,
                   "max_changes": max_changes, "strategy": search.get("strategy", "explore"),
                   "avoid_regions": list(ctx.guidance.constraints.avoid_regions), "feedback": list(ctx.feedback),
                   "prefer": list(ctx.guidance.constraints.prefer_params), "measured": self.measured(ctx, current)}
        guidance = "\n".join(t for t in (search.get("guidance", ""), ctx.guidance.text) if t)
        context["guidance"] = guidance  # Level 1.5's and the mechanisms': the offline researcher reads it too
        prompt = load_prompt("propose").substitute(
            metric=self.metric, better="lower" if self.direction == "minimize" else "higher", command=self.command,
            constants="\n".join(f"- {self.constants[n].describe()}, now {current[n]!r}" for n in active),
            strategy=context["strategy"], step_scale=step, max_changes=max_changes,
            guidance=f"Guidance: {guidance}\n" if guidance else "",
            history="\n".join(f"- {h['changes']} → {h['score']} [{h['status']}] {h['error']}" for h in history) or "(none)",
            feedback=("Rejected so far:\n" + "\n".join(f"- {f}" for f in ctx.feedback)) if ctx.feedback else "")
        reply = self.client.structured(purpose=PURPOSE_PROPOSE, schema=ChangeReply,
                                       messages=[{"role": "user", "content": prompt}], context=context)
        unknown = sorted(set(reply.changes) - set(active))
        if unknown:
            raise ValueError(f"proposal changes {', '.join(unknown)}, which are not active; active: {', '.join(active)}")
        changes = {n: editable.coerce(self.constants[n], v) for n, v in reply.changes.items() if v != current[n]}
        if not changes or len(changes) > max_changes:
            raise ValueError(f"a proposal must change between 1 and {max_changes} constant(s); got {len(changes)}")
        return Proposal(changes=changes, hypothesis=reply.hypothesis, region=region(current, changes))


def read_metric(output: str, metric: str, pattern: str | None) -> float | None:
    """The last value of the metric in ``output``: the first group of ``pattern`` (a regex), or a
    ``metric: value`` / ``metric = value`` line."""
    regex = re.compile(pattern, re.MULTILINE) if pattern else \
        re.compile(rf"^\s*{re.escape(metric)}\s*[:=]\s*(\S+)\s*$", re.MULTILINE)
    for match in reversed(list(regex.finditer(output))):
        try:
            return float(match.group(1) if match.groups() else match.group(0))
        except ValueError:
            continue
    return None


class ScriptExecutor(Executor):
    """Writes the candidate script (incumbent + changes) into the working copy and runs the command.
    A trial's training seed (a replicate's :attr:`ExecContext.seed`) reaches it as ``BILEVEL_SEED``."""

    seeded = True

    def __init__(self, *, workdir: Path, original: Path, file: str, command: str, metric: str,
                 pattern: str | None, timeout_s: float, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.original = original
        self.file = file
        self.command = shlex.split(command)
        self.metric = metric
        self.pattern = pattern
        self.timeout_s = timeout_s
        self.env = env

    def config_key(self, proposal: Proposal, incumbent: str | None, run_dir: Path) -> Any:
        parent = run_dir / incumbent if incumbent else self.original
        return {"constants": editable.values(editable.apply_changes(parent.read_text(encoding="utf-8"),
                                                                    dict(proposal.changes)))}

    def execute(self, proposal: Proposal, ctx: ExecContext) -> ExecutionResult:
        parent = ctx.run_dir / ctx.incumbent if ctx.incumbent else self.original
        parent_src = parent.read_text(encoding="utf-8")
        env = self.env if ctx.seed is None else {**self.env, "BILEVEL_SEED": str(ctx.seed)}
        try:
            candidate = editable.apply_changes(parent_src, dict(proposal.changes))
        except ValueError as exc:
            return ExecutionResult(status="crash", log_tail=f"edit rejected: {exc}", detail={"error": f"edit rejected: {exc}"})
        artifact = ctx.trial_dir / Path(self.file).name
        atomic_write_text(artifact, candidate)
        atomic_write_text(ctx.trial_dir / "diff.patch", editable.diff(parent_src, candidate, self.file))
        workdir = slot_workdir(self.workdir)  # with --parallel K, each slot has its own copy
        atomic_write_text(workdir / self.file, candidate)
        log_path = ctx.trial_dir / "run.log"
        code, timed_out, seconds = run_command(self.command, cwd=workdir, log_path=log_path,
                                               timeout_s=self.timeout_s, env=env)
        rel, tail = str(artifact.relative_to(ctx.run_dir)), read_tail(log_path)
        if timed_out:
            return ExecutionResult(status="timeout", artifact=rel, log_tail=tail, duration_s=seconds,
                                   detail={"error": f"killed after {self.timeout_s:g}s"})
        value = read_metric(read_tail(log_path, SUMMARY_WINDOW_CHARS), self.metric, self.pattern)
        if value is None or not math.isfinite(value) or FAIL.search(tail):
            status = "fail" if FAIL.search(tail) or value is not None else "crash"
            return ExecutionResult(status=status, artifact=rel, log_tail=tail, duration_s=seconds,
                                   detail={"error": f"no finite {self.metric} in the output (exit {code})"})
        return ExecutionResult(status="ok", metrics={self.metric: value}, artifact=rel, log_tail=tail,
                               duration_s=seconds, detail={"exit_code": code, "exec_seconds": round(seconds, 3)})
