"""experiments.stats against values computed by hand or from closed forms."""

from __future__ import annotations

import math

import pytest

from experiments import stats


def test_betainc_matches_the_binomial_closed_form() -> None:
    # For whole a, b: I_x(a, b) = P(Binomial(a+b-1, x) >= a). a=2, b=3, x=0.5: (6+4+1)/16.
    assert stats.betainc(2, 3, 0.5) == pytest.approx(11 / 16, abs=1e-12)
    assert stats.betainc(1, 1, 0.3) == pytest.approx(0.3, abs=1e-12)  # uniform
    assert stats.betainc(2, 3, 0.0) == 0.0 and stats.betainc(2, 3, 1.0) == 1.0


def test_t_cdf_matches_closed_forms_for_one_and_two_degrees_of_freedom() -> None:
    assert stats.t_cdf(0.0, 7.3) == pytest.approx(0.5, abs=1e-12)
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # Cauchy: 1/2 + atan(t)/π
    assert stats.t_cdf(2.0, 2) == pytest.approx(0.5 + 2 / (2 * math.sqrt(6)), abs=1e-12)  # 1/2 + t/(2√(2+t²))
    assert stats.t_cdf(-2.0, 2) == pytest.approx(0.5 - 2 / (2 * math.sqrt(6)), abs=1e-12)


def test_two_sided_p_for_t_2_with_10_df() -> None:
    assert stats.t_two_sided_p(2.0, 10) == pytest.approx(0.0733880347707, abs=1e-10)
    assert stats.t_two_sided_p(-2.0, 10) == pytest.approx(0.0733880347707, abs=1e-10)
    assert stats.t_two_sided_p(math.inf, 3) == 0.0


def test_t_quantiles_match_tables_and_invert_the_cdf() -> None:
    assert stats.t_ppf(0.975, 4) == pytest.approx(2.776445105, abs=1e-8)
    assert stats.t_ppf(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), abs=1e-8)
    assert stats.t_ppf(0.025, 9) == pytest.approx(-2.262157163, abs=1e-8)
    assert stats.t_cdf(stats.t_ppf(0.9, 5.5), 5.5) == pytest.approx(0.9, abs=1e-10)


def test_mean_std_and_t_interval_of_one_to_five() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.mean(values) == 3.0
    assert stats.std(values) == pytest.approx(math.sqrt(2.5))
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975,4} · s / √n
    low, high = stats.mean_ci(values)
    assert low == pytest.approx(3 - half, abs=1e-8) and high == pytest.approx(3 + half, abs=1e-8)


def test_one_value_has_no_std_and_no_interval() -> None:
    assert stats.std([1.0]) is None and stats.mean_ci([1.0]) is None and stats.mean([]) is None


def test_welch_statistic_df_and_p_for_unequal_variances() -> None:
    # Means 3 and 6, variances 2.5 and 10, n = 5 each: t = -3/√2.5, df = 2.5² / (0.5²/4 + 2²/4) = 100/17.
    result = stats.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert result is not None
    assert result.t == pytest.approx(-3 / math.sqrt(2.5), abs=1e-12)
    assert result.df == pytest.approx(100 / 17, abs=1e-12)
    assert result.p == pytest.approx(0.1075311949, abs=1e-8)


def test_welch_handles_zero_variance_and_too_few_values() -> None:
    assert stats.welch([1.0, 1.0], [1.0, 1.0]) == stats.Welch(t=0.0, df=2.0, p=1.0)
    separated = stats.welch([1.0, 1.0], [2.0, 2.0])
    assert separated is not None and separated.p == 0.0 and separated.t == -math.inf
    assert stats.welch([1.0], [1.0, 2.0]) is None


def test_exact_permutation_p_on_two_by_two() -> None:
    # Splits of {1,2,3,4} into pairs: |mean diff| = 2, 1, 0, 0, 1, 2; the observed 2 is reached by 2 of 6.
    result = stats.permutation_test([1, 2], [3, 4])
    assert result == stats.Permutation(p=pytest.approx(1 / 3), exact=True, resamples=6, min_p=pytest.approx(1 / 3))


def test_exact_permutation_with_unequal_groups_and_its_floor() -> None:
    # a = one of {1,2,3,4}: |diff| = 2, 2/3, 2/3, 2 → p = 2/4.
    assert stats.permutation_test([1], [2, 3, 4]).p == pytest.approx(0.5)
    three = stats.permutation_test([1, 2, 3], [4, 5, 6])
    assert three.p == pytest.approx(0.1) and three.min_p == pytest.approx(0.1)  # 2 of C(6,3) = 20


def test_sampled_permutation_is_seeded_and_close_to_exact() -> None:
    a, b = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
    exact = stats.permutation_test(a, b)
    sampled = stats.permutation_test(a, b, exact_limit=0, resamples=4000, seed=3)
    assert exact.exact and not sampled.exact and sampled.resamples == 4000
    assert sampled.p == pytest.approx(exact.p, abs=0.02)
    assert stats.permutation_test(a, b, exact_limit=0, resamples=4000, seed=3) == sampled


def test_bootstrap_interval_brackets_the_difference_and_is_reproducible() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 7.0]
    low, high = stats.bootstrap_diff_ci(a, b, seed=1)
    assert low < -3.0 < high < 0.0
    assert stats.bootstrap_diff_ci(a, b, seed=1) == (low, high)
    assert stats.bootstrap_diff_ci([1.0], b) is None
