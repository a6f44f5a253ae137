"""The ablation's groups, and what one repeat of a group is: a train_opt run plus its results row.

The rules that make groups comparable — every group runs :class:`~domains.train_opt.session.TrainSession`'s one
schedule: a baseline, then ``cycles`` outer cycles of ``iterations // cycles`` Level-1 trials, from
the same ``train.py``, with seed ``BASE + repeat`` for repeat ``repeat`` in every group. A level that
is off does nothing at its slot; history, best and incumbent carry across cycles in every group.
The references (RANDOM, LOCAL, TPE, CMAES) swap only the Level-1 proposer and search a bounded
local box with the target's constraints built in (:mod:`experiments.classic`). With
``endpoint_seeds`` > 0 a finished repeat re-measures the baseline and its final incumbent on held-out
training seeds (:func:`measure_endpoint`), the unbiased Δ of the row's ``endpoint``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.errors import ConfigError, UserError
from core.records import Status, TrialRecord
from core.state import JOURNAL_NAME, RunDir, atomic_write_json
from domains.train_opt.session import Level, TrainSession, TrainSettings, make_settings, summarize

RESULT_KEYS = ("group", "repeat", "seed", "run_dir", "levels", "provider", "model", "baseline", "best", "delta",
               "endpoint", "iterations", "counts", "usage", "wall_s", "trace", "mechanisms", "settings", "finished_at")
MECHANISM_KEYS = ("cycle", "region", "verdict", "retest_of", "score", "parent_score", "name", "hook_calls", "hook_effects")
NO_LLM = "none"


@dataclass(frozen=True)
class Group:
    name: str
    levels: tuple[Level, ...]
    search: Literal["random", "local", "tpe", "cmaes"] | None = None
    description: str = ""

    @property
    def uses_llm(self) -> bool:
        return self.search is None


GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("A", ("1",), description="Level 1: the researcher proposes hyperparameter changes"),
    Group("B", ("1", "1.5"), description="Levels 1 + 1.5: plus outer patches to the search config"),
    Group("C", ("1", "1.5", "2"), description="Levels 1 + 1.5 + 2: plus generated mechanisms"),
    Group("D", ("1", "2"), description="Levels 1 + 2: generated mechanisms, no config patches"),
    Group("RANDOM", ("1",), search="random", description="random search over the references' local box (no LLM)"),
    Group("LOCAL", ("1",), search="local", description="coordinate search with an adaptive step (no LLM)"),
    Group("TPE", ("1",), search="tpe", description="Optuna TPE, multivariate, baseline enqueued (no LLM)"),
    Group("CMAES", ("1",), search="cmaes", description="Optuna CMA-ES, baseline enqueued (no LLM)"),
)}
ENDPOINT_SEED_BASE = 10_000  # held-out training seeds: never a repeat's own seed
ENDPOINT = "endpoint.json"


def parse_groups(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().upper() for p in text.split(",") if p.strip()))
    bad = [n for n in names if n not in GROUPS]
    if bad or not names:
        raise ConfigError(f"--groups {text!r} is invalid; use a comma list of {', '.join(GROUPS)} (e.g. A,B,C,D)")
    return names


class Plan(BaseModel):
    """The settings every repeat of an ablation shares (what makes two runs comparable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int
    cycles: int
    time_budget: float | None = None
    flop_budget: float | None = None
    endpoint_seeds: int = 0
    parallel: int = 1
    provider: str = "offline"
    model: str | None = None
    target_dir: str | None = None
    seed: int = 0
    threads: int | None = None
    trial_timeout_s: float | None = None
    trial_memory_gb: float | None = None

    def run_settings(self, group: Group, repeat: int) -> TrainSettings:
        command = memory_capped_command(self.trial_memory_gb) if self.trial_memory_gb else None
        llm = {"provider": self.provider, "model": self.model} if group.uses_llm else {"provider": "offline"}
        return make_settings(levels=group.levels, inner_budget=self.iterations // self.cycles, outer_cycles=self.cycles,
                             time_budget=self.time_budget, flop_budget=self.flop_budget, target_dir=self.target_dir, seed=self.seed + repeat,
                             threads=self.threads, trial_timeout_s=self.trial_timeout_s, command=command,
                             parallel=self.parallel, **llm)

    def row_settings(self) -> dict[str, Any]:
        return {"time_budget": self.time_budget, "flop_budget": self.flop_budget,
                "endpoint_seeds": self.endpoint_seeds, "parallel": self.parallel, "cycles": self.cycles, "iterations": self.iterations,
                "threads": self.threads, "target": self.target_dir or "bundled"}


# Runs train.py under an address-space limit: on a CPU box a sampled giant model then fails fast with
# a MemoryError (a crash) instead of swapping the machine to a halt. Same for every group.
_CAPPED = ("import resource, runpy, sys; lim = int(float(sys.argv[1]) * 2**30); "
           "resource.setrlimit(resource.RLIMIT_AS, (lim, lim)); sys.argv = ['train.py']; "
           "runpy.run_path('train.py', run_name='__main__')")


def memory_capped_command(gb: float) -> list[str]:
    import sys

    return [sys.executable, "-c", _CAPPED, f"{gb:g}"]


@dataclass(frozen=True)
class RepeatSpec:
    """One repeat to run; plain data so it crosses process and Ray boundaries."""

    out: str
    group: str
    repeat: int
    plan: dict[str, Any]

    @property
    def name(self) -> str:
        return run_name(self.group, self.repeat)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / "runs" / self.name

    @property
    def seed(self) -> int:
        return int(self.plan["seed"]) + self.repeat


def run_name(group: str, repeat: int) -> str:
    return f"{group}-r{repeat}"


def session_class(group: Group) -> type[TrainSession]:
    from experiments.classic import session_class as classic

    return classic(group.search)


def prepare_run_dir(spec: RepeatSpec, run_dir: Path | None = None) -> Path:
    """Create the repeat's run directory (target copied, settings saved, nothing run) unless it
    exists. Done by the parent, so a bad target or a missing API key fails before any work."""
    path = run_dir or spec.run_dir
    if path.exists() and not (path / JOURNAL_NAME).exists():
        shutil.rmtree(path)  # a start that died before its first journal line: nothing to keep
    if path.exists():
        return path
    group = GROUPS[spec.group]
    settings = Plan.model_validate(spec.plan).run_settings(group, spec.repeat)
    session = session_class(group).start(settings, path)
    session.close()
    return path


def run_repeat(spec: RepeatSpec, run_dir: Path | None = None) -> dict[str, Any]:
    """Run (or resume) one repeat to the end and return its results row."""
    group = GROUPS[spec.group]
    path = prepare_run_dir(spec, run_dir)
    session = session_class(group).resume(path)
    try:
        summary = session.run()
        if summary.get("complete"):
            measure_endpoint(session, Plan.model_validate(spec.plan).endpoint_seeds)
    finally:
        session.close()
    if not summary.get("complete"):
        raise UserError(f"{spec.name} stopped before its budget was spent ({summary.get('stopped')}); "
                        f"rerun the same command to resume it")
    return make_row(spec, path)


def measure_endpoint(session: TrainSession, seeds: int) -> dict[str, Any]:
    """Re-measure the baseline and the final incumbent on ``seeds`` held-out training seeds.

    The search's own figures are biased (its best is the minimum over many noisy draws, the baseline
    is one draw); the endpoint is not: both configurations are trained afresh on seeds no trial of
    the run used. Each measurement is saved to ``endpoint.json`` as it finishes, so an interrupted
    endpoint resumes where it stopped."""
    from core.plugins import ExecContext
    from core.records import Proposal
    from domains.train_opt.executor import TrainExecutor

    run, settings = session.rundir, session.settings
    path = run.path / ENDPOINT
    done: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    incumbent = session.inner.incumbent
    done.setdefault("incumbent", incumbent)
    for which, artifact in (("baseline", None), ("best", incumbent)):
        values = done.setdefault(which, {})
        for k in range(seeds):
            seed = ENDPOINT_SEED_BASE + k
            if str(seed) in values:
                continue
            env = {**settings.trial_env(), "BILEVEL_SEED": str(seed)}
            executor = TrainExecutor(workdir=run.path / "target", original=session.original, command=settings.command,
                                     timeout_s=settings.timeout(), env=env, progress=None)
            trial_dir = run.path / "endpoint" / f"{which}-s{seed}"
            trial_dir.mkdir(parents=True, exist_ok=True)
            result = executor.execute(Proposal(origin="endpoint", hypothesis="re-measured on a held-out seed"),
                                      ExecContext(loop="endpoint", iteration=k, cycle=0, run_dir=run.path,
                                                  trial_dir=trial_dir, incumbent=artifact))
            value = result.metrics.get(executor.metric) if result.status == "ok" else None
            values[str(seed)] = value
            atomic_write_json(path, done)
    return done


def endpoint_of(run_dir: Path) -> dict[str, Any] | None:
    """The endpoint figures of a finished repeat: per-seed values and Δ = mean(best) − mean(baseline)."""
    path = run_dir / ENDPOINT
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    seeds = sorted(set(data.get("baseline", {})) & set(data.get("best", {})), key=int)
    base = [data["baseline"][s] for s in seeds]
    best = [data["best"][s] for s in seeds]
    ok = seeds and all(v is not None for v in base + best)
    delta = round(sum(best) / len(best) - sum(base) / len(base), 6) if ok else None
    return {"seeds": [int(s) for s in seeds], "baseline": base, "best": best, "delta": delta}


def _model_id(provider: str, model: str | None) -> tuple[str, str | None]:
    from core.llm.registry import resolve_model_id

    try:
        resolved = resolve_model_id(provider, model)
        return resolved.provider, resolved.model
    except UserError:
        return provider, model


def journal_wall_s(run: RunDir) -> float:
    """Seconds the run was actually running: each session (start or resume → its last event)."""
    spans, first, last = 0.0, None, None
    for event in run.journal.events():
        ts = datetime.fromisoformat(event["ts"]).timestamp()
        if event["type"] == "run_resumed" and first is not None:
            spans += last - first
            first = None
        first = ts if first is None else first
        last = ts
    return round(spans + ((last - first) if first is not None else 0.0), 3)


def trace(records: list[TrialRecord]) -> list[float | None]:
    """Best-so-far score after the baseline and after each search trial."""
    baseline = next((r for r in records if r.proposal is not None and r.proposal.is_baseline), None)
    best = baseline.score if baseline else None
    out = [best]
    for record in records:
        if record is baseline or record.iteration == 0:
            continue
        if record.status is Status.KEEP and record.score is not None and (best is None or record.score < best):
            best = record.score
        out.append(best)
    return out


def make_row(spec: RepeatSpec, run_dir: Path | None = None) -> dict[str, Any]:
    """The results row of a finished repeat, from its journal alone."""
    group = GROUPS[spec.group]
    plan = Plan.model_validate(spec.plan)
    with RunDir.open(run_dir or spec.run_dir) as run:
        summary = summarize(run)
        records = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="inner")]
        wall = journal_wall_s(run)
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    for level in summary["usage"].values():
        for key in usage:
            usage[key] += level[key]
    usage["cost_usd"] = round(usage["cost_usd"], 6)
    provider, model = _model_id(plan.provider, plan.model) if group.uses_llm else (NO_LLM, None)
    row = {
        "group": spec.group, "repeat": spec.repeat, "seed": spec.seed, "run_dir": f"runs/{spec.name}",
        "levels": list(group.levels) if group.uses_llm else [], "provider": provider, "model": model,
        "baseline": summary["baseline"], "best": summary["best"], "delta": summary["delta"],
        "endpoint": endpoint_of(run_dir or spec.run_dir),
        "iterations": summary["iterations"],
        "counts": {s.value: summary["counts"].get(s.value, 0) for s in Status},
        "usage": usage, "wall_s": wall, "trace": trace(records),
        "mechanisms": [{k: m.get(k) for k in MECHANISM_KEYS} for m in summary["mechanisms"]],
        "settings": plan.row_settings(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    assert tuple(row) == RESULT_KEYS
    return row
