"""The comparison statistics (docs/formulas.md §19) against tabulated values and published examples."""

import math

import pytest

from diffformer.comparison.statistics import (
    Measured,
    column_estimate,
    mean_difference,
    share_difference,
    t_cdf,
    t_quantile,
    wilson_interval,
)

# Student's t quantiles from the standard tables (two-sided 95%: the 0.975 quantile; one-sided 80%).
TABLE = [
    (1, 0.975, 12.706),
    (2, 0.975, 4.303),
    (3, 0.975, 3.182),
    (4, 0.975, 2.776),
    (9, 0.975, 2.262),
    (30, 0.975, 2.042),
    (2, 0.80, 1.061),
    (4, 0.80, 0.941),
    (10, 0.995, 3.169),
    (math.inf, 0.975, 1.960),
]


@pytest.mark.parametrize(("df", "probability", "expected"), TABLE)
def test_t_quantiles_are_the_tables(df, probability, expected):
    assert t_quantile(probability, df) == pytest.approx(expected, abs=1.5e-3)
    assert t_cdf(t_quantile(probability, df), df) == pytest.approx(probability, abs=1e-9)
    assert t_quantile(1 - probability, df) == pytest.approx(-expected, abs=1.5e-3), "symmetric"


def test_t_quantiles_at_fractional_degrees_of_freedom_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (0.7, 1.3, 2.624, 5.5, 17.2, 250.0):
        for probability in (0.6, 0.8, 0.9, 0.975, 0.999):
            assert t_quantile(probability, df) == pytest.approx(stats.t.ppf(probability, df), rel=1e-6)


def test_wilson_and_newcombe_give_the_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 − 48/80, method 10.
    difference = share_difference([True] * 48 + [False] * 32, [True] * 56 + [False] * 14)
    assert difference.delta == pytest.approx(0.2)
    assert (difference.low, difference.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert wilson_interval(0, 3) == pytest.approx((0.0, 0.5615), abs=1e-4), "honest at 0/n"
    assert wilson_interval(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    assert share_difference([False] * 3, [True] * 3).detected, "0/3 against 3/3 seeds"
    assert not share_difference([False, True, False], [True, False, True]).detected


def test_a_column_is_never_more_certain_than_its_runs_and_a_single_run_is_its_measurement():
    agreeing = [Measured(1, 0.5, 0.03), Measured(2, 0.5, 0.04)]
    assert column_estimate(agreeing).standard_error == pytest.approx(0.05 / 2), "√(0.03² + 0.04²)/2"
    spread = column_estimate([Measured(1, 0.4, 0.001), Measured(2, 0.6, 0.001), Measured(3, 0.5, 0.001)])
    assert spread.standard_error == pytest.approx(0.1 / math.sqrt(3)) and spread.df == 2
    single = column_estimate([Measured(1, 0.7, 0.02)])
    assert (single.standard_error, single.df) == (0.02, math.inf)
    assert (
        mean_difference([Measured(1, 0.7, 0.02)], [Measured(1, 0.8, 0.02)]).n_text == "n = 1 (measurement error only)"
    )
