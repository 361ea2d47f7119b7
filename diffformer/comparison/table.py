"""Side-by-side comparison of runs: what differs in their recipes and in what they were given, and what they
achieved, each difference with a 95% interval (comparison/statistics.py; docs/formulas.md §18, §19).

Honesty rules: a column is a variant's seeds, its uncertainty their standard error (never below the runs'
own measurement errors); a difference against the first column is paired by seed where the columns share
seeds, else Welch's; a verdict names its interval and n ("no detectable difference at n = 3 (95% CI …)")
and the smallest difference the comparison could have detected; metrics measured on different data are
"not comparable", not numbers. Attention measurements are per context length and layer unless an average
is asked for, and then say so.
"""

import json
import math
import re
import statistics
from dataclasses import dataclass, field

from diffformer.comparison import fairness
from diffformer.comparison.best import collapse_to_best
from diffformer.comparison.records import RunRecord
from diffformer.comparison.scaling import ScalingResult, parameter_efficiency
from diffformer.comparison.statistics import (
    Difference,
    Measured,
    column_estimate,
    mean_difference,
    share_difference,
    wilson_interval,
)
from diffformer.data.synthetic import SyntheticTask
from diffformer.dynamics import milestones
from diffformer.errors import RecipeError
from diffformer.probes.results import RetrievalGrid
from diffformer.recipe.fingerprint import defining_settings
from diffformer.strict_json import json_ready

UNCOMPARED_KEYS = ("seed",)
# A variant folder's seed part: kind=vanilla+seed=1 (or the earlier kind=vanilla,seed=1).
SEED_PART = re.compile(r"(?:^|[+,])seed=\d+(?=$|[+,])")
Z_95 = 1.96


@dataclass
class Row:
    """One line of the table: per column a value (the mean over its seeds), its standard error and 95% interval,
    and against column 0 the difference with its interval and verdict."""

    section: str
    name: str
    values: list
    uncertainty: list = field(default_factory=list)  # standard errors (None: exact or not measured)
    verdicts: list = field(default_factory=list)  # column 0: "reference"
    intervals: list = field(default_factory=list)  # per column (low, high) or None
    differences: list = field(default_factory=list)  # per column a Difference against column 0, or None
    kind: str = "mean"  # mean (values with errors), exact (counts), share (of seeds), text (settings)
    fairness_item: fairness.FairnessItem | None = field(default=None, repr=False)  # what a fairness row reports


@dataclass
class Comparison:
    columns: list[str]
    runs_per_column: list[list[str]]
    differences: dict[str, list]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # e.g. which learning rate won for each kind
    warnings: list[str] = field(default_factory=list)  # what the columns were given differently, unnamed
    machines: list[str] = field(default_factory=list)  # what trained the runs (their summaries say)
    scaling: list[ScalingResult] = field(default_factory=list)  # compare --scaling: parameter efficiency


def compare_records(
    records: list[RunRecord],
    best_of: str | None = None,
    by: str = "loss",
    average_attention: bool = False,
    scaling: bool = False,
) -> Comparison:
    """Group finished runs that differ only in seed; each group is one column (an unfinished run stands alone).
    With `best_of` (e.g. train.lr), columns that differ only in that setting collapse to the best by eval `by`.
    `average_attention`: attention rows averaged over layers and lengths (labelled) instead of one per each."""
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
    rows = _rows(columns, average_attention)
    warnings = _fairness_warnings(rows, labels, differences)
    for label, group in zip(labels, columns):
        unfinished = [r.unfinished for r in group if r.unfinished]
        warnings += [
            f"⚠ {label}: {note} (its numbers rest on weights from before training ended)" for note in unfinished
        ]
    machines = list(dict.fromkeys(r.machine for group in columns for r in group if r.machine))
    runs = [[str(r.path) for r in group] for group in columns]
    comparison = Comparison(labels, runs, differences, rows, notes, warnings, machines)
    if scaling:
        comparison.scaling = _parameter_efficiency(records)
    return comparison


def _parameter_efficiency(records: list[RunRecord]) -> list[ScalingResult]:
    """Each kind against the first run's kind: held-out loss against parameters, over the finished runs."""
    points: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if record.finished and record.eval.get("loss") is not None:
            by_size = points.setdefault(record.recipe.model.attention.kind, {})
            by_size.setdefault(record.parameters, []).append(record.eval["loss"])
    reference = records[0].recipe.model.attention.kind
    if reference not in points or len(points) < 2 or any(len(sizes) < 2 for sizes in points.values()):
        raise RecipeError("--scaling needs finished runs of at least two kinds, each at two or more sizes")
    return [parameter_efficiency(reference, kind, points) for kind in points if kind != reference]


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


class _RowBuilder:
    """Adds rows measured on every column, with each column's estimate and its difference to column 0."""

    def __init__(self, columns: list[list[RunRecord]]):
        self.columns, self.rows = columns, []

    def measure(self, section, name, getter, error_getter=None, comparable=True):
        """A measurement with an uncertainty: per run its value (None: not measured) and standard error."""
        per_column = [
            [Measured(r.seed, getter(r), error_getter(r) if error_getter else None) for r in group]
            for group in self.columns
        ]
        per_column = [[m for m in runs if m.value is not None] for runs in per_column]
        if not any(per_column):
            return
        if not comparable:
            self.rows.append(Row(section, name, ["not comparable"] * len(per_column), kind="text"))
            self.rows[-1].verdicts = ["reference"] + ["not comparable"] * (len(per_column) - 1)
            return
        estimates = [column_estimate(runs) for runs in per_column]
        row = Row(
            section,
            name,
            [None if e is None else e.mean for e in estimates],
            [None if e is None else e.standard_error for e in estimates],
            intervals=[None if e is None else e.interval for e in estimates],
            differences=[None] + [mean_difference(per_column[0], runs) for runs in per_column[1:]],
        )
        self.rows.append(_with_verdicts(row))

    def exact(self, section, name, getter, item: fairness.FairnessItem | None = None):
        """A count or a setting with no uncertainty (parameters, tokens, a positional prior)."""
        values = []
        for group in self.columns:
            seen = [getter(r) for r in group]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
                values.append(
                    seen[0] if len(set(seen)) == 1 else statistics.fmean(seen)
                )  # e.g. tokens of mixed lengths
            else:
                distinct = list(dict.fromkeys(json.dumps(v, default=str) for v in seen))
                values.append(json.loads(distinct[0]) if len(distinct) == 1 else " / ".join(distinct))
        if all(v is None for v in values):
            return
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        row = Row(section, name, values, [None] * len(values), kind="exact" if numeric else "text", fairness_item=item)
        if numeric:
            row.differences = [None] + [Difference(v - values[0], None, None, None, "exact") for v in values[1:]]
            row.verdicts = ["reference"] + [d.verdict() if d.delta else "" for d in row.differences[1:]]
        else:
            row.verdicts = ["reference"] + ["same" if v == values[0] else "differs" for v in values[1:]]
        self.rows.append(row)

    def share(self, section, name, flag):
        """A share of seeds (learned, reached early stop): k/n with a Wilson interval; None flags are left out."""
        flags = [[f for r in group if (f := flag(r)) is not None] for group in self.columns]
        if not any(flags):
            return
        row = Row(section, name, [], [], kind="share")
        for runs in flags:
            if runs:
                row.values.append(sum(runs) / len(runs))
                low, high = wilson_interval(sum(runs), len(runs))
                row.intervals.append((low, high))
                row.uncertainty.append((high - low) / (2 * Z_95))
            else:
                row.values.append(None), row.intervals.append(None), row.uncertainty.append(None)
        row.differences = [None] + [share_difference(flags[0], runs) for runs in flags[1:]]
        self.rows.append(_with_verdicts(row))


def _with_verdicts(row: Row) -> Row:
    row.verdicts = ["reference"] + [d.verdict() if d is not None else "" for d in row.differences[1:]]
    return row


def _rows(columns: list[list[RunRecord]], average_attention: bool) -> list[Row]:
    add = _RowBuilder(columns)
    same_data = len({json.dumps(g[0].settings["data"], sort_keys=True) for g in columns}) == 1
    _fairness_rows(columns, add, same_data)
    add.measure("run", "wall time (s)", lambda r: r.wall_seconds)
    if any(r.stops_early for g in columns for r in g):
        add.share("run", "reached early stop (share of seeds)", lambda r: r.stopped_early_at is not None)
    add.measure("run", "steps to learn (early stop; seeds that reached it)", lambda r: r.stopped_early_at)
    for metric in ("loss", "accuracy", "exact_match", "bits_per_byte"):
        add.measure(
            "eval",
            metric.replace("_", " "),
            lambda r, m=metric: r.eval.get(m),
            lambda r, m=metric: _standard_error(r.eval, m),
            comparable=same_data,
        )
    if any(r.probe is not None for g in columns for r in g):
        _probe_rows(columns, add, average_attention)
    if any(r.dynamics for g in columns for r in g):
        _dynamics_rows(columns, add)
    return add.rows


def _fairness_rows(columns, add: _RowBuilder, same_data: bool) -> None:
    """What each column was given (docs/formulas.md §18): parameters in all and by part, tokens, the positional
    prior, the heads' layout, the kind's options as applied, learning rate, precision; then the final train
    loss and whether training had converged."""
    items = fairness.FAIRNESS_ITEMS
    add.exact("fairness", "parameters", lambda r: r.parameters, items["parameters"])
    parts = list(dict.fromkeys(p for g in columns for r in g for p in r.effective.get("parameters", {})))
    for part in [p for p in parts if p != "total"]:
        add.exact(
            "fairness",
            f"parameters: {part}",
            lambda r, p=part: r.effective.get("parameters", {}).get(p, 0),
            fairness.parameter_part_item(part),
        )
    add.exact("fairness", "tokens seen", lambda r: r.tokens_seen, items["tokens"])
    add.exact("fairness", "positional prior", lambda r: r.effective.get("positional_prior"), items["prior"])
    add.exact("fairness", "heads × maps × width", lambda r: r.effective.get("layout"), items["layout"])
    add.exact(
        "fairness",
        "attention options as applied",
        lambda r: fairness.options_text(r.effective.get("attention_options", {})),
        items["options"],
    )
    add.exact("fairness", "learning rate", lambda r: fairness.learning_rate_text(r.recipe), items["lr"])
    add.exact("fairness", "precision", lambda r: r.recipe.train.precision, items["precision"])
    add.measure("fairness", "final train loss", lambda r: r.final_loss, comparable=same_data)
    add.share(
        "fairness",
        "converged (share of seeds, docs/formulas.md §18)",
        lambda r: fairness.converged(r.curve, r.stopped_early_at is not None),
    )


def _fairness_warnings(rows: list[Row], labels: list[str], differences: dict) -> list[str]:
    """A line per setting the columns were given differently that the varied recipe keys do not account for,
    and a line when any run had not converged."""
    warnings = []
    for row in rows:
        item = row.fairness_item
        if item is None or len({json.dumps(v, default=str) for v in row.values}) < 2:
            continue
        if not fairness.is_varied(item, differences):
            warnings.append(fairness.warning_line(item, labels, row.values))
    converged = next((row for row in rows if row.name.startswith("converged")), None)
    if converged is not None and any(v is not None and v < 1 for v in converged.values):
        shares = "; ".join(f"{label}: {v:.0%}" for label, v in zip(labels, converged.values) if v is not None)
        warnings.append(f"⚠ not every run had converged (docs/formulas.md §18) — {shares} of seeds converged")
    return warnings


FINAL_DYNAMICS = {
    "needle_mass": "source share of |w|",
    "needle_net_mass": "source net mass Σw",
    "a1_needle_mass": "source share in A1",
    "a2_needle_mass": "source share in A2",
    "entropy": "entropy",
    "head_diversity": "head diversity",
    "lambda_value": "lambda",
    "a1_a2_cosine": "A1/A2 cosine",
    "a1_a2_js": "A1/A2 JS",
    "key_coverage_min": "key coverage min",
    "source_coverage": "source coverage (all rows, best head)",
    "source_dropped": "sources dropped (coverage < 0.5)",
}


def _dynamics_rows(columns, add: _RowBuilder) -> None:
    """From RUN/dynamics.jsonl: who learned, when each milestone was crossed (over the seeds that crossed it),
    and the tracked measurements at the last step, per layer."""
    # "Learned" (token accuracy ≥ 0.9) and its milestone mean something for synthetic tasks, not for text.
    synthetic = any(isinstance(r.recipe.data, SyntheticTask) for g in columns for r in g)
    if synthetic:
        add.share("dynamics", "learned (share of seeds)", lambda r: milestones.learned(r.dynamics))
    for key, milestone in milestones.MILESTONES.items():
        if key == "token_accuracy" and not synthetic:
            continue
        crossing = f"{milestone.name} ≥ {milestones.THRESHOLD}"
        add.share("dynamics", f"{crossing}: share of seeds", lambda r, k=key: _crossed(r, k))
        add.measure("dynamics", f"{crossing}: step", lambda r, k=key: milestones.crossing_steps(r.dynamics).get(k))
    model_measurements = sorted({name for g in columns for r in g if r.dynamics for name in r.dynamics[-1].model})
    for name in model_measurements:
        add.measure("dynamics", f"final {name.replace('_', ' ')}", lambda r, n=name: _final_model(r, n))
    for name in FALLS_FROM_PEAK:
        if name in model_measurements:  # a collapse after learning: what an average over training hides
            label = f"{name.replace('_', ' ')}: fall from its peak (peak − final)"
            add.measure("dynamics", label, lambda r, n=name: _fall_from_peak(r, n))
    layers = sorted({layer for g in columns for r in g if r.dynamics for layer in r.dynamics[-1].layers})
    for name, label in FINAL_DYNAMICS.items():
        for layer in layers:
            add.measure("dynamics", f"final {label} · layer {layer}", lambda r, n=name, ly=layer: _final(r, ly, n))


def _crossed(record: RunRecord, key: str) -> bool | None:
    steps = milestones.crossing_steps(record.dynamics)
    return None if key not in steps else steps[key] is not None


def _final_model(record: RunRecord, name: str) -> float | None:
    return record.dynamics[-1].model.get(name) if record.dynamics else None


# Model measurements whose fall after a peak is a finding in itself (the focus lab's collapsing focus).
FALLS_FROM_PEAK = ("foreground_mass", "token_accuracy")


def _fall_from_peak(record: RunRecord, name: str) -> float | None:
    readings = [r.model[name] for r in record.dynamics if name in r.model]
    return max(readings) - readings[-1] if readings else None


def _final(record: RunRecord, layer: int, name: str) -> float | None:
    return record.dynamics[-1].layers.get(layer, {}).get(name) if record.dynamics else None


def _standard_error(metrics: dict, name: str) -> float | None:
    """A metric's standard error; for a proportion with a Wilson interval, at least the interval's half-width
    in standard-error units, so 256/256 is not '1 ± 0'."""
    error = metrics.get(f"{name}_se")
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    if low is None or high is None:
        return error
    return max(error or 0.0, (high - low) / (2 * Z_95))


ATTENTION_ROW_NAMES = {
    "needle_mass": "needle share of |w|",
    "noise": "noise share of |w|",
    "needle_net_mass": "needle net mass Σw (signed / unnormalised rows)",
    "a1_needle_mass": "needle share in A1",
    "a2_needle_mass": "needle share in A2",
    "row_sum": "row sum Σw (signed / unnormalised rows)",
    "entropy": "entropy",
    "head_diversity": "head diversity",
    "lambda_value": "lambda",
}


def _probe_rows(columns, add: _RowBuilder, average_attention: bool) -> None:
    """Retrieval accuracy per variant and length (each run's binomial sampling error carried into its column),
    and the attention measurements per length and layer (or, asked, their mean over layers and lengths)."""
    first = next(r.probe for g in columns for r in g if r.probe is not None)
    for variant, grid in first.retrieval.items():
        for index, length in enumerate(grid.lengths):
            add.measure(
                "retrieval",
                f"{variant} accuracy @ {length}",
                lambda r, v=variant, i=index: _at_length(r, v, i, RetrievalGrid.mean_accuracy),
                lambda r, v=variant, i=index: _accuracy_error(r, v, i),
            )
        add.measure("retrieval", f"{variant} effective length", lambda r, v=variant: _effective_length(r, v))
    _probe_model_rows(columns, add)
    if average_attention:
        for name, label in ATTENTION_ROW_NAMES.items():
            add.measure("attention", f"{label} (mean over layers and lengths)", lambda r, n=name: _averaged(r, n))
        return
    lengths = sorted(
        {n for g in columns for r in g if r.probe and r.probe.attention for n in r.probe.attention.by_length}
    )
    layers = sorted(
        {
            layer
            for g in columns
            for r in g
            if r.probe and r.probe.attention
            for per_layer in r.probe.attention.by_length.values()
            for layer in per_layer
        }
    )
    for name, label in ATTENTION_ROW_NAMES.items():
        for length in lengths:
            for layer in layers:
                add.measure(
                    "attention",
                    f"{label} · layer {layer} @ {length}",
                    lambda r, n=name, at=length, ly=layer: _attention_at(r, at, ly, n),
                )
    if any(r.probe and r.probe.attention and r.probe.attention.at_retrieval_heads for g in columns for r in g):
        for name in ("needle_mass", "noise", "needle_net_mass"):
            for length in lengths:
                for layer in layers:
                    add.measure(
                        "attention at the heads the task needs",
                        f"{ATTENTION_ROW_NAMES[name]} · layer {layer} @ {length}",
                        lambda r, n=name, at=length, ly=layer: _attention_at(r, at, ly, n, needed_heads=True),
                    )


def _probe_model_rows(columns, add: _RowBuilder) -> None:
    """What the quantization, outlier and ablation probes measured: each scheme's metrics and their paired
    change against full precision, per layer the largest activations and their ratio to the median, and the
    heads each layer needs."""
    probes = [r.probe for g in columns for r in g if r.probe is not None]
    schemes = list(dict.fromkeys(q.scheme for p in probes for q in p.quantization or []))
    for scheme in schemes:
        for metric in ("exact_match", "loss"):
            label = metric.replace("_", " ")
            add.measure(
                "low bits",
                f"{label} at {scheme}",
                lambda r, s=scheme, m=metric: _quantized(r, s, m, "value"),
                lambda r, s=scheme, m=metric: _quantized(r, s, m, "se_value"),
            )
            add.measure(
                "low bits",
                f"Δ {label} at {scheme} vs full precision",
                lambda r, s=scheme, m=metric: _quantized(r, s, m, "delta"),
                lambda r, s=scheme, m=metric: _quantized(r, s, m, "se"),
            )
    layers = sorted({layer for p in probes for layer in (p.outliers or {})})
    for layer in layers:
        add.measure(
            "outliers", f"hidden state top-1 · layer {layer}", lambda r, ly=layer: _outlier(r, ly, "hidden_top1")
        )
        add.measure(
            "outliers",
            f"hidden state top-1 ÷ median · layer {layer}",
            lambda r, ly=layer: _outlier(r, ly, "hidden_ratio"),
        )
        add.measure(
            "outliers",
            f"largest |logit| over the layer's maps · layer {layer}",
            lambda r, ly=layer: _outlier(r, ly, "logit_top1"),
        )
        add.measure(
            "outliers",
            f"|logit| top-1 ÷ median (largest over maps) · layer {layer}",
            lambda r, ly=layer: _outlier(r, ly, "logit_ratio"),
        )
    ablated = sorted({c.layer for p in probes if p.ablation for c in p.ablation.cells})
    for layer in ablated:
        add.measure("ablation", f"heads the task needs · layer {layer}", lambda r, ly=layer: _needed(r, ly))


def _quantized(record: RunRecord, scheme: str, metric: str, part: str) -> float | None:
    found = next((q for q in (record.probe.quantization or []) if q.scheme == scheme), None) if record.probe else None
    if found is None or metric not in found.metrics:
        return None
    if part == "value":
        return found.metrics[metric]
    if part == "se_value":
        return _standard_error(found.metrics, metric)
    return found.change[metric][part]


def _outlier(record: RunRecord, layer: int, name: str) -> float | None:
    outliers = (record.probe.outliers or {}).get(layer) if record.probe else None
    if outliers is None:
        return None
    if name.startswith("logit_"):
        values = [getattr(stats, name.removeprefix("logit_")) for stats in outliers.logits.values()]
        values = [v for v in values if v is not None]
        return max(values) if values else None
    return getattr(outliers, name)


def _needed(record: RunRecord, layer: int) -> float | None:
    ablation = record.probe.ablation if record.probe else None
    return None if ablation is None else float(len(ablation.retrieval_heads.get(layer, [])))


def _grid(record: RunRecord, variant: str) -> RetrievalGrid | None:
    return record.probe.retrieval.get(variant) if record.probe is not None else None


def _at_length(record: RunRecord, variant: str, index: int, measure) -> float | None:
    grid = _grid(record, variant)
    return measure(grid, index) if grid is not None and index < len(grid.lengths) else None


def _accuracy_error(record: RunRecord, variant: str, index: int) -> float | None:
    """The binomial standard error of a run's accuracy at a length, at least the Wilson half-width in s.e. units."""
    grid = _grid(record, variant)
    if grid is None or index >= len(grid.lengths) or grid.mean_accuracy(index) is None:
        return None
    n = sum(grid.samples[index])
    low, high = wilson_interval(round(grid.mean_accuracy(index) * n), n)
    return max(grid.standard_error(index) or 0.0, (high - low) / (2 * Z_95))


def _effective_length(record: RunRecord, variant: str) -> int | None:
    grid = _grid(record, variant)
    return grid.effective_length if grid is not None else None


def _attention_at(record: RunRecord, length: int, layer: int, name: str, needed_heads: bool = False) -> float | None:
    if record.probe is None or record.probe.attention is None:
        return None
    attention = record.probe.attention
    measured = (attention.at_retrieval_heads if needed_heads else attention.by_length).get(length, {}).get(layer)
    value = None if measured is None else getattr(measured, name)
    return None if value is None or math.isnan(value) else value


def _averaged(record: RunRecord, name: str) -> float | None:
    if record.probe is None or record.probe.attention is None or record.probe.attention.average is None:
        return None
    return getattr(record.probe.attention.average, name)


def comparison_as_dict(comparison: Comparison) -> dict:
    data = json_ready(comparison)
    for row in data["rows"]:
        row.pop("fairness_item", None)
    return data
