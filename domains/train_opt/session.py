"""train_opt as a :class:`~core.domain.Domain`: a ``train.py`` whose UPPER_CASE constants are searched
to lower ``val_bpb``. The schedule (baseline → cycles, Levels 1.5 and 2 at their slots, resume,
budgets) is :class:`core.schedule.BilevelRun`'s; this module supplies the pieces:

* Level 1: :class:`~domains.train_opt.runner.LLMProposer` over the discovered constants,
  :class:`~domains.train_opt.executor.TrainExecutor` (a child process per trial), ``val_bpb``;
* Level 1.5: :func:`~domains.train_opt.outer.analyze_and_patch` on core's typed ``SearchConfig``;
* Level 2: :class:`~domains.train_opt.mechanism_research.MechanismDesigner` and core's
  :class:`~core.level2.MechanismInstaller` (attach a generated mechanism to the running loop).

The training seed is the run's ``--seed``: every trial gets ``BILEVEL_SEED=<seed>`` in its
environment. The bundled harness reads it; a ``--target-dir`` clone whose ``train.py`` has its own
seed constant should read ``int(os.environ.get("BILEVEL_SEED", SEED))`` to take part.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from core.domain import ConfigLevel, Domain, Level2Parts, RunContext
from core.errors import UserError
from core.inner_loop import InnerLoopController, hook_call_totals, hook_effect_totals
from core.level2 import MechanismInstaller, design_verdict
from core.llm_client import UsageLedger, make_client
from core.mechanisms import space_param
from core.plugins import MetricEvaluator, pooled_noise, waste_counts
from core.records import Status, TrialRecord
from core.schedule import BilevelRun
from core.search import SearchConfig, initial_config
from core.settings import Level, RunSettings, parse_levels, validate
from core.state import RunDir
from domains.train_opt import offline
from domains.train_opt import target as tgt
from domains.train_opt.executor import TrainExecutor
from domains.train_opt.mechanism_research import MechanismDesigner
from domains.train_opt.mechanisms import memory_mechanism, space_dims
from domains.train_opt.mechanisms.early_stop import CurveRule
from domains.train_opt.outer import analyze_and_patch
from domains.train_opt.runner import LLMProposer
from domains.train_opt.trace import lessons

__all__ = ["Level", "TrainDomain", "TrainSession", "TrainSettings", "make_settings", "parse_levels", "summarize"]

HARNESS = Path(__file__).parent / "harness"
_COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", "runs", ".pytest_cache")


class TrainSettings(RunSettings):
    """A train_opt run: core's fields plus the target and its trial limits."""

    time_budget: float | None = Field(default=None, gt=0)
    flop_budget: float | None = Field(default=None, gt=0)
    target_dir: str | None = None
    command: list[str] | None = None
    trial_timeout_s: float | None = Field(default=None, gt=0)
    data: str | None = None
    threads: int | None = Field(default=None, ge=1)
    memory: bool = False  # remember this run's best keeps for later runs on the same target (user cache)
    early_stop: bool = False  # stop a trial whose loss curve is clearly behind the incumbent's

    @property
    def bundled(self) -> bool:
        return self.target_dir is None

    def timeout(self) -> float:
        if self.trial_timeout_s:
            return self.trial_timeout_s
        if self.bundled:
            return 3 * (self.time_budget or 30.0) + 60.0
        return 600.0  # the autoresearch protocol kills runs over 10 minutes

    def trial_env(self) -> dict[str, str]:
        """What every trial's environment carries: the training seed, and the bundled harness's knobs."""
        env = {"BILEVEL_SEED": str(self.seed)}
        if self.time_budget:
            env["BILEVEL_TIME_BUDGET"] = f"{self.time_budget:g}"
        if self.flop_budget:
            env["BILEVEL_FLOP_BUDGET"] = f"{self.flop_budget:g}"
        if self.data:
            env["BILEVEL_DATA"] = str(Path(self.data).resolve())
        if self.threads:
            env["BILEVEL_THREADS"] = str(self.threads)
        return env


def make_settings(**values: Any) -> TrainSettings:
    return validate(TrainSettings, values)


class TrainConfigLevel(ConfigLevel):
    """Level 1.5: a validated patch to the inner loop's typed ``SearchConfig``."""

    applied, rejected = "config", "config_rejected"

    def __init__(self, domain: TrainDomain, client: Any) -> None:
        self.domain = domain
        self.client = client

    def initial(self) -> SearchConfig:
        return self.domain.initial_config

    def config_of(self, event: dict[str, Any]) -> SearchConfig:
        return SearchConfig.model_validate(event["config"])

    def load(self, data: Any) -> SearchConfig:
        return SearchConfig.model_validate(data)

    def patch(self, cycle: int, config: SearchConfig) -> None:
        analyze_and_patch(client=self.client, journal=self.domain.run.journal, config=config,
                          history=self.domain.inner.history, cycle=cycle)

    def install(self, config: SearchConfig) -> None:
        self.domain.inner.search = config


class TrainDomain(Domain):
    name = "train_opt"
    Settings = TrainSettings

    register_offline = staticmethod(offline.register)

    @classmethod
    def check(cls, settings: TrainSettings) -> None:
        source = Path(settings.target_dir).expanduser() if settings.target_dir else HARNESS
        if not (source / "train.py").is_file():
            raise UserError(f"{source} has no train.py; --target-dir must point at an autoresearch-style clone")
        if settings.target_dir and settings.time_budget:
            raise UserError("--time-budget applies only to the bundled harness; a --target-dir clone fixes its "
                            "time budget in its own prepare.py (drop --time-budget)")
        if settings.target_dir and settings.flop_budget:
            raise UserError("--flop-budget applies only to the bundled harness; a --target-dir clone fixes its "
                            "budget in its own prepare.py (drop --flop-budget)")
        if settings.time_budget and settings.flop_budget:
            raise UserError("--time-budget and --flop-budget both set; give one (fixed compute: --flop-budget)")
        if settings.target_dir and settings.data:
            raise UserError("--data applies only to the bundled harness; a --target-dir clone prepares its own "
                            "data (drop --data)")
        if settings.data and not Path(settings.data).exists():
            raise UserError(f"--data {settings.data} does not exist; pass a UTF-8 text file or a folder of them")
        tgt.discover((source / "train.py").read_text(encoding="utf-8"))  # fail early on a broken target

    @classmethod
    def prepare(cls, settings: TrainSettings, run: RunDir) -> dict[str, Any]:
        source = Path(settings.target_dir).expanduser() if settings.target_dir else HARNESS
        shutil.copytree(source, run.path / "target", ignore=_COPY_IGNORE, dirs_exist_ok=True)
        shutil.copyfile(source / "train.py", run.path / "original_train.py")
        return {"target": str(source)}

    def __init__(self, ctx: RunContext) -> None:
        run, settings = ctx.run, ctx.settings
        self.run = run
        self.settings = settings
        self.clients = ctx.clients
        self.original = run.path / "original_train.py"
        self.specs = tgt.discover(self.original.read_text(encoding="utf-8"))
        editable = [n for n, s in self.specs.items() if s.editable]
        if not editable:
            raise UserError(f"{self.original.name} has no editable UPPER_CASE literal hyperparameters; check --target-dir")
        self.initial_config = initial_config(editable, min_active=min(3, len(editable)))
        executor = TrainExecutor(workdir=run.path / "target", original=self.original, command=settings.command,
                                 timeout_s=settings.timeout(), env=settings.trial_env(),
                                 # one updating terminal line cannot show K trials: the CLI prints what is in flight
                                 progress="auto" if settings.parallel == 1 and settings.executor == "local" else None,
                                 early_stop=CurveRule() if settings.early_stop else None)
        decider = settings.make_decider()  # noise-aware by default (README, "Keep/discard decisions")
        self.inner = InnerLoopController(
            run=run, loop="inner", proposer=LLMProposer(client=ctx.clients["inner"], run_dir=run.path,
                                                         original=self.original, specs=self.specs),
            executor=executor, evaluator=MetricEvaluator(metric="val_bpb"), decider=decider, direction="minimize",
            seed=settings.seed, hook_timeout_s=settings.hook_timeout_s, lessons=lessons,
            max_provider_failures=settings.max_provider_failures, max_failed_in_a_row=settings.max_failed_in_a_row,
        )
        self.inner.search = self.initial_config
        if settings.memory:  # opt-in: reads and writes a file in the user's cache, never in the sandbox
            self.inner.attach(memory_mechanism(self.original, run.path.name))
        self.loops = {"inner": self.inner}

    def config_level(self) -> TrainConfigLevel:
        return TrainConfigLevel(self, self.clients["outer"])

    def level2(self) -> Level2Parts:
        designer = MechanismDesigner(client=self.clients["mechanism"], inner=self.inner,
                                     inner_budget=self.settings.inner_budget, space=self.space)
        return Level2Parts(designer=designer, installer=MechanismInstaller(inner=self.inner, run=self.run))

    def space(self) -> str:
        """The ``space`` parameter of the proposing templates: the constants, their ranges as the
        proposer sees them, and their original values (a mechanism replays the keeps on top)."""
        return space_param(space_dims(self.specs, tgt.values(self.original.read_text(encoding="utf-8"))))

    def baseline_error(self, loop: str, record: TrialRecord) -> str:
        return (f"the baseline trial failed ({record.status.value}: {record.error}); "
                f"see {self.run.path / 'trials' / 'inner' / '00000' / 'run.log'}")

    def finish(self) -> None:
        if self.inner.incumbent:
            shutil.copyfile(self.run.abs(self.inner.incumbent), self.run.path / "best_train.py")

    def summarize(self) -> dict[str, Any]:
        return summarize(self.run)


class TrainSession(BilevelRun):
    """A train_opt run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`."""

    domain_cls = TrainDomain

    def make_client(self, provider: str, model: str | None, **kwargs: Any) -> Any:
        return make_client(provider, model, **kwargs)  # this module's name: tests and embedders may swap it

    @property
    def inner(self) -> InnerLoopController:
        return self.domain.inner

    @property
    def specs(self) -> dict[str, tgt.ParamSpec]:
        return self.domain.specs

    @property
    def original(self) -> Path:
        return self.domain.original


def summarize(run: RunDir, ledger: UsageLedger | None = None) -> dict[str, Any]:
    """Figures of a run, from its journal alone (used by ``report`` and by the ablation)."""
    inner = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="inner")]
    level2 = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="mechanism")]
    baseline = next((r for r in inner if r.proposal and r.proposal.is_baseline), None)
    search = [r for r in inner if r.proposal is None or not r.proposal.is_baseline]
    best = min((r.score for r in inner if r.status is Status.KEEP and r.score is not None), default=None)
    counts = {s.value: sum(r.status is s for r in search) for s in Status}
    totals = hook_call_totals(inner)
    effects = hook_effect_totals(inner)
    mechanisms = []
    for record in level2:
        if record.proposal is None or record.proposal.is_baseline:
            continue
        name = record.info.get("mechanism")
        mechanisms.append({
            "iteration": record.iteration, "cycle": record.cycle, "region": record.proposal.region,
            "verdict": design_verdict(record), "retest_of": record.info.get("replicate_of") if record.proposal.is_replicate else None,
            "score": record.metrics.get("gain"), "parent_score": record.metrics.get("parent_gain"),
            "error": record.error, "name": name, "hook_calls": totals.get(name, {}) if name else {},
            "hook_effects": effects.get(name, {}) if name else {},
            "source": record.artifact, "worker_pid": record.info.get("worker_pid"),
            "sandbox": record.info.get("sandbox", {}),
        })
    usage: dict[str, Any] = {}
    calls = list(run.journal.events("llm_call"))
    for level in sorted({c["level"] for c in calls}):
        rows = [c for c in calls if c["level"] == level]
        usage[level] = {"calls": len(rows), "prompt_tokens": sum(c["prompt_tokens"] for c in rows),
                        "completion_tokens": sum(c["completion_tokens"] for c in rows),
                        "cost_usd": round(sum(c["cost_usd"] for c in rows), 6)}
    verdicts = [{k: e[k] for k in ("cycle", "governed", "kept", "score")} for e in run.journal.events("level15_verdict")]
    return {
        "baseline": baseline.score if baseline else None, "best": best,
        "delta": (best - baseline.score) if best is not None and baseline and baseline.score is not None else None,
        "iterations": len(search), "counts": counts, "hook_calls": totals, "hook_effects": effects, "mechanisms": mechanisms,
        "config_verdicts": verdicts, "usage": usage, "providers": sorted({c["provider"] for c in calls}),
        "trial_s": round(sum(r.duration_s for r in inner), 2),
        # decisions and waste: re-measurements on other seeds, the noise they measured, proposals
        # refused before running (duplicates, infeasible)
        "replicates": sum(r.proposal.is_replicate for r in search if r.proposal is not None),
        "noise": pooled_noise([[r.score for r in inner if r.finished_ok and r.score is not None
                                and r.info.get("config_key") == key] for key in
                               {r.info.get("config_key") for r in inner if r.info.get("config_key")}]),
        "wasted": waste_counts(search),
    }
