"""What a comparison writes into a folder of the caller's choosing: comparison.json, curves.png, the
retrieval figures when the runs were probed, dynamics.png when they tracked attention, and report.md
tying them together."""

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from diffformer.comparison.figures import retrieval_by_length, retrieval_heatmaps, retrieval_variants
from diffformer.comparison.records import RunRecord
from diffformer.comparison.report import markdown_report
from diffformer.comparison.table import Comparison, comparison_as_dict
from diffformer.dynamics.figure import draw_dynamics_overlay
from diffformer.dynamics.milestones import MILESTONES

MILESTONE_MEASUREMENTS = set(MILESTONES)  # those read from a record's "model" part

DEFAULT_OUTPUT = Path("comparisons")


def fresh_output_dir(parent: Path = DEFAULT_OUTPUT) -> Path:
    """A folder no earlier comparison wrote: parent/<YYYYmmdd-HHMMSS>, with -2, -3 … when that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, number = parent / stamp, 1
    while candidate.exists():
        number += 1
        candidate = parent / f"{stamp}-{number}"
    return candidate


def write_comparison(
    comparison: Comparison, records: list[RunRecord], output_dir: Path, commands: Sequence[str] = ()
) -> list[Path]:
    """Write every output of a comparison; returns the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    by_path = {str(record.path): record for record in records}
    columns = [
        (label, [by_path[run] for run in runs]) for label, runs in zip(comparison.columns, comparison.runs_per_column)
    ]
    curves, table, report = output_dir / "curves.png", output_dir / "comparison.json", output_dir / "report.md"
    with _distinct_colours(len(columns)):
        curves_plot(columns, curves)
        figures = [
            curves,
            *_retrieval_figures(comparison, records, output_dir),
            *_dynamics_figure(comparison, records, output_dir),
            *_scaling_figure(comparison, output_dir),
        ]
    table.write_text(json.dumps(comparison_as_dict(comparison), indent=2) + "\n")
    report.write_text(markdown_report(comparison, figures, commands))
    return [*figures, table, report]


def _distinct_colours(count: int):
    """Matplotlib's default cycle repeats after 10 lines; a sweep of more columns gets 20 colours."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20" if count > 10 else "tab10").colors
    return plt.rc_context({"axes.prop_cycle": plt.cycler(color=colours)})


def _retrieval_figures(comparison: Comparison, records: list[RunRecord], output_dir: Path) -> list[Path]:
    """Heatmaps per variant and accuracy by length, when every run has probe results."""
    by_path = {str(record.path): record for record in records}
    columns = [
        (label, [by_path[run].probe for run in runs])
        for label, runs in zip(comparison.columns, comparison.runs_per_column)
    ]
    if any(report is None for _, reports in columns for report in reports):
        return []
    variants = retrieval_variants(columns)
    files = []
    for variant in variants:
        files.append(output_dir / f"retrieval_heatmaps_{variant}.png")
        retrieval_heatmaps(columns, variant, files[-1])
    if variants:
        files.append(output_dir / "retrieval_by_length.png")
        retrieval_by_length(columns, variants, files[-1])
    return files


def _dynamics_figure(comparison: Comparison, records: list[RunRecord], output_dir: Path) -> list[Path]:
    """The runs' attention dynamics overlaid, grouped by column (variant), when any run tracked them."""
    if not any(record.dynamics for record in records):
        return []
    by_path = {str(record.path): record for record in records}
    columns = [
        (label, [by_path[run].dynamics for run in runs if by_path[run].dynamics])
        for label, runs in zip(comparison.columns, comparison.runs_per_column)
    ]
    columns = [column for column in columns if column[1]]
    files = [draw_dynamics_overlay(columns, output_dir / "dynamics.png")]
    measured = {name for _, runs in columns for run in runs for name in run[-1].model}
    for name in sorted(measured & MILESTONE_MEASUREMENTS):  # what the study is about, each in a picture of its own
        files.append(draw_dynamics_overlay(columns, output_dir / f"dynamics_{name}.png", only=name))
    return files


def _scaling_figure(comparison: Comparison, output_dir: Path) -> list[Path]:
    """Held-out loss against parameters per kind (every seed a point) with the fitted lines, when asked."""
    if not comparison.scaling:
        return []
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    fits = {fitted.kind: fitted for result in comparison.scaling for fitted in result.fits}
    for kind, fitted in fits.items():
        sizes = sorted(fitted.points)
        xs = [n for n in sizes for _ in fitted.points[n]]
        (dots,) = axes.plot(xs, [v for n in sizes for v in fitted.points[n]], "o", alpha=0.6, label=kind)
        line = [fitted.intercept + fitted.slope * math.log(n) for n in sizes]
        axes.plot(sizes, line, "-", color=dots.get_color())
    axes.set_xscale("log")
    axes.set(xlabel="parameters", ylabel=f"held-out {comparison.scaling[0].metric}", title="loss against parameters")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = output_dir / "scaling.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return [path]


def curves_plot(columns: list[tuple[str, list[RunRecord]]], path: Path) -> None:
    """Training loss and the headline eval metric over steps: a curve per column (the mean over its seeds,
    their range as a band), a title, and the legend below the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, eval_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
    evaluated = [m for _, records in columns for r in records for m in r.curve if "eval_loss" in m]
    text = any("eval_perplexity" in m for m in evaluated)  # language modelling: loss and perplexity, not accuracy
    metric = "eval_accuracy" if evaluated and "eval_accuracy" in evaluated[0] and not text else "eval_loss"
    for label, records in columns:
        line = _band(loss_axes, [r.curve for r in records], "loss", label, "-")
        _band(eval_axes, [r.curve for r in records], metric, label, "o-", colour=line.get_color(), errors=text)
    loss_axes.set(xlabel="step", ylabel="train loss", title="training loss")
    if text:
        eval_axes.set(xlabel="step", ylabel="held-out loss (nats/token)", title="held-out loss ± 1.96 s.e.")
        perplexity = eval_axes.secondary_yaxis("right", functions=(_safe_exp, _safe_log))
        perplexity.set_ylabel("perplexity")
    else:
        eval_axes.set(xlabel="step", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
    handles, labels = loss_axes.get_legend_handles_labels()
    rows = -(-len(labels) // 2)
    figure.suptitle("Runs compared: mean over seeds, band = their range", fontsize=10)
    figure.tight_layout(rect=(0, 0.02 + 0.055 * rows, 1, 1))
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _safe_exp(value):
    """exp on what matplotlib hands a secondary axis (arrays as well as numbers), kept finite."""
    import numpy

    return numpy.exp(numpy.clip(value, None, 700.0))


def _safe_log(value):
    import numpy

    return numpy.log(numpy.clip(value, 1e-12, None))


def _band(axes, curves: list[list[dict]], name: str, label: str, style: str, colour=None, errors: bool = False):
    """The mean of `name` over the runs at each step they share, and their min–max as a band; with `errors`,
    also each mean's ±1.96 measurement errors (the runs' own `name_se`) as error bars."""
    steps = sorted({m["step"] for curve in curves for m in curve if name in m})
    values = [[m[name] for curve in curves for m in curve if m.get("step") == step and name in m] for step in steps]
    means = [sum(v) / len(v) for v in values]
    (line,) = axes.plot(steps, means, style, label=label, color=colour, linewidth=1.3, markersize=3, alpha=0.9)
    if errors:
        spread = [
            [m.get(f"{name}_se", 0.0) for curve in curves for m in curve if m.get("step") == step and name in m]
            for step in steps
        ]
        bars = [1.96 * math.sqrt(sum(e * e for e in s if e == e)) / len(s) for s in spread]
        axes.errorbar(steps, means, yerr=bars, fmt="none", ecolor=line.get_color(), elinewidth=0.8, capsize=2)
    if len(curves) > 1:
        axes.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.18)
    return line
