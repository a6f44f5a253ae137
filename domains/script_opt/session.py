"""script_opt as a :class:`~core.domain.Domain`: any script that prints a metric.

The user points it at a directory and a command (``--cmd "python train.py"``), names the metric
(a ``metric: value`` line, or ``--metric-regex`` with one group) and its direction, and lists the
editable constants (``--params``) or lets every UPPER_CASE int/float/bool constant of the edited file
be found. The directory is copied into the run (the user's files are never written); each trial
edits the constants by AST, runs the command in the copy with ``BILEVEL_SEED=<seed>`` in its
environment and reads the metric. Everything else — the schedule, Levels 1.5 and 2, resume,
budgets — is core's.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from core import editable
from core.domain import Domain, Level2Parts, RunContext
from core.errors import UserError
from core.inner_loop import InnerLoopController, hook_call_totals
from core.level2 import MechanismInstaller, design_verdict
from core.llm_client import make_client
from core.plugins import MetricEvaluator
from core.records import Status, TrialRecord
from core.schedule import BilevelRun
from core.search import initial_config
from core.settings import RunSettings, validate
from core.state import RunDir
from domains.script_opt import offline
from domains.script_opt.levels import MechanismDesigner, ScriptConfigLevel
from domains.script_opt.runner import ConstantProposer, ScriptExecutor

_COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", "runs", ".pytest_cache")


class ScriptSettings(RunSettings):
    target_dir: str
    cmd: str = Field(min_length=1)
    file: str | None = None  # the file whose constants are edited (default: the .py file the command runs)
    metric: str = Field(default="score", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    metric_regex: str | None = None
    direction: Literal["minimize", "maximize"] = "minimize"
    params: tuple[str, ...] = ()
    trial_timeout_s: float = Field(default=600.0, gt=0)

    def edited_file(self) -> str:
        if self.file:
            return self.file
        scripts = [t for t in shlex.split(self.cmd) if t.endswith(".py")]
        if not scripts:
            raise UserError(f"cannot tell which file --cmd {self.cmd!r} runs; name the file to edit with --file")
        return scripts[0]


def make_settings(**values: Any) -> ScriptSettings:
    return validate(ScriptSettings, values)


def _constants(source: str, settings: ScriptSettings, filename: str) -> dict[str, editable.Constant]:
    found = editable.discover(source, filename=filename)
    missing = sorted(set(settings.params) - set(found))
    if missing:
        raise UserError(f"--params names {', '.join(missing)}, which {filename} does not define as UPPER_CASE "
                        f"int/float/bool literals; found: {', '.join(found) or 'none'}")
    chosen = {n: found[n] for n in settings.params} if settings.params else found
    if not chosen:
        raise UserError(f"{filename} has no UPPER_CASE int/float/bool constants to tune; add some or pass --file")
    return chosen


class ScriptDomain(Domain):
    name = "script_opt"
    Settings = ScriptSettings

    register_offline = staticmethod(offline.register)

    @classmethod
    def check(cls, settings: ScriptSettings) -> None:
        source = Path(settings.target_dir).expanduser()
        file = source / settings.edited_file()
        if not file.is_file():
            raise UserError(f"{file} does not exist; --target-dir must hold the file --cmd runs (or --file names)")
        if settings.metric_regex:
            try:
                re.compile(settings.metric_regex)
            except re.error as exc:
                raise UserError(f"--metric-regex {settings.metric_regex!r} is not a regex ({exc})") from None
        _constants(file.read_text(encoding="utf-8"), settings, file.name)

    @classmethod
    def prepare(cls, settings: ScriptSettings, run: RunDir) -> dict[str, Any]:
        source = Path(settings.target_dir).expanduser()
        shutil.copytree(source, run.path / "target", ignore=_COPY_IGNORE, dirs_exist_ok=True)
        shutil.copyfile(source / settings.edited_file(), run.path / f"original_{Path(settings.edited_file()).name}")
        return {"target": str(source)}

    def __init__(self, ctx: RunContext) -> None:
        run, settings = ctx.run, ctx.settings
        self.run, self.settings, self.clients = run, settings, ctx.clients
        self.original = run.path / f"original_{Path(settings.edited_file()).name}"
        self.constants = _constants(self.original.read_text(encoding="utf-8"), settings, settings.edited_file())
        self.inner = InnerLoopController(
            run=run, loop="inner", direction=settings.direction, seed=settings.seed,
            proposer=ConstantProposer(client=ctx.clients["inner"], run_dir=run.path, original=self.original,
                                      constants=self.constants, metric=settings.metric,
                                      direction=settings.direction, command=settings.cmd),
            executor=ScriptExecutor(workdir=run.path / "target", original=self.original, file=settings.edited_file(),
                                    command=settings.cmd, metric=settings.metric, pattern=settings.metric_regex,
                                    timeout_s=settings.trial_timeout_s, env={"BILEVEL_SEED": str(settings.seed)}),
            evaluator=MetricEvaluator(metric=settings.metric), hook_timeout_s=settings.hook_timeout_s,
            max_provider_failures=settings.max_provider_failures, decider=settings.make_decider(),
            max_failed_in_a_row=settings.max_failed_in_a_row,
        )
        self.initial = initial_config(list(self.constants), min_active=min(2, len(self.constants)))
        self.inner.search = self.initial
        self.loops = {"inner": self.inner}

    def config_level(self) -> ScriptConfigLevel:
        return ScriptConfigLevel(client=self.clients["outer"], journal=self.run.journal, inner=self.inner,
                                 initial=self.initial)

    def level2(self) -> Level2Parts:
        return Level2Parts(designer=MechanismDesigner(client=self.clients["mechanism"], inner=self.inner),
                           installer=MechanismInstaller(inner=self.inner, run=self.run))

    def baseline_error(self, loop: str, record: TrialRecord) -> str:
        return (f"the unchanged script did not produce {self.settings.metric} ({record.status.value}: {record.error}); "
                f"see {self.run.path / 'trials' / 'inner' / '00000' / 'run.log'}")

    def finish(self) -> None:
        if self.inner.incumbent:
            shutil.copyfile(self.run.abs(self.inner.incumbent), self.run.path / f"best_{self.original.name[9:]}")

    def summarize(self) -> dict[str, Any]:
        return summarize(self.run, self.settings)


class ScriptSession(BilevelRun):
    """A script_opt run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`."""

    domain_cls = ScriptDomain

    def make_client(self, provider: str, model: str | None, **kwargs: Any) -> Any:
        return make_client(provider, model, **kwargs)  # this module's name: tests and embedders may swap it

    @property
    def inner(self) -> InnerLoopController:
        return self.domain.inner


def summarize(run: RunDir, settings: ScriptSettings) -> dict[str, Any]:
    """Figures of a run, from its journal alone."""
    inner = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="inner")]
    level2 = [TrialRecord.model_validate(e["record"]) for e in run.journal.events("trial", loop="mechanism")]
    baseline = next((r for r in inner if r.proposal and r.proposal.is_baseline), None)
    search = [r for r in inner if r.proposal is None or not r.proposal.is_baseline]
    kept = [r.score for r in inner if r.status is Status.KEEP and r.score is not None]
    totals = hook_call_totals(inner)
    return {
        "metric": settings.metric, "direction": settings.direction,
        "baseline": baseline.score if baseline else None,
        "best": (min(kept) if settings.direction == "minimize" else max(kept)) if kept else None,
        "iterations": len(search), "counts": {s.value: sum(r.status is s for r in search) for s in Status},
        "config_verdicts": [{k: e[k] for k in ("cycle", "kept", "score")} for e in run.journal.events("level15_verdict")],
        "mechanisms": [{"cycle": r.cycle, "region": r.proposal.region, "status": r.status.value,
                        "verdict": design_verdict(r), "reason": (r.info.get("decision") or {}).get("reason", ""),
                        "retest_of": r.info.get("replicate_of") if r.proposal.is_replicate else None,
                        "gain": r.metrics.get("gain"), "parent_gain": r.metrics.get("parent_gain"),
                        "hook_calls": totals.get(r.info.get("mechanism", ""), {})}
                       for r in level2 if r.proposal is not None and not r.proposal.is_baseline],
    }
