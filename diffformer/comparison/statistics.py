"""Intervals and verdicts that hold at 2–5 seeds (docs/formulas.md §19).

A column of a comparison is a variant trained with n seeds; each run's value comes with its own
measurement error (a held-out metric's standard error, a probe accuracy's binomial error). A column's
standard error is the seeds' s/√n, never below what the runs' own errors give alone (√Σe²/n), with
n − 1 degrees of freedom; a single run has only its measurement error (large-sample, normal quantile).
A difference between two columns is paired by seed when both hold the same seeds (n ≥ 2), else Welch's
unequal-variance difference with Welch–Satterthwaite degrees of freedom; its 95% interval uses
Student's t. A share of seeds (learned, reached early stop) is a proportion k/n with a Wilson interval,
and a difference of shares Newcombe's hybrid score interval. The smallest difference a comparison
could have detected is (t_{0.975} + t_{0.80})·SE: 80% power at the 5% level.

Student's t is computed here (regularised incomplete beta by its continued fraction, then bisection)
rather than imported: a few lines against a 35 MB dependency for the core install.
"""

import math
import statistics
from dataclasses import dataclass

from diffformer.metrics import wilson_interval

CONFIDENCE = 0.95
POWER = 0.80


def _log_beta_front(a: float, b: float, x: float) -> float:
    return math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 400):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return fraction


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(_log_beta_front(a, b, x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with df > 0 degrees of freedom (df = inf: the standard normal)."""
    if math.isinf(df):
        return statistics.NormalDist().cdf(t)
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
    """The t with P(T ≤ t) = probability, by bisection on t_cdf (df = inf: the normal quantile)."""
    if math.isinf(df) or df > 1e7:
        return statistics.NormalDist().inv_cdf(probability)
    low, high = -1.0, 1.0
    while t_cdf(low, df) > probability:
        low *= 2.0
    while t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, abs(middle)):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Measured:
    """One run's value of a measurement: its seed, the value, and its own standard error (None: exact)."""

    seed: int | None
    value: float
    error: float | None = None


@dataclass(frozen=True)
class ColumnEstimate:
    mean: float
    standard_error: float | None
    n: int
    df: float  # degrees of freedom of the standard error; inf for a single run's measurement error

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.standard_error is None:
            return None
        half = t_quantile(0.5 + CONFIDENCE / 2, self.df) * self.standard_error
        return self.mean - half, self.mean + half


def _present(runs: list[Measured]) -> list[Measured]:
    return [r for r in runs if r.value is not None and math.isfinite(r.value)]


def _error_floor(runs: list[Measured]) -> float | None:
    """The standard error of the runs' mean if the seeds agreed exactly: √Σe² / n (None: no run has one)."""
    errors = [r.error for r in runs if r.error is not None and math.isfinite(r.error)]
    return math.sqrt(sum(e * e for e in errors)) / len(runs) if errors else None


def column_estimate(runs: list[Measured]) -> ColumnEstimate | None:
    """A column's mean over its seeds, its standard error and degrees of freedom (None: nothing measured)."""
    runs = _present(runs)
    if not runs:
        return None
    if len(runs) == 1:
        return ColumnEstimate(runs[0].value, runs[0].error, 1, math.inf)
    values = [r.value for r in runs]
    spread = statistics.stdev(values) / math.sqrt(len(values))
    floor = _error_floor(runs)
    return ColumnEstimate(statistics.fmean(values), max(spread, floor or 0.0), len(runs), len(runs) - 1.0)


@dataclass(frozen=True)
class Difference:
    """other − reference, with its 95% interval and the smallest difference the data could have detected."""

    delta: float
    low: float | None
    high: float | None
    detectable: float | None  # (t_0.975 + t_0.80)·SE: 80% power at the 5% level
    n_text: str  # "n = 3", "n = 3 paired seeds", "n = 3 vs 2", "n = 1 (measurement error only)"

    @property
    def detected(self) -> bool:
        """The interval excludes zero (or, for exact values and seeds without any spread, they differ)."""
        if self.low is None or self.low == self.high:
            return self.delta != 0
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        if self.low is None:
            return f"{self.delta:+.4g} (exact)"
        if self.low == self.high:  # no spread and no measurement error: every seed gave the same difference
            return "the same in every seed" if self.delta == 0 else f"{self.delta:+.4g} in every seed ({self.n_text})"
        interval = f"95% CI {self.low:+.3g} … {self.high:+.3g}"
        if self.detected:
            return f"{self.delta:+.3g} ({interval}; {self.n_text})"
        return f"no detectable difference at {self.n_text} ({interval})"


def _n_text(n_reference: int, n_other: int, paired: bool) -> str:
    if n_reference == n_other == 1:
        return "n = 1 (measurement error only)"
    if paired:
        return f"n = {n_reference} paired seeds"
    return f"n = {n_reference}" if n_reference == n_other else f"n = {n_reference} vs {n_other}"


def mean_difference(reference: list[Measured], other: list[Measured]) -> Difference | None:
    """other − reference for measurements with errors (or exact values), paired by seed where possible."""
    reference, other = _present(reference), _present(other)
    if not reference or not other:
        return None
    ref, oth = column_estimate(reference), column_estimate(other)
    delta = oth.mean - ref.mean
    if ref.standard_error is None and oth.standard_error is None and ref.n == oth.n == 1:
        return Difference(delta, None, None, None, _n_text(1, 1, False))
    seeds = {r.seed for r in reference}
    paired = (
        len(reference) >= 2
        and len(reference) == len(other) == len(seeds)
        and None not in seeds
        and seeds == {r.seed for r in other}
    )
    if paired:
        by_seed = {r.seed: r for r in reference}
        differences = [r.value - by_seed[r.seed].value for r in other]
        pairs = [Measured(r.seed, d, _hypot(r.error, by_seed[r.seed].error)) for r, d in zip(other, differences)]
        estimate = column_estimate(pairs)
        standard_error, df = estimate.standard_error, estimate.df
    else:
        standard_error = _hypot(ref.standard_error, oth.standard_error)
        df = _welch_df(ref, oth)
    if not standard_error:
        return Difference(delta, delta, delta, 0.0, _n_text(ref.n, oth.n, paired))
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * standard_error
    detectable = (t_quantile(0.5 + CONFIDENCE / 2, df) + t_quantile(POWER, df)) * standard_error
    return Difference(delta, delta - half, delta + half, detectable, _n_text(ref.n, oth.n, paired))


def _hypot(a: float | None, b: float | None) -> float | None:
    present = [x for x in (a, b) if x is not None]
    return math.sqrt(sum(x * x for x in present)) if present else None


def _welch_df(a: ColumnEstimate, b: ColumnEstimate) -> float:
    """Welch–Satterthwaite: (s_a² + s_b²)² / (s_a⁴/df_a + s_b⁴/df_b); a single run's term contributes no
    uncertainty about its spread (df = inf)."""
    va, vb = (a.standard_error or 0.0) ** 2, (b.standard_error or 0.0) ** 2
    denominator = sum(v * v / df for v, df in ((va, a.df), (vb, b.df)) if not math.isinf(df))
    return math.inf if denominator == 0 else (va + vb) ** 2 / denominator


def share_difference(reference: list[bool], other: list[bool]) -> Difference | None:
    """Difference of two shares of seeds, other − reference, with Newcombe's hybrid score interval."""
    if not reference or not other:
        return None
    k1, n1, k2, n2 = sum(reference), len(reference), sum(other), len(other)
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    delta = p2 - p1
    low = delta - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = delta + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    text = f"{k1}/{n1} vs {k2}/{n2} seeds"
    return Difference(delta, low, high, None, text)
