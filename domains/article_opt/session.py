"""article_opt as a :class:`~core.domain.Domain`: essays improved against a rubric. The schedule
(baseline per article → cycles, Levels 1.5 and 2 at their slots, resume, budgets) is
:class:`core.schedule.BilevelRun`'s; this module supplies the pieces:

* Level 1: one controller per article (loop ``inner.<name>``) over the shared pipeline
  (:class:`~domains.article_opt.runner.StageProposer`, :class:`~domains.article_opt.runner.PipelineExecutor`),
  judged by :class:`~domains.article_opt.evaluator.ArticleEvaluator`;
* Level 1.5: :class:`~domains.article_opt.outer.OuterAnalyzer` rewrites per-stage instructions (the
  configuration is the effective overrides);
* Level 2: :class:`~domains.article_opt.mechanism_research.StageDesigner` writes a new pipeline
  stage and :class:`~domains.article_opt.mechanism_research.StageInstaller` injects it.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

from core.domain import ConfigLevel, Domain, Level2Parts, RunContext
from core.errors import UserError
from core.inner_loop import InnerLoopController
from core.llm_client import make_client
from core.records import TrialRecord
from core.schedule import BilevelRun
from core.settings import RunSettings, parse_levels, validate
from core.state import RunDir, atomic_write_text
from domains.article_opt import events as _events  # noqa: F401 - registers the article event models
from domains.article_opt import lessons, offline
from domains.article_opt.articles import resolve_article
from domains.article_opt.evaluator import ArticleEvaluator, Judge
from domains.article_opt.mechanism_research import StageDesigner, StageInstaller
from domains.article_opt.outer import OuterAnalyzer, dimension_summary
from domains.article_opt.pipeline import build_pipeline
from domains.article_opt.runner import ArticleState, PipelineExecutor, StageProposer

__all__ = ["ArticleDomain", "ArticleSession", "ArticleSettings", "make_settings", "parse_levels"]

NETWORK_STAGE_TIMEOUT_S = 300.0


class ArticleSettings(RunSettings):
    """An article_opt run: core's fields plus the articles, the judge and the stage timeout."""

    articles: tuple[str, ...] = Field(min_length=1)
    judge_provider: str | None = None
    judge_model: str | None = None
    inner_budget: int = Field(default=5, ge=1, le=10_000, validation_alias=AliasChoices("inner_budget", "max_inner"))
    outer_cycles: int = Field(default=4, ge=1, le=1_000, validation_alias=AliasChoices("outer_cycles", "max_outer"))
    stage_timeout_s: float | None = Field(default=None, gt=0)

    @property
    def max_inner(self) -> int:
        return self.inner_budget

    @property
    def max_outer(self) -> int:
        return self.outer_cycles

    def client_ids(self) -> dict[str, tuple[str, str | None]]:
        return {**super().client_ids(), "judge": self.pick(self.judge_provider, self.judge_model)}


def make_settings(**values: Any) -> ArticleSettings:
    return validate(ArticleSettings, values)


class ArticleConfigLevel(ConfigLevel):
    """Level 1.5: the configuration is the effective per-stage instructions."""

    applied, rejected = "outer_patch", "outer_rejected"

    def __init__(self, domain: ArticleDomain) -> None:
        self.domain = domain

    def initial(self) -> dict[str, str]:
        return {}

    def config_of(self, event: dict[str, Any]) -> dict[str, str]:
        return dict(event["effective"])

    def load(self, data: Any) -> dict[str, str]:
        return dict(data)

    def patch(self, cycle: int, config: dict[str, str]) -> None:
        self.domain.outer.step(cycle, self.domain.records())

    def install(self, config: dict[str, str]) -> None:
        self.domain.pipeline.overrides = dict(config)


class ArticleDomain(Domain):
    name = "article_opt"
    Settings = ArticleSettings

    register_offline = staticmethod(offline.register)

    @classmethod
    def check(cls, settings: ArticleSettings) -> None:
        if settings.executor == "ray":
            raise UserError("article_opt runs its trials' LLM stages in this process; --executor ray is for "
                            "trials that are processes (train_opt, script_opt): drop it (--parallel K still batches)")
        names = [resolve_article(a).name for a in settings.articles]
        if len(set(names)) != len(names):
            raise UserError(f"two articles share a name: {names}; rename one of the files")

    @classmethod
    def prepare(cls, settings: ArticleSettings, run: RunDir) -> dict[str, Any]:
        sources = [resolve_article(a) for a in settings.articles]
        for source in sources:
            atomic_write_text(run.path / "originals" / f"{source.name}.md", source.text)
        return {"article_names": [s.name for s in sources], "article_paths": [str(s.path) for s in sources]}

    def __init__(self, ctx: RunContext) -> None:
        run, settings, clients = ctx.run, ctx.settings, ctx.clients
        self.run = run
        self.settings = settings
        self.clients = clients
        journal = run.journal
        offline_only = all(not c.model_id.spec.needs_network for c in clients.values())
        timeout = settings.stage_timeout_s or (10.0 if offline_only else NETWORK_STAGE_TIMEOUT_S)
        self.pipeline = build_pipeline(clients["inner"], on_event=lambda e: journal.append(dict(e)),
                                       stage_timeout_s=timeout)
        evaluator = ArticleEvaluator(Judge(clients["judge"]))
        self.states: dict[str, ArticleState] = {}
        self.loops: dict[str, InnerLoopController] = {}
        for name in self.article_names():
            state = ArticleState(name=name, run_dir=run.path,
                                 original=(run.path / "originals" / f"{name}.md").read_text(encoding="utf-8"))
            self.states[name] = state
            self.loops[name] = InnerLoopController(
                run=run, loop=f"inner.{name}", direction="maximize", seed=settings.seed,
                proposer=StageProposer(pipeline=self.pipeline, state=state, journal=journal),
                executor=PipelineExecutor(pipeline=self.pipeline, state=state, journal=journal),
                evaluator=evaluator, lessons=lessons.extract, hook_timeout_s=settings.hook_timeout_s,
                max_provider_failures=settings.max_provider_failures,
            )
        self.outer = OuterAnalyzer(llm=clients["outer"], journal=journal, stage_names=lambda: self.pipeline.names)

    def article_names(self) -> list[str]:
        first = self.run.journal.last("run_started")
        order = {n: i for i, n in enumerate(first["article_names"] if first else [])}
        return [p.stem for p in sorted((self.run.path / "originals").glob("*.md"), key=lambda p: order.get(p.stem, 0))]

    def records(self) -> dict[str, list[TrialRecord]]:
        return {name: list(ctl.history) for name, ctl in self.loops.items()}

    def dimensions(self) -> dict[str, Any]:
        last = max((r.cycle for ctl in self.loops.values() for r in ctl.history), default=0)
        return dimension_summary(self.records(), last)

    def config_level(self) -> ArticleConfigLevel:
        return ArticleConfigLevel(self)

    def level2(self) -> Level2Parts:
        designer = StageDesigner(llm=self.clients["mechanism"], pipeline=self.pipeline, dimensions=self.dimensions)
        return Level2Parts(designer=designer, installer=StageInstaller(pipeline=self.pipeline, journal=self.run.journal))

    def baseline_error(self, loop: str, record: TrialRecord) -> str:
        return f"the judge could not score the original {loop} ({record.status.value}: {record.error})"

    def cycle_info(self, cycle: int) -> dict[str, Any]:
        return {"stages": self.pipeline.names, "overrides": dict(self.pipeline.overrides)}

    def finish(self) -> None:
        for name, ctl in self.loops.items():
            if ctl.incumbent:
                text = self.run.abs(ctl.incumbent).read_text(encoding="utf-8")
                atomic_write_text(self.run.path / "best" / f"{name}.md", text)

    def summarize(self) -> dict[str, Any]:
        from domains.article_opt.report import summarize  # the report reads the journal alone

        return summarize(self.run)


class ArticleSession(BilevelRun):
    """An article_opt run directory. Create with :meth:`start` or :meth:`resume`, then :meth:`run`."""

    domain_cls = ArticleDomain

    def make_client(self, provider: str, model: str | None, **kwargs: Any) -> Any:
        return make_client(provider, model, **kwargs)  # this module's name: tests and embedders may swap it

    @property
    def inner(self) -> dict[str, InnerLoopController]:
        return self.domain.loops

    @property
    def pipeline(self) -> Any:
        return self.domain.pipeline

    @property
    def states(self) -> dict[str, ArticleState]:
        return self.domain.states

    def records(self) -> dict[str, list[TrialRecord]]:
        return self.domain.records()

    def article_names(self) -> list[str]:
        return self.domain.article_names()
