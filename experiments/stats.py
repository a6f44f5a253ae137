"""Small-sample statistics for the ablation report, in numpy and the standard library only.

Everything the report says about a group — mean, sample standard deviation, a t-based confidence
interval — and about a pair of groups — Welch's t-test, a permutation test, a bootstrap interval of
the difference of means — comes from here. The Student-t distribution is computed from the
regularized incomplete beta function (continued fraction, as in Numerical Recipes §6.4), so the
project needs no scipy.

All functions take plain sequences of floats. Where a quantity is undefined (a standard deviation
of one value, a test with a group of one) they return ``None`` rather than raise: an ablation with a
missing or failed repeat still gets a report, and the report says why a cell is empty.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Enumerate every relabelling when there are at most this many; otherwise sample.
EXACT_PERMUTATION_LIMIT = 20_000
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0


# --- the Student-t distribution ------------------------------------------------------------------


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc needs a > 0 and b > 0")
    if not 0.0 <= x <= 1.0:
        raise ValueError("betainc needs 0 <= x <= 1")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # The fraction converges fast for x < (a+1)/(a+b+2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be > 0")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value P(|T| >= |t|)."""
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (inverse of :func:`t_cdf`), by bisection."""
    if not 0.0 < q < 1.0:
        raise ValueError("quantile must be strictly between 0 and 1")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --- one group -----------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1 in the denominator); ``None`` below two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """t-based confidence interval of the mean: mean ± t_{(1+level)/2, n-1} · s / √n."""
    n = len(values)
    if n < 2:
        return None
    m, s = float(np.mean(values)), float(np.std(values, ddof=1))
    half = t_ppf(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
    return m - half, m + half


# --- two groups ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of mean(a) - mean(b)."""

    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's t-test (two-sided). ``None`` when either group has fewer than two values.

    With both variances zero the statistic is 0 (equal means, p = 1) or ±inf (p = 0), and the
    Welch–Satterthwaite df falls back to n_a + n_b - 2.
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    va, vb = float(np.var(a, ddof=1)) / na, float(np.var(b, ddof=1)) / nb
    diff = float(np.mean(a)) - float(np.mean(b))
    se2 = va + vb
    if se2 == 0.0:
        if diff == 0.0:
            return Welch(t=0.0, df=float(na + nb - 2), p=1.0)
        return Welch(t=math.copysign(math.inf, diff), df=float(na + nb - 2), p=0.0)
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return Welch(t=t, df=df, p=t_two_sided_p(t, df))


@dataclass(frozen=True)
class Permutation:
    """Two-sided permutation test of the difference of means."""

    p: float
    exact: bool
    resamples: int  # relabellings enumerated (exact) or drawn (Monte Carlo)
    min_p: float  # the smallest p this test can give at these group sizes


def permutation_test(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED, exact_limit: int = EXACT_PERMUTATION_LIMIT) -> Permutation | None:
    """Share of relabellings of the pooled values whose |mean difference| is at least the observed one.

    Exact (every split enumerated) when there are at most ``exact_limit`` splits; otherwise
    ``resamples`` seeded random splits, with p = (hits + 1) / (resamples + 1) so it is never 0.
    """
    na, nb = len(a), len(b)
    if na < 1 or nb < 1:
        return None
    pooled = np.asarray(list(a) + list(b), dtype=float)
    n, total = na + nb, float(pooled.sum())
    observed = abs(float(np.mean(a)) - float(np.mean(b)))
    tolerance = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    splits = math.comb(n, na)

    def diffs(sums_a: np.ndarray) -> np.ndarray:
        return np.abs(sums_a / na - (total - sums_a) / nb)

    if splits <= exact_limit:
        index = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), na)),
                            dtype=np.int64, count=splits * na).reshape(splits, na)
        hits = int(np.count_nonzero(diffs(pooled[index].sum(axis=1)) >= observed - tolerance))
        # The observed split and its mirror (when na == nb) are always hits, so the floor is 1 or 2 splits.
        return Permutation(p=hits / splits, exact=True, resamples=splits,
                           min_p=(2 if na == nb else 1) / splits)
    rng = np.random.default_rng(seed)
    sums = np.empty(resamples)
    for i in range(resamples):
        sums[i] = pooled[rng.permutation(n)[:na]].sum()
    hits = int(np.count_nonzero(diffs(sums) >= observed - tolerance))
    return Permutation(p=(hits + 1) / (resamples + 1), exact=False, resamples=resamples, min_p=1 / (resamples + 1))


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(a) - mean(b), each group resampled with replacement.

    With very few repeats the percentile interval is too narrow (it cannot see variance the sample
    did not show); the report pairs it with Welch's test and says so.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ma = xa[rng.integers(0, len(xa), size=(resamples, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), size=(resamples, len(xb)))].mean(axis=1)
    lo, hi = np.quantile(ma - mb, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# --- paired designs (same seed in both arms) -----------------------------------------------------


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``a - b`` over seeds: mean difference, its t-based CI, the paired t
    test's and the Wilcoxon signed-rank test's two-sided p-values, and a bootstrap CI."""

    n: int
    mean_diff: float
    ci: tuple[float, float] | None
    t_p: float | None
    wilcoxon_p: float | None
    bootstrap_ci: tuple[float, float] | None


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (normal approximation with tie and zero corrections,
    Pratt's treatment of zeros dropped: zeros are discarded). ``None`` when every difference is 0."""
    d = np.asarray([x for x in diffs if x != 0.0], dtype=float)
    n = len(d)
    if n == 0:
        return None
    order = np.argsort(np.abs(d), kind="mergesort")
    ranks = np.empty(n)
    absd = np.abs(d)[order]
    i = 0
    tie_term = 0.0
    while i < n:
        j = i
        while j + 1 < n and absd[j + 1] == absd[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    w_plus = float(ranks[d > 0].sum())
    mean_w = n * (n + 1) / 4.0
    var_w = n * (n + 1) * (2 * n + 1) / 24.0 - tie_term / 48.0
    if var_w <= 0:
        return None
    z = (w_plus - mean_w - math.copysign(0.5, w_plus - mean_w)) / math.sqrt(var_w)  # continuity correction
    return normal_two_sided_p(z)


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
           seed: int = DEFAULT_SEED) -> Paired:
    if len(a) != len(b):
        raise ValueError("a paired comparison needs the same seeds in both arms")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    m = float(d.mean()) if n else float("nan")
    ci = mean_ci(list(d), level) if n >= 2 else None
    t_p = None
    if n >= 2:
        s = float(d.std(ddof=1))
        t_p = 1.0 if s == 0 and m == 0 else (0.0 if s == 0 else t_two_sided_p(m / (s / math.sqrt(n)), n - 1))
    boot = None
    if n >= 2:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        boot = (float(lo), float(hi))
    return Paired(n=n, mean_diff=m, ci=ci, t_p=t_p, wilcoxon_p=wilcoxon_p(list(d)), bootstrap_ci=boot)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (family-wise error), ``None`` passed through."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def equivalent(diffs: Sequence[float], margin: float, *, alpha: float = 0.05) -> bool | None:
    """TOST: is the mean paired difference within ±``margin``? Both one-sided t tests at ``alpha``."""
    n = len(diffs)
    if n < 2:
        return None
    d = np.asarray(diffs, dtype=float)
    m, s = float(d.mean()), float(d.std(ddof=1))
    if s == 0:
        return abs(m) < margin
    se = s / math.sqrt(n)
    p_low = 1.0 - t_cdf((m + margin) / se, n - 1)
    p_high = t_cdf((m - margin) / se, n - 1)
    return max(p_low, p_high) < alpha
