"""Surrogate-guided proposer: a small model of the run's own history picks the next candidate among
neighbours of the incumbent — a Gaussian process with expected improvement, or TPE's Parzen ratio.

Diagnosis it addresses — *plateau*, when the trials so far already say which way is better: the
proposer steps at random around the incumbent and re-tries directions the history shows are bad,
so trials are spent where a model of the measured points would not spend them.

How: every configuration the run has measured is rebuilt from the history (the space's starting
values plus each record's changes, see :class:`~core.mechanism.ParamSpace`); a crash, failure or
timeout counts as the worst score seen, so the model learns where crashes are. ``propose`` draws
``candidates`` neighbours of the incumbent (one parameter, or up to ``max_changes`` in 30% of the
draws, moved by ½, 1 or 2 steps times the guidance's ``step_scale``; a step is a doubling on a log
scale and an eighth of the range on a linear one), drops those already measured (or in flight) and
proposes the best by the model:

- ``model="gp"`` (default): Gaussian-process regression on the standardised scores — squared-
  exponential kernel, ``choice_kernel`` between two different options of a choice, observation noise
  ``noise`` — and the candidate with the highest expected improvement over the best score measured.
  With ``fit`` (default) each number gets its own kernel width, chosen by the GP's marginal
  likelihood (``WIDTHS``: ¹⁄₈ to 2 × ``bandwidth`` steps; coordinate ascent over the numbers that
  vary, widest first, a width changing only on a strictly higher likelihood; at most
  ``FIT_EVALUATIONS`` likelihoods on at most ``FIT_POINTS`` trials) once there are two measured
  trials per number, and a candidate's move on a number narrower than ``bandwidth`` shrinks in
  proportion: a parameter on which the metric is steep (a learning rate next to a warm-up ratio) is
  moved finely (a power of two still moves by at least one doubling, an integer by at least one).
  Without ``fit``, one width (``bandwidth``) for every number;
- ``model="parzen"``: TPE — the best ``gamma`` share of the trials are *good*, the rest *bad*, each
  set a Parzen density with the same kernel; the candidate with the highest ``l(x) / g(x)``.

It acts only where it can: with fewer than ``min_trials`` scored trials, no space, or no new
neighbour it returns ``None`` and the proposer is asked as usual. With ``every`` > 1 it proposes on
every ``every``-th iteration only, leaving the others to the proposer (an LLM's ideas and the
model's picks alternate). Draws come from ``ctx.seed``: a resumed run proposes the same candidate.
Stateless: everything is recomputed from ``ctx.history`` each call (a GP on n trials costs O(n³)
pure-Python steps, the width fit at most ``FIT_EVALUATIONS`` of them on ``FIT_POINTS`` trials: well
under a second, inside the hook deadline).

The space is the ``space`` parameter — JSON, ``{"NAME": {"kind": "float", "low": .., "high": ..,
"log": true, "value": ..}, ...}``, which a domain fills in (train_opt does it for its Level-2
designs: :func:`core.mechanisms.space_param`) — or ``ctx.search["params"]`` when the domain
publishes it there. Standard library only, so it runs as a template in the sandboxed worker.

This module is also a Level-2 template: it imports only ``core.mechanism``, ``core.records`` and
allow-listed stdlib modules.
"""

import math
import random
from typing import Any

from core.mechanism import Mechanism, ParamSpace, merge_params
from core.records import Proposal, ProposalContext, Status

PARAMS = {
    "space": "",  # JSON of the parameter space; "" = ctx.search["params"] (none: defer to the proposer)
    "min_trials": 4,  # scored trials before the model proposes anything
    "candidates": 48,  # neighbours of the incumbent drawn per proposal
    "gamma": 0.25,  # parzen: share of the measured configurations counted as good
    "bandwidth": 2.0,  # kernel width, in steps (a doubling on a log scale, 1/8 of a linear range)
    "choice_kernel": 0.2,  # kernel value between two different options of a choice
    "max_changes": 2,  # a neighbour moves one parameter, or up to this many (30% of draws)
    "every": 1,  # propose on every `every`-th iteration; the others are left to the proposer
    "model": "gp",  # "gp": Gaussian-process regression + expected improvement; "parzen": TPE's l/g ratio
    "noise": 0.1,  # gp: observation noise, as a share of the scores' spread
    "fit": True,  # gp: fit a kernel width per number by marginal likelihood (else `bandwidth` for all)
}
_MODELS = ("gp", "parzen")

_MOVES = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
WIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)  # gp fit: the kernel widths tried, as multiples of `bandwidth`
FIT_POINTS = 40  # gp fit: the most measured trials the widths are fitted on (the last of the data)
FIT_EVALUATIONS = 64  # gp fit: most marginal likelihoods computed per proposal


class SurrogateMechanism(Mechanism):
    """Proposes the neighbour of the incumbent that a model of the measured trials ranks best."""

    name = "surrogate"
    description = ("Surrogate-guided proposer: a Gaussian process (or TPE's Parzen ratio) fitted to the measured "
                   "trials proposes the neighbour of the incumbent with the best expected improvement.")

    def __init__(self, **params: Any) -> None:
        merged = merge_params(PARAMS, params)
        if merged["min_trials"] < 2:
            raise ValueError("parameter 'min_trials' must be >= 2")
        if merged["candidates"] < 1:
            raise ValueError("parameter 'candidates' must be >= 1")
        if not 0 < merged["gamma"] < 1:
            raise ValueError("parameter 'gamma' must be in (0, 1)")
        if merged["bandwidth"] <= 0:
            raise ValueError("parameter 'bandwidth' must be > 0")
        if not 0 <= merged["choice_kernel"] <= 1:
            raise ValueError("parameter 'choice_kernel' must be in [0, 1]")
        if merged["model"] not in _MODELS:
            raise ValueError(f"parameter 'model' must be one of {list(_MODELS)}, got {merged['model']!r}")
        if merged["noise"] <= 0:
            raise ValueError("parameter 'noise' must be > 0")
        if merged["max_changes"] < 1 or merged["every"] < 1:
            raise ValueError("parameters 'max_changes' and 'every' must be >= 1")
        super().__init__(**merged)
        ParamSpace.of(merged["space"])  # a malformed space fails here, not at the first proposal

    def _kernel(self, space: ParamSpace, a: dict[str, Any], b: dict[str, Any], names: list[str],
                widths: dict[str, float] | None = None) -> float:
        value = 1.0
        for name in names:
            if space.dims[name]["kind"] in ("choice", "bool"):
                value *= 1.0 if a[name] == b[name] else self.params["choice_kernel"]
            else:
                width = widths[name] if widths else self.params["bandwidth"]
                d = (space.coordinate(name, a[name]) - space.coordinate(name, b[name])) / width
                value *= math.exp(-0.5 * d * d)
        return value

    def fit_widths(self, space: ParamSpace, xs: list[dict[str, Any]], zs: list[float],
                   names: list[str]) -> dict[str, float]:
        """A kernel width per number (automatic relevance determination): coordinate ascent of the
        GP's log marginal likelihood over ``WIDTHS`` × ``bandwidth`` (two passes, widest first, a
        width changes only on a strictly higher likelihood) over the numbers that vary in ``xs``."""
        numeric = [n for n in names if space.dims[n]["kind"] not in ("choice", "bool")]
        widths = {n: float(self.params["bandwidth"]) for n in numeric}
        if not numeric or len(xs) < 2 * len(numeric):
            return widths
        xs, zs = xs[-FIT_POINTS:], zs[-FIT_POINTS:]
        size = len(xs)
        coords = {n: [space.coordinate(n, x[n]) for x in xs] for n in numeric}
        gaps = {n: [[(c[i] - c[j]) ** 2 for j in range(size)] for i in range(size)] for n, c in coords.items()}
        others = [n for n in names if n not in widths]
        fixed = [[self._kernel(space, a, b, others) for b in xs] for a in xs]
        noise = self.params["noise"] ** 2

        def likelihood(w: dict[str, float]) -> float:
            scales = [(gaps[n], -0.5 / w[n] ** 2) for n in numeric]
            k = [[0.0] * size for _ in range(size)]
            for i in range(size):
                for j in range(i + 1):
                    value = fixed[i][j] * math.exp(sum(g[i][j] * c for g, c in scales))
                    k[i][j] = k[j][i] = value
                k[i][i] += noise
            chol = _cholesky(k)
            alpha = _solve_upper(chol, _solve_lower(chol, zs))
            return -0.5 * sum(a * z for a, z in zip(alpha, zs, strict=True)) - sum(math.log(chol[i][i]) for i in range(size))

        varying = [n for n in numeric if min(coords[n]) != max(coords[n])]  # the others cannot change it
        best, spent = likelihood(widths), 1
        for _ in range(2):
            for name in varying:
                for factor in sorted(WIDTHS, reverse=True):
                    if spent >= FIT_EVALUATIONS:
                        return widths
                    trial = {**widths, name: self.params["bandwidth"] * factor}
                    value, spent = likelihood(trial), spent + 1
                    if value > best + 1e-9:
                        best, widths = value, trial
        return widths

    def split(self, space: ParamSpace, ctx: ProposalContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(good, bad)`` measured configurations (parzen); empty while there are too few scored ones."""
        data = sorted(self.data(space, ctx), key=lambda item: item[0])  # stable: ties keep history order
        n_good = max(1, math.ceil(self.params["gamma"] * len(data))) if data else 0
        return [c for _, c in data[:n_good]], [c for _, c in data[n_good:]]

    def ratio(self, space: ParamSpace, x: dict[str, Any], good: list[dict[str, Any]], bad: list[dict[str, Any]],
              names: list[str]) -> float:
        """``l(x) / g(x)``: how much likelier ``x`` is under the good trials than under the bad ones."""
        prior = 1e-3
        lx = (prior + sum(self._kernel(space, x, c, names) for c in good)) / (len(good) + 1)
        gx = (prior + sum(self._kernel(space, x, c, names) for c in bad)) / (len(bad) + 1)
        return lx / gx

    def data(self, space: ParamSpace, ctx: ProposalContext) -> list[tuple[float, dict[str, Any]]]:
        """``(score, configuration)`` of every measured trial, scores signed so lower is better; a
        crash counts as the worst score seen (so the model learns where crashes are)."""
        sign = 1.0 if ctx.direction == "minimize" else -1.0
        scored: list[tuple[float, dict[str, Any]]] = []
        failed: list[dict[str, Any]] = []
        baseline = next((r for r in ctx.history if r.proposal is not None and r.proposal.is_baseline), None)
        if baseline is not None and baseline.score is not None:
            scored.append((sign * baseline.score, space.start()))
        for _, config, record in space.walk(ctx.history):
            if record.finished_ok and record.score is not None:
                scored.append((sign * record.score, config))
            elif record.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT):
                failed.append(config)
        if len(scored) < self.params["min_trials"]:
            return []
        worst = max(y for y, _ in scored)
        return scored + [(worst, c) for c in failed]

    def gp(self, space: ParamSpace, data: list[tuple[float, dict[str, Any]]], names: list[str]):
        """A Gaussian process fitted to ``data``: ``(predict, widths)`` — ``predict(x) -> (mean, sd)`` in
        score units, and the kernel width per number it fitted (empty with ``fit`` off)."""
        ys = [y for y, _ in data]
        mu = sum(ys) / len(ys)
        spread = math.sqrt(sum((y - mu) ** 2 for y in ys) / len(ys)) or 1.0
        zs = [(y - mu) / spread for y in ys]
        xs = [c for _, c in data]
        n = len(xs)
        noise = self.params["noise"] ** 2
        widths = self.fit_widths(space, xs, zs, names) if self.params["fit"] else None
        k = [[self._kernel(space, xs[i], xs[j], names, widths) + (noise if i == j else 0.0) for j in range(n)]
             for i in range(n)]
        chol = _cholesky(k)
        alpha = _solve_upper(chol, _solve_lower(chol, zs))

        def predict(x: dict[str, Any]) -> tuple[float, float]:
            kx = [self._kernel(space, x, c, names, widths) for c in xs]
            mean = sum(a * b for a, b in zip(kx, alpha, strict=True))
            v = _solve_lower(chol, kx)
            var = max(1e-12, 1.0 - sum(t * t for t in v))
            return mu + spread * mean, spread * math.sqrt(var)

        return predict, widths or {}

    def propose(self, ctx: ProposalContext) -> Proposal | None:
        space = ParamSpace.of(self.params["space"], ctx)
        if space is None or ctx.iteration % self.params["every"]:
            return None
        names = space.names(ctx)
        model_names = sorted(space.dims)
        if self.params["model"] == "gp":
            data = self.data(space, ctx)
            if not names or not data:
                return None
            predict, widths = self.gp(space, data, model_names)
            best_y = min(y for y, _ in data)

            def score(x: dict[str, Any]) -> float:
                mean, sd = predict(x)
                z = (best_y - mean) / sd
                return (best_y - mean) * 0.5 * (1 + math.erf(z / math.sqrt(2))) + sd * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
            what = f"Gaussian process on {len(data)} trials"
        else:
            widths = {}
            good, bad = self.split(space, ctx)
            if not names or not good:
                return None

            def score(x: dict[str, Any]) -> float:
                return self.ratio(space, x, good, bad, model_names)
            what = f"Parzen model of {len(good) + len(bad)} trials"
        current = space.incumbent(ctx.history)
        seen = space.measured(ctx)
        rng = random.Random(ctx.seed)
        scale = ctx.guidance.constraints.step_scale or float(ctx.search.get("step_scale") or 1.0)
        best: tuple[float, dict[str, Any]] | None = None
        for _ in range(self.params["candidates"]):
            k = min(len(names), self.params["max_changes"]) if rng.random() < 0.3 else 1
            changes = {}
            for name in rng.sample(names, k):
                step = rng.choice(_MOVES) * scale
                if widths.get(name):  # a fitted width: the metric changes on that scale, so move on it
                    step *= min(1.0, widths[name] / self.params["bandwidth"])
                new = space.move(name, current[name], step, rng)
                if new != current[name]:
                    changes[name] = new
            config = {**current, **changes}
            if not changes or space.key(config) in seen:
                continue
            seen.add(space.key(config))
            r = score(config)
            if best is None or r > best[0]:
                best = (r, changes)
        if best is None:
            return None
        value, changes = best
        words = ", ".join(f"{n} {current[n]!r} → {v!r}" for n, v in sorted(changes.items()))
        measure = "expected improvement" if self.params["model"] == "gp" else "l/g ratio"
        return space.proposal(current, changes, f"[surrogate] {what}: {words} has the best {measure} "
                                                f"({value:.3g}) among the neighbours drawn")


def _cholesky(a: list[list[float]]) -> list[list[float]]:
    n = len(a)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            total = a[i][j] - sum(low[i][k] * low[j][k] for k in range(j))
            if i == j:
                low[i][i] = math.sqrt(max(total, 1e-10))
            else:
                low[i][j] = total / low[j][j]
    return low


def _solve_lower(low: list[list[float]], b: list[float]) -> list[float]:
    out: list[float] = []
    for i, row in enumerate(low):
        out.append((b[i] - sum(row[k] * out[k] for k in range(i))) / row[i])
    return out


def _solve_upper(low: list[list[float]], b: list[float]) -> list[float]:
    """Solve ``low^T x = b`` (``low`` lower triangular)."""
    n = len(low)
    out = [0.0] * n
    for i in range(n - 1, -1, -1):
        out[i] = (b[i] - sum(low[k][i] * out[k] for k in range(i + 1, n))) / low[i][i]
    return out
