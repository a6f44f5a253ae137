"""An article_opt run: the articles, the clients, the pipeline, the controllers of every level.

Schedule for ``max_outer`` cycles of ``max_inner`` Level-1 iterations per article (after one
baseline each), the same as train_opt's:

    cycle 0:      [L2 baseline = the cycle with the shipped pipeline]   inner cycle 0   [L1.5 patch]
    cycle c ≥ 1:  [L2 step: design → hot-load → inject → inner cycle c → keep/remove]   [L1.5 patch]

A level that is off does nothing at its slot. All state — histories, incumbents, overrides, kept
stages — lives in the journal; :meth:`ArticleSession.resume` rebuilds it and runs only what is
missing.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError, MechanismError, RunStopped, UserError
from core.inner_loop import InnerLoopController
from core.llm_client import Budget, UsageLedger, make_client
from core.loader import MechanismLoader
from core.records import Status, TrialRecord
from core.state import RunDir, atomic_write_text
from domains.article_opt import lessons, offline
from domains.article_opt.articles import resolve_article
from domains.article_opt.evaluator import ArticleEvaluator, Judge
from domains.article_opt.mechanism_research import (
    LOOP,
    STAGE_CONTRACT,
    BeatsParent,
    GainOverParent,
    StageDesigner,
    StageTrialExecutor,
)
from domains.article_opt.outer import OuterAnalyzer, current_overrides, dimension_summary
from domains.article_opt.pipeline import build_pipeline
from domains.article_opt.runner import ArticleState, PipelineExecutor, StageProposer
from core.mechanisms.tabu import TabuMechanism

log = logging.getLogger(__name__)
Level = Literal["1", "1.5", "2"]
NETWORK_STAGE_TIMEOUT_S = 300.0


class ArticleSettings(BaseModel):
    """Everything that defines a run; saved as ``settings.json`` so ``resume`` needs no flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    articles: tuple[str, ...] = Field(min_length=1)
    levels: tuple[Level, ...] = ("1", "1.5", "2")
    provider: str = "offline"
    model: str | None = None
    outer_provider: str | None = None
    outer_model: str | None = None
    judge_provider: str | None = None
    judge_model: str | None = None
    max_inner: int = Field(default=5, ge=1, le=10_000)
    max_outer: int = Field(default=4, ge=1, le=1_000)
    seed: int = 0
    max_cost_usd: float | None = Field(default=None, ge=0)
    max_calls: int | None = Field(default=None, ge=0)
    stage_timeout_s: float | None = Field(default=None, gt=0)
    record_cassette: bool = False

    def client_ids(self) -> dict[str, tuple[str, str | None]]:
        """(provider, model) per level: outer and judge default to the inner provider and model."""
        def pick(provider: str | None, model: str | None) -> tuple[str, str | None]:
            return (provider, model) if provider else (self.provider, model or self.model)
        outer = pick(self.outer_provider, self.outer_model)
        return {"inner": (self.provider, self.model), "outer": outer, "mechanism": outer,
                "judge": pick(self.judge_provider, self.judge_model)}


def parse_levels(text: str) -> tuple[Level, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in ("1", "1.5", "2")]
    if bad or "1" not in parts:
        raise ConfigError(f"--levels {text!r} is invalid; use a comma list of 1, 1.5, 2 that includes 1 (e.g. 1,1.5,2)")
    return tuple(dict.fromkeys(parts))  # type: ignore[return-value]


def make_settings(**values: Any) -> ArticleSettings:
    try:
        return ArticleSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {err['msg']}") from None


RecordCallback = Callable[[str, TrialRecord], None]
PatchCallback = Callable[[dict[str, Any]], None]


class ArticleSession:
    """Owns one run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`."""

    def __init__(self, run: RunDir, settings: ArticleSettings) -> None:
        self.rundir = run
        self.settings = settings
        offline.register()
        journal = run.journal
        self.ledger = UsageLedger.from_records(
            [{k: v for k, v in e.items() if k not in ("type", "seq", "ts")} | {"ts": 0.0}
             for e in journal.events("llm_call")],
            sink=lambda rec: journal.append({"type": "llm_call", **{k: v for k, v in rec.items() if k != "ts"}}),
        )
        budget = Budget(max_cost_usd=settings.max_cost_usd, max_calls=settings.max_calls)
        cassette = run.path / "cassette.jsonl" if settings.record_cassette else None
        common = {"ledger": self.ledger, "budget": budget, "seed": settings.seed, "record_to": cassette}
        self.clients = {level: make_client(provider, model, level=level, **common)
                        for level, (provider, model) in settings.client_ids().items()}
        offline_only = all(c.provider in ("offline", "replay") for c in self.clients.values())
        timeout = settings.stage_timeout_s or (10.0 if offline_only else NETWORK_STAGE_TIMEOUT_S)
        self.pipeline = build_pipeline(self.clients["inner"], on_event=self._stage_event, stage_timeout_s=timeout)
        self.pipeline.overrides = current_overrides(journal)
        evaluator = ArticleEvaluator(Judge(self.clients["judge"]))
        self.on_record: RecordCallback | None = None
        self.on_patch: PatchCallback | None = None
        self.states: dict[str, ArticleState] = {}
        self.inner: dict[str, InnerLoopController] = {}
        for name in self.article_names():
            state = ArticleState(name=name, run_dir=run.path,
                                 original=(run.path / "originals" / f"{name}.md").read_text(encoding="utf-8"))
            self.states[name] = state
            self.inner[name] = InnerLoopController(
                run=run, loop=f"inner.{name}", direction="maximize", seed=settings.seed,
                proposer=StageProposer(pipeline=self.pipeline, state=state, journal=journal),
                executor=PipelineExecutor(pipeline=self.pipeline, state=state, journal=journal),
                evaluator=evaluator, lessons=lessons.extract,
            )
        self.outer = OuterAnalyzer(llm=self.clients["outer"], journal=journal, stage_names=lambda: self.pipeline.names)
        self.loader = MechanismLoader(run.path, contract=STAGE_CONTRACT)
        self.level2: InnerLoopController | None = None
        if "2" in settings.levels:
            self.level2 = InnerLoopController(
                run=run, loop=LOOP, direction="maximize", seed=settings.seed,
                proposer=StageDesigner(llm=self.clients["mechanism"], pipeline=self.pipeline,
                                       dimensions=self._dimensions),
                executor=StageTrialExecutor(pipeline=self.pipeline, loader=self.loader, journal=journal,
                                            run_cycle=self._inner_cycle, cycle_gain=self.cycle_gain,
                                            stage_calls=self.stage_calls),
                evaluator=GainOverParent(), decider=BeatsParent(),
            )
            # Level 2 searches with a Level-1 mechanism, unchanged: a stage design that was removed
            # is tabu, so it is not proposed again in this run.
            self.level2.attach(TabuMechanism(tenure=10_000), name="tabu")
            self._reinject_kept_stages()

    # -- construction ----------------------------------------------------------------------------
    def article_names(self) -> list[str]:
        return [p.stem for p in sorted((self.rundir.path / "originals").glob("*.md"),
                                       key=lambda p: self._order().get(p.stem, 0))]

    def _order(self) -> dict[str, int]:
        first = self.rundir.journal.last("run_started")
        names = first["article_names"] if first else []
        return {n: i for i, n in enumerate(names)}

    @classmethod
    def start(cls, settings: ArticleSettings, run_dir: Path | None = None) -> ArticleSession:
        sources = [resolve_article(a) for a in settings.articles]  # user errors before anything is written
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise UserError(f"two articles share a name: {names}; rename one of the files")
        for provider, model in settings.client_ids().values():  # a bad provider or missing key: fail now
            make_client(provider, model).close()
        run = RunDir.create(run_dir, prefix="article")
        try:
            for source in sources:
                atomic_write_text(run.path / "originals" / f"{source.name}.md", source.text)
            run.write_json("settings.json", settings.model_dump(mode="json"))
            run.journal.append({"type": "run_started", "settings": settings.model_dump(mode="json"),
                                "article_names": names, "article_paths": [str(s.path) for s in sources],
                                "python": sys.version.split()[0]})
            return cls(run, settings)
        except BaseException:
            run.close()
            shutil.rmtree(run.path, ignore_errors=True)  # nothing ran yet: leave no partial run behind
            raise

    @classmethod
    def resume(cls, run_dir: Path) -> ArticleSession:
        run = RunDir.open(run_dir)
        try:
            try:
                settings = ArticleSettings.model_validate_json((run.path / "settings.json").read_text(encoding="utf-8"))
            except (OSError, ValidationError) as exc:
                raise UserError(f"{run.path} is not an article_opt run (settings.json unreadable: {exc})") from None
            session = cls(run, settings)
            run.journal.append({"type": "run_resumed"})
            return session
        except BaseException:
            run.close()
            raise

    def _reinject_kept_stages(self) -> None:
        """Reload every kept generated stage that was not ejected since, in the order it was kept."""
        if self.level2 is None:
            return
        ejected = {e["stage"] for e in self.rundir.journal.events("stage_ejected")}
        for record in self.level2.history:
            if record.status is not Status.KEEP or record.proposal is None or record.proposal.origin == "baseline":
                continue
            if not record.artifact:
                continue
            try:
                loaded = self.loader.load(self.rundir.abs(record.artifact).read_text(encoding="utf-8"))
            except (OSError, MechanismError) as exc:
                log.warning("could not reload kept stage from %s: %s", record.artifact, exc)
                continue
            name = type(loaded.instance).name
            if name in ejected or name in self.pipeline.names:
                continue
            self.pipeline.inject_stage(loaded.instance, after=str(record.proposal.changes.get("after", "planning")),
                                       digest=loaded.digest)

    # -- measurements the levels share ----------------------------------------------------------
    def _stage_event(self, event: dict[str, Any]) -> None:
        self.rundir.journal.append(dict(event))

    def records(self) -> dict[str, list[TrialRecord]]:
        return {name: list(ctl.history) for name, ctl in self.inner.items()}

    def _dimensions(self) -> dict[str, Any]:
        last = max((r.cycle for ctl in self.inner.values() for r in ctl.history), default=0)
        return dimension_summary(self.records(), last)

    def cycle_gain(self, cycle: int) -> float | None:
        """Mean over articles of the cycle's improvement of the best overall score, per iteration."""
        gains = []
        for ctl in self.inner.values():
            recs = ctl.records(cycle)
            if not recs:
                continue
            start = recs[0].best_before if recs[0].best_before is not None else 0.0
            end = recs[-1].best_after if recs[-1].best_after is not None else start
            gains.append((end - start) / len(recs))
        return round(sum(gains) / len(gains), 6) if gains else None

    def stage_calls(self, name: str, cycle: int) -> int:
        return sum(int(e.get("calls", {}).get(name, 0))
                   for e in self.rundir.journal.events("pipeline_pass", cycle=cycle))

    # -- running ---------------------------------------------------------------------------------
    def _notify(self, loop: str, record: TrialRecord) -> None:
        if self.on_record is not None:
            self.on_record(loop, record)

    def _inner_cycle(self, cycle: int) -> None:
        for name, ctl in self.inner.items():
            ctl.run_cycle(cycle, self.settings.max_inner, on_record=lambda r, n=name: self._notify(f"inner.{n}", r))

    def _cycle_done(self, cycle: int) -> bool:
        return all(len(ctl.records(cycle)) >= self.settings.max_inner for ctl in self.inner.values())

    def run(self) -> dict[str, Any]:
        s = self.settings
        stopped = None
        try:
            for name, ctl in self.inner.items():
                fresh = not ctl.history
                baseline = ctl.ensure_baseline()
                if fresh:
                    self._notify(f"inner.{name}", baseline)
                if baseline.status is not Status.KEEP:
                    raise UserError(f"the judge could not score the original {name} ({baseline.status.value}: "
                                    f"{baseline.error})")
            for cycle in range(s.max_outer):
                if self.level2 is not None and not any(r.cycle == cycle for r in self.level2.history):
                    record = self.level2.ensure_baseline(cycle=0) if cycle == 0 else self.level2.step(cycle)
                    self._notify(LOOP, record)
                self._inner_cycle(cycle)
                if self.rundir.journal.last("cycle_end", cycle=cycle) is None:
                    self.rundir.journal.append({
                        "type": "cycle_end", "cycle": cycle, "gain": self.cycle_gain(cycle),
                        "best": {n: ctl.best_score for n, ctl in self.inner.items()},
                        "stages": self.pipeline.names, "overrides": dict(self.pipeline.overrides)})
                if "1.5" in s.levels and cycle < s.max_outer - 1 and not self.outer.done(cycle):
                    effective = self.outer.step(cycle, self.records())
                    if effective is not None:
                        self.pipeline.overrides = effective
                    if self.on_patch is not None:
                        self.on_patch(self.rundir.journal.last("outer_patch", cycle=cycle)
                                      or self.rundir.journal.last("outer_rejected", cycle=cycle) or {})
        except RunStopped as exc:
            stopped = str(exc)
        return self.finalize(stopped)

    def finalize(self, stopped: str | None = None) -> dict[str, Any]:
        from domains.article_opt.report import summarize  # the report reads the journal alone

        complete = stopped is None and all(self._cycle_done(c) for c in range(self.settings.max_outer))
        for name, ctl in self.inner.items():
            if ctl.incumbent:
                text = self.rundir.abs(ctl.incumbent).read_text(encoding="utf-8")
                atomic_write_text(self.rundir.path / "best" / f"{name}.md", text)
        summary = summarize(self.rundir)
        summary["stopped"] = stopped
        summary["complete"] = complete
        self.rundir.write_json("summary.json", summary)
        self.rundir.journal.append({"type": "run_finished" if complete else "run_stopped", "reason": stopped,
                                    "best": {n: ctl.best_score for n, ctl in self.inner.items()}})
        return summary

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.rundir.close()
