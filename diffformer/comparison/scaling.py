"""Parameter efficiency: does one attention kind reach another's loss with fewer parameters? (docs/formulas.md §22)

Per kind, the held-out loss of every run against its parameter count N is fitted by least squares to
    L(N) = a + b·ln N
over the sizes compared (every seed a point). The parameters kind B needs for kind A's fitted loss at N,
    N_B(N) = exp((a_A + b_A·ln N − a_B) / b_B),
give the ratio N_B / N: below 1, B matches A with fewer parameters. It is reported at the geometric middle
of the compared sizes (and at each size), with a 95% percentile interval from a bootstrap that resamples
the seeds within every (kind, size) cell and refits. With 3 seeds per cell that interval is rough, and a
log-linear fit holds only within the sizes compared: nothing here extrapolates.
"""

import math
import random
import statistics
from dataclasses import dataclass, field

BOOTSTRAP_SAMPLES = 2000


@dataclass
class KindFit:
    kind: str
    intercept: float  # a
    slope: float  # b, loss per e-fold of parameters
    points: dict[int, list[float]]  # parameters -> the seeds' losses


@dataclass
class ScalingResult:
    reference: str  # kind A
    other: str  # kind B
    metric: str
    fits: list[KindFit]
    middle_parameters: float
    ratio: float | None  # N_B / N at the middle (None: the fits do not cross sensibly)
    ratio_low: float | None
    ratio_high: float | None
    ratio_by_size: dict[int, float] = field(default_factory=dict)
    note: str = ""

    def verdict(self) -> str:
        if self.ratio is None or self.ratio_low is None:
            return f"{self.other} against {self.reference}: no ratio could be fitted ({self.note})"
        interval = f"95% CI {self.ratio_low:.0%} … {self.ratio_high:.0%}"
        n = len(next(iter(self.fits[0].points.values())))
        where = f"at {self.middle_parameters:,.0f} parameters, {n} seeds per size"
        if self.ratio_low <= 1 <= self.ratio_high:
            return (
                f"no detectable difference in parameter efficiency: {self.other} reaches {self.reference}'s "
                f"{self.metric} with {self.ratio:.0%} of its parameters ({interval}; {where})"
            )
        return (
            f"{self.other} needs {self.ratio:.0%} of {self.reference}'s parameters to match its {self.metric} "
            f"({interval}; {where})"
        )


def fit(points: dict[int, list[float]], kind: str) -> KindFit:
    xs = [math.log(n) for n, losses in points.items() for _ in losses]
    ys = [loss for losses in points.values() for loss in losses]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    return KindFit(kind, mean_y - slope * mean_x, slope, points)


def _ratio(reference: KindFit, other: KindFit, parameters: float) -> float | None:
    """N_B(N) / N for the reference's fitted loss at N; None where B's loss does not fall with size."""
    if other.slope >= 0:
        return None
    target = reference.intercept + reference.slope * math.log(parameters)
    return math.exp((target - other.intercept) / other.slope) / parameters


def parameter_efficiency(
    reference: str, other: str, points: dict[str, dict[int, list[float]]], metric: str = "loss", seed: int = 0
) -> ScalingResult:
    """`points`: kind -> parameters -> the seeds' values of `metric` (lower is better)."""
    fits = [fit(points[reference], reference), fit(points[other], other)]
    sizes = sorted(set(points[reference]) | set(points[other]))
    middle = math.exp(statistics.fmean(math.log(n) for n in sizes))
    ratio = _ratio(fits[0], fits[1], middle)
    result = ScalingResult(reference, other, metric, fits, middle, ratio, None, None)
    if ratio is None:
        result.note = f"{other}'s {metric} does not fall with size over these sizes"
        return result
    result.ratio_by_size = {n: r for n in sorted(points[reference]) if (r := _ratio(fits[0], fits[1], n)) is not None}
    generator = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP_SAMPLES):
        resampled = [
            fit({n: generator.choices(losses, k=len(losses)) for n, losses in points[kind].items()}, kind)
            for kind in (reference, other)
        ]
        if (value := _ratio(resampled[0], resampled[1], middle)) is not None:
            ratios.append(value)
    if len(ratios) < BOOTSTRAP_SAMPLES * 0.95:
        result.note = (
            f"in {BOOTSTRAP_SAMPLES - len(ratios)} of {BOOTSTRAP_SAMPLES} resamples {other}'s fit did not fall"
        )
    if ratios:
        ratios.sort()
        result.ratio_low = ratios[int(0.025 * len(ratios))]
        result.ratio_high = ratios[min(len(ratios) - 1, int(0.975 * len(ratios)))]
    return result
