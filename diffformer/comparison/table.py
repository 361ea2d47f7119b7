"""Side-by-side comparison of runs: what differs in their recipes, and what they achieved.

Honesty rules: a difference smaller than twice its combined uncertainty (standard errors
of single runs, or the seed-to-seed spread when a variant has several seeds) is called
"within noise"; metrics measured on different data are "not comparable", not numbers.
"""

import json
import math
import re
import statistics
from dataclasses import dataclass, field

from diffformer.comparison.best import collapse_to_best
from diffformer.comparison.records import RunRecord
from diffformer.dynamics import milestones
from diffformer.probes.results import RetrievalGrid
from diffformer.recipe.fingerprint import defining_settings
from diffformer.strict_json import json_ready

UNCOMPARED_KEYS = ("seed",)
# A variant folder's seed part: kind=vanilla+seed=1 (or the earlier kind=vanilla,seed=1).
SEED_PART = re.compile(r"(?:^|[+,])seed=\d+(?=$|[+,])")


@dataclass
class Row:
    """One line of the table: a value (mean), its uncertainty, and the verdict against column 0."""

    section: str
    name: str
    values: list
    uncertainty: list = field(default_factory=list)
    verdicts: list = field(default_factory=list)


@dataclass
class Comparison:
    columns: list[str]
    runs_per_column: list[list[str]]
    differences: dict[str, list]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # e.g. which learning rate won for each kind


def compare_records(records: list[RunRecord], best_of: str | None = None, by: str = "loss") -> Comparison:
    """Group finished runs that differ only in seed; each group is one column (an unfinished run stands alone).
    With `best_of` (e.g. train.lr), columns that differ only in that setting collapse to the best by eval `by`."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        key = json.dumps([_compared_settings(record), record.finished or str(record.path)], sort_keys=True, default=str)
        groups.setdefault(key, []).append(record)
    columns, notes = list(groups.values()), []
    if best_of is not None:
        columns, notes = collapse_to_best(columns, best_of, by, _compared_settings)
    flat = [_compared_settings(group[0]) for group in columns]
    keys = sorted(set().union(*flat))
    differences = {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1}
    labels = _column_labels(columns, differences)
    rows = _rows(columns)
    for row in rows:
        row.verdicts = _verdicts(row)
    return Comparison(labels, [[str(r.path) for r in group] for group in columns], differences, rows, notes)


def _column_labels(columns: list[list[RunRecord]], differences: dict) -> list[str]:
    """Each column by its run's folder name (a column of seeds: the name without its seed part), so a
    column reads as the run it is; the settings that differ have rows of their own. Where names are
    missing or alike, columns are named by those settings instead."""
    names = [_group_name(group) for group in columns]
    if None in names or len(set(names)) < len(names):
        names = [_settings_label(group, differences, i) for i, group in enumerate(columns)]
    labels = []
    for name, group in zip(names, columns):
        if not group[0].finished:
            name += f" (unfinished, step {group[0].step})"
        labels.append(name + (f" ({len(group)} seeds)" if len(group) > 1 else ""))
    return labels


def _group_name(group: list[RunRecord]) -> str | None:
    """The folder name the group's runs share once 'seed=N' is taken out (variant folders), or None."""
    if len(group) == 1:
        return group[0].folder_name
    names = {SEED_PART.sub("", record.folder_name or "").strip("+,") for record in group}
    return names.pop() if len(names) == 1 and "" not in names else None


def _settings_label(group: list[RunRecord], differences: dict, index: int) -> str:
    """Named by the differing keys that every column sets (kind-specific options only show in the table),
    plus, where those leave two columns alike, the keys that tell them apart (for the columns that set them)."""
    shared = {k: v for k, v in differences.items() if all(x is not None for x in v)} or differences

    def parts(column: int, keys: dict) -> list[str]:
        return [f"{k.rsplit('.', 1)[-1]}={v[column]}" for k, v in keys.items() if v[column] is not None]

    columns = len(next(iter(differences.values()), []))
    names = [tuple(parts(c, shared)) for c in range(columns)]
    keys = differences if len(set(names)) < len(names) else shared
    return ", ".join(parts(index, keys)) or group[0].recipe.name


def _compared_settings(record: RunRecord) -> dict:
    """What defines a run's results, except its seed: runs equal in these are seeds of one variant."""
    return {k: v for k, v in defining_settings(record.settings).items() if k not in UNCOMPARED_KEYS}


def _aggregate(values: list, standard_errors: list | None) -> tuple[float | None, float | None]:
    """Mean and uncertainty: the standard error of a single run, or the seed spread (std) of a group — but
    never below its runs' mean standard error: two seeds at 254/256 are not '0.9922 ± 0'."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None, None
    if len(present) > 1:
        errors = [e for e in standard_errors or [] if e is not None and not math.isnan(e)]
        floor = statistics.fmean(errors) if errors else 0.0
        return statistics.fmean(present), max(statistics.stdev(present), floor)
    error = standard_errors[0] if standard_errors else None
    return present[0], error


def _rows(columns: list[list[RunRecord]]) -> list[Row]:
    rows = []

    def add(section, name, getter, error_getter=None, comparable=True, exact=False):
        """exact: a count with no uncertainty (parameters, tokens), compared as is."""
        values, errors = [], []
        for group in columns:
            mean, error = _aggregate(
                [getter(r) for r in group], [error_getter(r) for r in group] if error_getter else None
            )
            values.append(mean if comparable else "not comparable")
            errors.append(error if comparable and not exact else None)
        if any(v is not None for v in values):
            rows.append(Row(section, name, values, errors))

    same_data = len({json.dumps(g[0].settings["data"], sort_keys=True) for g in columns}) == 1
    add("run", "parameters", lambda r: r.parameters, exact=True)
    add("run", "tokens seen", lambda r: r.tokens_seen, exact=True)
    add("run", "wall time (s)", lambda r: r.wall_seconds)
    add("run", "final train loss", lambda r: r.final_loss, comparable=same_data)
    if any(r.stops_early for g in columns for r in g):
        add("run", "reached early stop (share of seeds)", lambda r: _as_share(r.stopped_early_at is not None))
    add("run", "steps to learn (early stop; seeds that reached it)", lambda r: r.stopped_early_at)
    for metric in ("loss", "accuracy", "exact_match", "bits_per_byte"):
        add(
            "eval",
            metric.replace("_", " "),
            lambda r, m=metric: r.eval.get(m),
            lambda r, m=metric: _standard_error(r.eval, m),
            comparable=same_data,
        )
    probes = [r.probe for g in columns for r in g]
    if any(p is not None for p in probes):
        _probe_rows(columns, add)
    if any(r.dynamics for g in columns for r in g):
        _dynamics_rows(columns, add)
    return rows


FINAL_DYNAMICS = {
    "needle_mass": "source share of |w|",
    "entropy": "entropy",
    "head_diversity": "head diversity",
    "lambda_value": "lambda",
    "a1_a2_cosine": "A1/A2 cosine",
    "a1_a2_js": "A1/A2 JS",
}


def _dynamics_rows(columns, add) -> None:
    """From RUN/dynamics.jsonl: who learned, when each milestone was crossed (over the seeds that crossed it;
    the spread is their std), and the tracked measurements at the last step."""
    add("dynamics", "learned (share of seeds)", lambda r: _as_share(milestones.learned(r.dynamics)))
    for key, milestone in milestones.MILESTONES.items():
        crossing = f"{milestone.name} ≥ {milestones.THRESHOLD}"
        add("dynamics", f"{crossing}: share of seeds", lambda r, k=key: _crossed_share(r, k))
        add("dynamics", f"{crossing}: step", lambda r, k=key: milestones.crossing_steps(r.dynamics).get(k))
    model_measurements = sorted({name for g in columns for r in g if r.dynamics for name in r.dynamics[-1].model})
    for name in model_measurements:
        add("dynamics", f"final {name.replace('_', ' ')}", lambda r, n=name: _final(r, "model", n))
    for name, label in FINAL_DYNAMICS.items():
        add("dynamics", f"final {label}", lambda r, n=name: _final(r, "average", n))


def _as_share(flag: bool | None) -> float | None:
    return None if flag is None else float(flag)


def _crossed_share(record: RunRecord, key: str) -> float | None:
    steps = milestones.crossing_steps(record.dynamics)
    return None if key not in steps else float(steps[key] is not None)


def _final(record: RunRecord, part: str, name: str) -> float | None:
    return getattr(record.dynamics[-1], part).get(name) if record.dynamics else None


def _standard_error(metrics: dict, name: str) -> float | None:
    """A metric's standard error; for a proportion with a Wilson interval, at least the interval's half-width
    in standard-error units, so 256/256 is not '1 ± 0'."""
    error = metrics.get(f"{name}_se")
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    if low is None or high is None:
        return error
    return max(error or 0.0, (high - low) / (2 * 1.96))


def _probe_rows(columns, add) -> None:
    first = next(r.probe for g in columns for r in g if r.probe is not None)
    for variant, grid in first.retrieval.items():
        for index, length in enumerate(grid.lengths):
            add(
                "retrieval",
                f"{variant} accuracy @ {length}",
                lambda r, v=variant, i=index: _at_length(r, v, i, RetrievalGrid.mean_accuracy),
                lambda r, v=variant, i=index: _at_length(r, v, i, RetrievalGrid.standard_error),
            )
        add("retrieval", f"{variant} effective length", lambda r, v=variant: _effective_length(r, v))
    for name in ATTENTION_ROW_NAMES:
        add("attention", ATTENTION_ROW_NAMES[name], lambda r, n=name: _attention_average(r, n))


ATTENTION_ROW_NAMES = {
    "needle_mass": "needle share of |w|",
    "noise": "noise share of |w|",
    "needle_net_mass": "needle net mass Σw (signed / unnormalised rows)",
    "row_sum": "row sum Σw (signed / unnormalised rows)",
    "entropy": "entropy",
    "head_diversity": "head diversity",
    "lambda_value": "lambda",
}


def _grid(record: RunRecord, variant: str) -> RetrievalGrid | None:
    return record.probe.retrieval.get(variant) if record.probe is not None else None


def _at_length(record: RunRecord, variant: str, index: int, measure) -> float | None:
    grid = _grid(record, variant)
    return measure(grid, index) if grid is not None and index < len(grid.lengths) else None


def _effective_length(record: RunRecord, variant: str) -> int | None:
    grid = _grid(record, variant)
    return grid.effective_length if grid is not None else None


def _attention_average(record: RunRecord, name: str) -> float | None:
    if record.probe is None or record.probe.attention is None or record.probe.attention.average is None:
        return None
    return getattr(record.probe.attention.average, name)


def _verdicts(row: Row) -> list[str]:
    """Against column 0: 'reference', 'within noise', a signed difference, or 'not comparable'."""
    verdicts = ["reference"]
    base, base_error = row.values[0], row.uncertainty[0] if row.uncertainty else None
    for value, error in zip(row.values[1:], row.uncertainty[1:]):
        if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
            verdicts.append("not comparable" if "not comparable" in (value, base) else "")
            continue
        delta = value - base
        if base_error is not None and error is not None and abs(delta) <= 2 * math.hypot(base_error, error):
            verdicts.append(f"{delta:+.4g} (within noise)")
        else:
            verdicts.append(f"{delta:+.4g}")
    return verdicts


def comparison_as_dict(comparison: Comparison) -> dict:
    return json_ready(comparison)
