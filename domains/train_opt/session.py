"""A train_opt run: the target copy, the clients, the controllers of every level, the cycle schedule.

Schedule for ``outer_cycles`` cycles of ``inner_budget`` Level-1 trials each (after one baseline):

    cycle 0:      [L2 baseline = the cycle with no new mechanism]  inner cycle 0   [L1.5 patch]
    cycle c ≥ 1:  [L2 step: design → hot-load → inner cycle c → keep/revert]       [L1.5 patch]

Every group of the ablation runs the same schedule and counts trials the same way; a level that is
off simply does nothing at its slot. All state — history, best, incumbent ``train.py``, search
config, attached mechanisms — lives in the journal and carries across cycles; ``resume`` rebuilds it.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError, MechanismError, RunStopped, UserError
from core.inner_loop import InnerLoopController, hook_call_totals
from core.llm_client import Budget, UsageLedger, make_client
from core.loader import MechanismLoader
from core.plugins import MetricEvaluator, NoiseAwareDecider
from core.records import Status, TrialRecord
from core.state import RunDir
from domains.train_opt import offline
from domains.train_opt import target as tgt
from domains.train_opt.config import initial_config
from domains.train_opt.executor import TrainExecutor
from domains.train_opt.mechanism_research import (
    MechanismDesigner,
    MechanismTrialExecutor,
    PreviousCycleDecider,
    previous_cycle_score,
)
from core.mechanisms.tabu import TabuMechanism
from domains.train_opt.outer import analyze_and_patch, current_config
from domains.train_opt.runner import LLMProposer
from domains.train_opt.trace import lessons

log = logging.getLogger(__name__)
HARNESS = Path(__file__).parent / "harness"
Level = Literal["1", "1.5", "2"]
_COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", "runs", ".pytest_cache")


class RunSettings(BaseModel):
    """Everything that defines a run; saved as ``settings.json`` so ``resume`` needs no flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: tuple[Level, ...] = ("1", "1.5", "2")
    provider: str = "offline"
    model: str | None = None
    outer_provider: str | None = None
    outer_model: str | None = None
    inner_budget: int = Field(default=3, ge=0, le=10_000)
    outer_cycles: int = Field(default=3, ge=1, le=1_000)
    time_budget: float | None = Field(default=None, gt=0)
    target_dir: str | None = None
    command: list[str] | None = None
    trial_timeout_s: float | None = Field(default=None, gt=0)
    data: str | None = None
    seed: int = 0
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_calls: int | None = Field(default=None, ge=0)
    noise_floor: float | None = Field(default=None, ge=0)
    wall_time_s: float | None = Field(default=None, gt=0)
    hook_timeout_s: float = Field(default=5.0, gt=0)
    max_provider_failures: int = Field(default=3, ge=0)  # iterations lost to the provider in a row before a clean stop (0 = never)
    threads: int | None = Field(default=None, ge=1)
    record_cassette: bool = False

    @property
    def bundled(self) -> bool:
        return self.target_dir is None

    def timeout(self) -> float:
        if self.trial_timeout_s:
            return self.trial_timeout_s
        if self.bundled:
            return 3 * (self.time_budget or 30.0) + 60.0
        return 600.0  # the autoresearch protocol kills runs over 10 minutes


# What `resume` may change: the limits that stop a run, never what shapes its search.
RESUME_OVERRIDES = frozenset({"max_calls", "max_cost_usd", "wall_time_s"})


def _override(run: RunDir, settings: RunSettings, changes: dict[str, Any]) -> RunSettings:
    unknown = sorted(set(changes) - RESUME_OVERRIDES)
    if unknown:
        raise ConfigError(f"resume cannot change {', '.join(unknown)}; only {', '.join(sorted(RESUME_OVERRIDES))}")
    changes = {k: v for k, v in changes.items() if getattr(settings, k) != v}
    if not changes:
        return settings
    new = make_settings(**(settings.model_dump() | changes))
    run.write_json("settings.json", new.model_dump(mode="json"))
    run.journal.append({"type": "settings_changed", "changes": changes,
                        "previous": {k: getattr(settings, k) for k in changes}})
    return new


def parse_levels(text: str) -> tuple[Level, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in ("1", "1.5", "2")]
    if bad or "1" not in parts:
        raise ConfigError(f"--levels {text!r} is invalid; use a comma list of 1, 1.5, 2 that includes 1 (e.g. 1,1.5,2)")
    return tuple(dict.fromkeys(parts))  # type: ignore[return-value]


def make_settings(**values: Any) -> RunSettings:
    try:
        return RunSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {err['msg']}") from None


class TrainSession:
    """Owns one run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`."""

    def __init__(self, run: RunDir, settings: RunSettings) -> None:
        self.rundir = run
        self.settings = settings
        offline.register()
        workdir = run.path / "target"
        self.original = run.path / "original_train.py"
        self.specs = tgt.discover(self.original.read_text(encoding="utf-8"))
        self.ledger = UsageLedger.from_records(
            [{k: v for k, v in e.items() if k not in ("type", "seq", "ts", "record")} | {"ts": 0.0}
             for e in run.journal.events("llm_call")],
            sink=lambda rec: run.journal.append({"type": "llm_call", **{k: v for k, v in rec.items() if k != "ts"}}),
        )
        budget = Budget(max_cost_usd=settings.max_cost_usd, max_calls=settings.max_calls)
        cassette = run.path / "cassette.jsonl" if settings.record_cassette else None
        common = {"ledger": self.ledger, "budget": budget, "seed": settings.seed, "record_to": cassette}
        self.inner_client = make_client(settings.provider, settings.model, level="inner", **common)
        outer_provider = settings.outer_provider or settings.provider
        outer_model = settings.outer_model if settings.outer_provider else (settings.outer_model or settings.model)
        self.outer_client = make_client(outer_provider, outer_model, level="outer", **common)
        self.mech_client = make_client(outer_provider, outer_model, level="mechanism", **common)

        env = {}
        if settings.time_budget:
            env["BILEVEL_TIME_BUDGET"] = f"{settings.time_budget:g}"
        if settings.data:
            env["BILEVEL_DATA"] = str(Path(settings.data).resolve())
        if settings.threads:
            env["BILEVEL_THREADS"] = str(settings.threads)
        executor = TrainExecutor(workdir=workdir, original=self.original, command=settings.command,
                                 timeout_s=settings.timeout(), env=env)
        decider = NoiseAwareDecider(noise_floor=settings.noise_floor) if settings.noise_floor else None
        self.inner = InnerLoopController(
            run=run, loop="inner", proposer=LLMProposer(client=self.inner_client, run_dir=run.path,
                                                         original=self.original, specs=self.specs),
            executor=executor, evaluator=MetricEvaluator(metric="val_bpb"), decider=decider, direction="minimize",
            seed=settings.seed, hook_timeout_s=settings.hook_timeout_s, lessons=lessons,
            max_provider_failures=settings.max_provider_failures,
        )
        editable = [n for n, s in self.specs.items() if s.editable]
        if not editable:
            raise UserError(f"{self.original.name} has no editable UPPER_CASE literal hyperparameters; check --target-dir")
        self.initial_config = initial_config(editable, min_active=min(3, len(editable)))
        self.inner.search = current_config(run.journal, self.initial_config).model_dump(mode="json")
        self.loader = MechanismLoader(run.path)
        self.level2: InnerLoopController | None = None
        if "2" in settings.levels:
            self.level2 = InnerLoopController(
                run=run, loop="mechanism",
                proposer=MechanismDesigner(client=self.mech_client, inner=self.inner, inner_budget=settings.inner_budget),
                executor=MechanismTrialExecutor(inner=self.inner, loader=self.loader, run_cycle=self._inner_cycle),
                evaluator=MetricEvaluator(metric="improvement"), decider=PreviousCycleDecider(),
                direction="maximize", seed=settings.seed,
                hook_timeout_s=settings.hook_timeout_s,
            )
            # Level 2 searches with the same mechanisms as Level 1: a tabu list over designs means a
            # reverted design is not proposed again in this run.
            self.level2.attach(TabuMechanism(tenure=10_000), name="tabu")
            self._reattach_kept_mechanisms()
        self.on_record: Callable[[TrialRecord], None] | None = None
        self._deadline: float | None = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def start(cls, settings: RunSettings, run_dir: Path | None = None) -> TrainSession:
        source = Path(settings.target_dir).expanduser() if settings.target_dir else HARNESS
        if not (source / "train.py").is_file():
            raise UserError(f"{source} has no train.py; --target-dir must point at an autoresearch-style clone")
        if settings.data and not Path(settings.data).exists():
            raise UserError(f"--data {settings.data} does not exist; pass a UTF-8 text file or a folder of them")
        tgt.discover((source / "train.py").read_text(encoding="utf-8"))  # fail early on a broken target
        run = RunDir.create(run_dir, prefix="train")
        try:
            shutil.copytree(source, run.path / "target", ignore=_COPY_IGNORE, dirs_exist_ok=True)
            shutil.copyfile(source / "train.py", run.path / "original_train.py")
            run.write_json("settings.json", settings.model_dump(mode="json"))
            session = cls(run, settings)
            run.journal.append({"type": "run_started", "settings": settings.model_dump(mode="json"),
                                "target": str(source), "python": sys.version.split()[0]})
            return session
        except BaseException:
            run.close()
            if not run.journal.path.exists():  # nothing started: leave no partial run behind
                shutil.rmtree(run.path, ignore_errors=True)
            raise

    @classmethod
    def resume(cls, run_dir: Path, overrides: dict[str, Any] | None = None) -> TrainSession:
        """Reopen a run. ``overrides`` (``None`` values ignored) may raise the limits a stopped run
        hit — :data:`RESUME_OVERRIDES` — rewriting ``settings.json`` atomically and journaling it."""
        run = RunDir.open(run_dir)
        try:
            settings = RunSettings.model_validate_json((run.path / "settings.json").read_text(encoding="utf-8"))
            settings = _override(run, settings, {k: v for k, v in (overrides or {}).items() if v is not None})
            session = cls(run, settings)
            run.journal.append({"type": "run_resumed"})
            return session
        except BaseException:
            run.close()
            raise

    def _reattach_kept_mechanisms(self) -> None:
        detached = {e["name"] for e in self.rundir.journal.events("mechanism_detached", loop="inner")}
        for record in self.level2.history if self.level2 else []:
            if record.status is not Status.KEEP or record.proposal is None or record.proposal.origin == "baseline":
                continue
            if any(record.info.get("mechanism") == n for n in detached):
                continue  # reverted since it was kept: nothing to start
            try:
                loaded = self.loader.load(self.rundir.abs(record.artifact).read_text(encoding="utf-8"))
                name = f"{loaded.name}#{record.iteration}"
                self.inner.attach(loaded.instance, name=name, origin="generated", digest=loaded.digest)
            except (OSError, MechanismError, ValueError) as exc:
                # a kept mechanism that no longer loads (it hangs, or its file is gone) is detached and
                # journaled; the run goes on with its parent mechanism set rather than hanging resume
                name = str(record.info.get("mechanism") or record.artifact)
                log.warning("could not restart kept mechanism %s: %s", name, exc)
                self.rundir.journal.append({"type": "mechanism_detached", "loop": "inner",
                                            "iteration": len(self.inner.history), "name": name, "hook": None,
                                            "reason": f"reload on resume failed: {exc}"[:600],
                                            "traceback_tail": getattr(exc, "traceback_tail", "")})

    # -- running ---------------------------------------------------------------------------------
    def _inner_cycle(self, cycle: int) -> None:
        self.inner.run_cycle(cycle, self.settings.inner_budget, deadline=self._deadline, on_record=self.on_record)

    def _cycle_done(self, cycle: int) -> bool:
        return len(self.inner.records(cycle)) >= self.settings.inner_budget

    def run(self) -> dict[str, Any]:
        s = self.settings
        if s.wall_time_s:
            self._deadline = time.monotonic() + s.wall_time_s
        stopped = None
        try:
            fresh = not self.inner.history
            baseline = self.inner.ensure_baseline()
            if fresh and self.on_record:
                self.on_record(baseline)
            if baseline.status is not Status.KEEP:
                raise UserError(f"the baseline trial failed ({baseline.status.value}: {baseline.error}); "
                                f"see {self.rundir.path / 'trials' / 'inner' / '00000' / 'run.log'}")
            for cycle in range(s.outer_cycles):
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    stopped = "wall-time limit reached"
                    break
                if self.level2 is not None:
                    done = any(r.cycle == cycle for r in self.level2.history)
                    if cycle == 0 and not done:
                        self.level2.ensure_baseline(cycle=0)
                    elif not done:
                        self.level2.step(cycle)
                self._inner_cycle(cycle)
                if "1.5" in s.levels and cycle < s.outer_cycles - 1 and not self._patched(cycle):
                    config = analyze_and_patch(client=self.outer_client, journal=self.rundir.journal,
                                               config=current_config(self.rundir.journal, self.initial_config),
                                               history=self.inner.history, cycle=cycle)
                    self.inner.search = config.model_dump(mode="json")
        except RunStopped as exc:
            stopped = str(exc)
        summary = self.finalize(stopped)
        return summary

    def _patched(self, cycle: int) -> bool:
        return any(True for _ in self.rundir.journal.events("config", cycle=cycle)) or \
            any(True for _ in self.rundir.journal.events("config_rejected", cycle=cycle))

    def finalize(self, stopped: str | None = None) -> dict[str, Any]:
        summary = summarize(self.rundir, self.ledger)
        summary["stopped"] = stopped
        summary["complete"] = stopped is None and all(self._cycle_done(c) for c in range(self.settings.outer_cycles))
        best = self.inner.incumbent
        if best:
            shutil.copyfile(self.rundir.abs(best), self.rundir.path / "best_train.py")
        self.rundir.write_json("summary.json", summary)
        self.rundir.journal.append({"type": "run_finished" if summary["complete"] else "run_stopped",
                                 "reason": stopped, "best": summary["best"]})
        return summary

    def close(self) -> None:
        for client in (self.inner_client, self.outer_client, self.mech_client):
            client.close()
        self.rundir.close()


def summarize(run: RunDir, ledger: UsageLedger | None = None) -> dict[str, Any]:
    """Figures of a run, from its journal alone (used by ``report`` and by the ablation)."""
    inner = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="inner")]
    level2 = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="mechanism")]
    baseline = next((r for r in inner if r.proposal and r.proposal.origin == "baseline"), None)
    search = [r for r in inner if r.proposal is None or r.proposal.origin != "baseline"]
    best = min((r.score for r in inner if r.status is Status.KEEP and r.score is not None), default=None)
    counts = {s.value: sum(r.status is s for r in search) for s in Status}
    totals = hook_call_totals(inner)
    mechanisms = []
    for index, record in enumerate(level2):
        if record.proposal is None or record.proposal.origin == "baseline":
            continue
        name = record.info.get("mechanism")
        mechanisms.append({
            "iteration": record.iteration, "cycle": record.cycle, "region": record.proposal.region,
            "verdict": "kept" if record.status is Status.KEEP else ("reverted" if record.status is Status.DISCARD else record.status.value),
            "score": record.score, "parent_score": previous_cycle_score(level2[:index]), "error": record.error,
            "name": name, "hook_calls": totals.get(name, {}) if name else {}, "source": record.artifact,
            "worker_pid": record.info.get("worker_pid"), "sandbox": record.info.get("sandbox", {}),
        })
    usage: dict[str, Any] = {}
    calls = list(run.journal.events("llm_call"))
    for level in sorted({c["level"] for c in calls}):
        rows = [c for c in calls if c["level"] == level]
        usage[level] = {"calls": len(rows), "prompt_tokens": sum(c["prompt_tokens"] for c in rows),
                        "completion_tokens": sum(c["completion_tokens"] for c in rows),
                        "cost_usd": round(sum(c["cost_usd"] for c in rows), 6)}
    return {
        "baseline": baseline.score if baseline else None, "best": best,
        "delta": (best - baseline.score) if best is not None and baseline and baseline.score is not None else None,
        "iterations": len(search), "counts": counts, "hook_calls": totals, "mechanisms": mechanisms,
        "usage": usage, "providers": sorted({c["provider"] for c in calls}),
        "trial_s": round(sum(r.duration_s for r in inner), 2),
    }
