"""Reference searches a user would pick instead of an LLM: RANDOM and TPE (Optuna's sampler).

Both search the space the LLM researcher searches — the editable constants that
:func:`domains.train_opt.target.discover` finds in the target's ``train.py``, with the same ranges —
and plug into the same :class:`~core.inner_loop.InnerLoopController` as a :class:`~core.plugins.Proposer`,
so they run under the same executor (``TrainExecutor``), budget, keep rule and journal as group A.

A proposal is a **full configuration**: every searched constant is set, as a change to the
incumbent. Since only searched constants are ever edited, "full configuration applied to the
incumbent" and "full configuration applied to the baseline" are the same file, and the
strict-improvement rule keeps the best configuration seen — exactly what a classical search reports.

How each spec becomes a dimension (also what TPE sees, in :meth:`SearchSpace.distributions`):

* ``int``: uniform integer in [low, high] (log-uniform when ``spec.log``); powers of two as a uniform
  exponent; ``float``: uniform or log-uniform; ``bool``: a coin; ``tuple``: each element uniform in
  [low, high];
* ``str`` with a ``pattern`` (``WINDOW_PATTERN``): one of :data:`STRING_CHOICES` that match it, plus the
  default. A string with no other valid choice is left at its default.

Sampled floats keep 4 significant digits, so the edited ``train.py`` stays readable.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from core.plugins import Proposer
from core.records import Proposal, ProposalContext, TrialRecord
from core.state import RunDir
from domains.train_opt.session import TrainSession, TrainSettings
from domains.train_opt.target import ParamSpec

Search = Literal["random", "tpe"]
# A small fixed set of strings for pattern-checked str constants (those that match the pattern are used).
STRING_CHOICES = ("L", "SL", "SSL", "SSSL", "SSSSSSSL", "LL", "SLSL", "SSLL", "S")
SIGNIFICANT_DIGITS = 4


def _round(value: float, low: float, high: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(rounded, low), high)


@dataclass(frozen=True)
class Dimension:
    """One searched constant. ``kind`` says how it is encoded for Optuna (see the module doc)."""

    spec: ParamSpec
    kind: Literal["int", "pow2", "float", "choice", "tuple"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def keys(self) -> list[str]:
        if self.kind == "pow2":
            return [f"log2({self.name})"]
        if self.kind == "tuple":
            return [f"{self.name}[{i}]" for i in range(self.spec.length or 0)]
        return [self.name]


def _dimension(spec: ParamSpec) -> Dimension | None:
    if not spec.editable:
        return None
    if spec.kind == "bool":
        return Dimension(spec, "choice", choices=(False, True))
    if spec.kind == "str":
        valid = [c for c in STRING_CHOICES if spec.pattern and re.fullmatch(spec.pattern, c)]
        choices = tuple(dict.fromkeys([spec.default, *valid]))
        return Dimension(spec, "choice", choices=choices) if len(choices) > 1 else None
    if spec.low is None or spec.high is None or spec.low >= spec.high:
        return None
    if spec.kind == "int" and spec.pow2:
        lo, hi = math.ceil(math.log2(max(spec.low, 1))), math.floor(math.log2(spec.high))
        return Dimension(spec, "pow2", low=lo, high=hi) if lo < hi else None
    if spec.kind == "int":
        lo, hi = math.ceil(spec.low), math.floor(spec.high)
        return Dimension(spec, "int", low=lo, high=hi, log=spec.log and lo >= 1) if lo < hi else None
    if spec.kind in ("float", "tuple"):
        return Dimension(spec, spec.kind, low=float(spec.low), high=float(spec.high), log=spec.log and spec.low > 0)
    return None


class SearchSpace:
    """The editable constants of a target as a box a classical search can sample."""

    def __init__(self, specs: dict[str, ParamSpec]) -> None:
        self.dims = [d for d in (_dimension(s) for s in specs.values()) if d is not None]
        if not self.dims:
            raise ValueError("the target has no searchable hyperparameters")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    # -- random sampling ---------------------------------------------------------------------------
    @staticmethod
    def _uniform(rng: random.Random, low: float, high: float, log: bool) -> float:
        return math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for d in self.dims:
            if d.kind == "choice":
                config[d.name] = rng.choice(d.choices)
            elif d.kind == "pow2":
                config[d.name] = 2 ** rng.randint(int(d.low), int(d.high))
            elif d.kind == "int":
                value = round(self._uniform(rng, d.low, d.high, d.log)) if d.log else rng.randint(int(d.low), int(d.high))
                config[d.name] = int(min(max(value, d.low), d.high))
            elif d.kind == "float":
                config[d.name] = _round(self._uniform(rng, d.low, d.high, d.log), d.low, d.high)
            else:
                config[d.name] = tuple(_round(self._uniform(rng, d.low, d.high, d.log), d.low, d.high)
                                       for _ in range(d.spec.length or 0))
        return config

    # -- the Optuna view -------------------------------------------------------------------------
    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for d in self.dims:
            for key in d.keys():
                if d.kind == "choice":
                    out[key] = CategoricalDistribution(d.choices)
                elif d.kind in ("pow2", "int"):
                    out[key] = IntDistribution(int(d.low), int(d.high), log=d.log)
                else:
                    out[key] = FloatDistribution(d.low, d.high, log=d.log)
        return out

    def to_params(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """Optuna parameters of a configuration; ``None`` when it lies outside the box."""
        params: dict[str, Any] = {}
        try:
            for d in self.dims:
                value = config[d.name]
                if d.kind == "choice":
                    if value not in d.choices:
                        return None
                    params[d.name] = value
                elif d.kind == "pow2":
                    exponent = int(value).bit_length() - 1
                    if 2**exponent != value or not d.low <= exponent <= d.high:
                        return None
                    params[f"log2({d.name})"] = exponent
                elif d.kind == "tuple":
                    if len(value) != len(d.keys()) or not all(d.low <= v <= d.high for v in value):
                        return None
                    params.update({k: float(v) for k, v in zip(d.keys(), value, strict=True)})
                else:
                    if not d.low <= value <= d.high:
                        return None
                    params[d.name] = int(value) if d.kind == "int" else float(value)
        except (KeyError, TypeError, ValueError):
            return None
        return params

    def from_params(self, params: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for d in self.dims:
            if d.kind == "choice":
                config[d.name] = params[d.name]
            elif d.kind == "pow2":
                config[d.name] = 2 ** int(params[f"log2({d.name})"])
            elif d.kind == "int":
                config[d.name] = int(params[d.name])
            elif d.kind == "float":
                config[d.name] = _round(float(params[d.name]), d.low, d.high)
            else:
                config[d.name] = tuple(_round(float(params[k]), d.low, d.high) for k in d.keys())
        return config


def _search_records(history: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in history if r.proposal is not None and not r.proposal.is_baseline]


class RandomProposer(Proposer):
    """Uniform random search over the box. Stateless: the sample of iteration ``i`` depends only on
    the run's seed and ``i`` (``ctx.seed``), so a resumed run proposes what the uninterrupted one would."""

    def __init__(self, *, space: SearchSpace) -> None:
        self.space = space

    def propose(self, ctx: ProposalContext) -> Proposal:
        config = self.space.sample(random.Random(ctx.seed))
        return Proposal(changes=config, hypothesis=f"random sample of all {len(config)} searched constants",
                        region="random", origin="random")


class TPEProposer(Proposer):
    """Optuna's TPE sampler through ask/tell, rebuilt from the history at every proposal.

    Each proposal builds a fresh in-memory study, tells it every finished trial of the history (the
    baseline's configuration with its score, then each search trial: ``COMPLETE`` with its val_bpb,
    crashes / failures / timeouts as ``FAIL``), and asks a sampler seeded with ``ctx.seed``. So the
    search state is the journal itself: resuming rebuilds it exactly, and nothing is stored twice.
    ``n_startup_trials`` counts completed trials, the baseline included.
    """

    def __init__(self, *, space: SearchSpace, baseline: dict[str, Any], n_startup_trials: int = 10) -> None:
        self.space = space
        self.baseline = baseline
        self.n_startup_trials = n_startup_trials

    def study(self, history: Sequence[TrialRecord], seed: int) -> Any:
        import optuna
        from optuna.samplers import TPESampler
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = self.space.distributions()
        study = optuna.create_study(direction="minimize",
                                    sampler=TPESampler(seed=seed % 2**32, n_startup_trials=self.n_startup_trials))
        baseline = next((r for r in history if r.proposal is not None and r.proposal.is_baseline), None)
        told = [(self.baseline, baseline)] if baseline is not None else []
        told += [(dict(r.proposal.changes), r) for r in _search_records(history)]
        for config, record in told:
            params = self.space.to_params(config)
            if params is None:
                continue
            if record.finished_ok and record.score is not None and math.isfinite(record.score):
                trial = create_trial(params=params, distributions=distributions, value=record.score)
            else:
                trial = create_trial(params=params, distributions=distributions, state=TrialState.FAIL)
            study.add_trial(trial)
        return study

    def propose(self, ctx: ProposalContext) -> Proposal:
        study = self.study(ctx.history, ctx.seed)
        trial = study.ask(self.space.distributions())
        completed = sum(t.value is not None for t in study.trials)
        phase = "startup (random)" if completed < self.n_startup_trials else "TPE"
        return Proposal(changes=self.space.from_params(trial.params), region="tpe", origin="tpe",
                        hypothesis=f"TPE suggestion after {completed} completed trial(s), {phase} phase")


def tpe_startup_trials(iterations: int) -> int:
    """Optuna's default of 10 random startup trials would make a short budget pure random search;
    a third of the budget (at least 1, at most 10) leaves TPE most of it."""
    return max(1, min(10, iterations // 3))


class ClassicSession(TrainSession):
    """A train_opt run whose Level-1 proposer is a classical search instead of the researcher.

    Everything else is :class:`TrainSession`: the run directory, the copied target, the baseline,
    the executor, the keep rule, the cycle schedule, ``resume``. No LLM is called (the session's
    client is the offline stand-in, built and never asked); ``classic.json`` in the run directory
    says which search ran.
    """

    search: ClassVar[Search]

    def __init__(self, run: RunDir, settings: TrainSettings) -> None:
        super().__init__(run, settings)
        marker = run.path / "classic.json"
        if not marker.exists():
            run.write_json("classic.json", {"search": self.search, "llm": "none",
                                            "note": "classical reference search; the researcher client is never called"})
        space = SearchSpace(self.specs)
        if self.search == "random":
            proposer: Proposer = RandomProposer(space=space)
        else:
            budget = settings.inner_budget * settings.outer_cycles
            proposer = TPEProposer(space=space, baseline={n: s.default for n, s in self.specs.items()},
                                   n_startup_trials=tpe_startup_trials(budget))
        self.inner.proposer = proposer


class RandomSession(ClassicSession):
    search = "random"


class TPESession(ClassicSession):
    search = "tpe"


def session_class(search: Search | None) -> type[TrainSession]:
    return {None: TrainSession, "random": RandomSession, "tpe": TPESession}[search]
