"""Reference searches on a :class:`~core.space.SearchSpace`: what a user would run instead of an LLM.

Every reference gets the same deal: the same space (the one feasibility check included), the same
trial budget, the starting configuration as its first trial (the baseline, enqueued), and each
failure reported back (Optuna: the trial is told it failed *and* its value is the worst seen, so TPE
learns where crashes are). A reference proposes; :func:`run_search` measures, keeps the best
measured configuration (strict improvement, as Level 1) and never re-runs a measured configuration
(a duplicate costs a proposal, not a trial).

* ``random``: independent feasible samples;
* ``local``: coordinate search from the incumbent with an adaptive step (doubled after a success,
  halved after a full sweep without one), in random coordinate order per sweep;
* ``tpe``: Optuna's TPE, multivariate, 5 start-up trials;
* ``cmaes``: Optuna's CMA-ES (continuous relaxation of int/pow2 dimensions; categorical ones fall
  back to Optuna's independent sampler).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.space import Dim, SearchSpace

Measure = Callable[[dict[str, Any]], float | None]  # None: the trial crashed
REFERENCES = ("random", "local", "tpe", "cmaes")
MAX_PROPOSALS_PER_TRIAL = 50


@dataclass
class Trial:
    index: int
    config: dict[str, Any]
    value: float | None  # None: crashed
    kept: bool
    reason: str = ""


def key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


class Searcher:
    """Proposes configurations; told the result of each one it proposed."""

    def __init__(self, space: SearchSpace, start: dict[str, Any], seed: int) -> None:
        self.space, self.start, self.rng = space, dict(start), random.Random(seed)
        self.seed = seed

    def ask(self, incumbent: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def tell(self, config: dict[str, Any], value: float | None, improved: bool) -> None:
        return None


class RandomSearch(Searcher):
    def ask(self, incumbent: dict[str, Any]) -> dict[str, Any]:
        return self.space.sample(self.rng)


class LocalSearch(Searcher):
    """Coordinate search with an adaptive step around the incumbent."""

    def __init__(self, space: SearchSpace, start: dict[str, Any], seed: int) -> None:
        super().__init__(space, start, seed)
        self.scale = 1.0
        self.queue: list[tuple[str, int]] = []
        self.improved_this_sweep = False

    def ask(self, incumbent: dict[str, Any]) -> dict[str, Any]:
        for _ in range(4 * len(self.space.dims) + 4):
            if not self.queue:
                if not self.improved_this_sweep and self.scale > 0.125:
                    self.scale /= 2
                self.improved_this_sweep = False
                moves = [(d.name, s) for d in self.space.dims for s in (1, -1)]
                self.rng.shuffle(moves)
                self.queue = moves
            name, direction = self.queue.pop()
            candidate = dict(incumbent)
            candidate[name] = self.space.dim(name).step(incumbent[name], direction, self.scale)
            candidate = self.space.repair(candidate)
            if candidate != incumbent and self.space.feasible(candidate) is None:
                return candidate
        return self.space.sample(self.rng)

    def tell(self, config: dict[str, Any], value: float | None, improved: bool) -> None:
        if improved:
            self.improved_this_sweep = True
            self.scale = min(self.scale * 2, 2.0)
            self.queue = []  # restart the sweep around the new incumbent


class OptunaSearch(Searcher):
    def __init__(self, space: SearchSpace, start: dict[str, Any], seed: int, sampler: str) -> None:
        super().__init__(space, start, seed)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        if sampler == "tpe":
            chosen = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
        else:
            chosen = optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=3, warn_independent_sampling=False)
        self.optuna = optuna
        self.study = optuna.create_study(direction="minimize", sampler=chosen)
        self.study.enqueue_trial(self._encode(start))
        self.pending: dict[str, Any] = {}
        self.worst: float | None = None

    def _distribution(self, d: Dim) -> Any:
        dist = self.optuna.distributions
        if d.kind == "choice":
            return dist.CategoricalDistribution(list(d.choices))
        if d.kind == "pow2":
            return dist.IntDistribution(int(math.log2(d.low)), int(math.log2(d.high)))
        if d.kind == "int":
            return dist.IntDistribution(int(d.low), int(d.high), log=d.log)
        return dist.FloatDistribution(d.low, d.high, log=d.log)

    def _encode(self, config: dict[str, Any]) -> dict[str, Any]:
        return {d.name: int(math.log2(config[d.name])) if d.kind == "pow2" else config[d.name] for d in self.space.dims}

    def _decode(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for d in self.space.dims:
            value = params[d.name]
            if d.kind == "pow2":
                value = 2 ** int(value)
            elif d.kind == "float":
                value = float(f"{value:.4g}")
            out[d.name] = value
        return out

    def ask(self, incumbent: dict[str, Any]) -> dict[str, Any]:
        for _ in range(MAX_PROPOSALS_PER_TRIAL):
            trial = self.study.ask({d.name: self._distribution(d) for d in self.space.dims})
            config = self.space.repair(self._decode(trial.params))
            reason = self.space.feasible(config)
            if reason is None:
                self.pending[key(config)] = trial
                return config
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)  # infeasible: told, not run
        return self.space.sample(self.rng)

    def tell(self, config: dict[str, Any], value: float | None, improved: bool) -> None:
        trial = self.pending.pop(key(config), None)
        if trial is None:
            return
        if value is None:
            # a crash: told as the worst value seen, so TPE's model learns the region is bad
            self.study.tell(trial, self.worst if self.worst is not None else 1e6)
            return
        self.worst = value if self.worst is None else max(self.worst, value)
        self.study.tell(trial, value)


def make_searcher(name: str, space: SearchSpace, start: dict[str, Any], seed: int) -> Searcher:
    if name == "random":
        return RandomSearch(space, start, seed)
    if name == "local":
        return LocalSearch(space, start, seed)
    if name in ("tpe", "cmaes"):
        return OptunaSearch(space, start, seed, name)
    raise ValueError(f"unknown reference {name!r}; choose from {', '.join(REFERENCES)}")


def run_search(searcher: Searcher, start: dict[str, Any], measure: Measure, trials: int) -> list[Trial]:
    """``trials`` measured trials, the start first; a configuration already measured is never run
    again (the searcher is told its known value and asked again)."""
    seen: dict[str, float | None] = {}
    history: list[Trial] = []
    incumbent, best = dict(start), None
    proposals = 0
    while len(history) < trials:
        config = dict(start) if not history else searcher.ask(incumbent)
        proposals += 1
        k = key(config)
        if k in seen:  # a duplicate: no trial spent, the searcher learns what it already knows
            searcher.tell(config, seen[k], False)
            if proposals > trials * MAX_PROPOSALS_PER_TRIAL:
                break
            continue
        value = measure(config)
        seen[k] = value
        improved = value is not None and (best is None or value < best)
        if improved:
            incumbent, best = dict(config), value
        history.append(Trial(index=len(history), config=config, value=value, kept=improved))
        searcher.tell(config, value, improved)
    return history
