"""What a comparison writes into a folder of the caller's choosing: comparison.json, curves.png, the
retrieval figures when the runs were probed, dynamics.png when they tracked attention, and report.md
tying them together."""

import json
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


def write_comparison(
    comparison: Comparison, records: list[RunRecord], output_dir: Path, commands: Sequence[str] = ()
) -> list[Path]:
    """Write every output of a comparison; returns the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = comparison.columns if len(comparison.columns) == len(records) else [str(r.path) for r in records]
    curves, table, report = output_dir / "curves.png", output_dir / "comparison.json", output_dir / "report.md"
    curves_plot(records, labels, curves)
    figures = [
        curves,
        *_retrieval_figures(comparison, records, output_dir),
        *_dynamics_figure(comparison, records, output_dir),
    ]
    table.write_text(json.dumps(comparison_as_dict(comparison), indent=2) + "\n")
    report.write_text(markdown_report(comparison, figures, commands))
    return [*figures, table, report]


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
    measured = {name for _, runs in columns for run in runs for name in run[-1].get("model", {})}
    for name in sorted(measured & MILESTONE_MEASUREMENTS):  # what the study is about, each in a picture of its own
        files.append(draw_dynamics_overlay(columns, output_dir / f"dynamics_{name}.png", only=name))
    return files


def curves_plot(records: list[RunRecord], labels: list[str], path: Path) -> None:
    """Training loss and eval metrics over steps, all runs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, eval_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    for record, label in zip(records, labels):
        steps = [m["step"] for m in record.curve if "loss" in m]
        (line,) = loss_axes.plot(steps, [m["loss"] for m in record.curve if "loss" in m], label=label, alpha=0.8)
        evaluated = [m for m in record.curve if "eval_loss" in m]
        metric = "eval_accuracy" if evaluated and "eval_accuracy" in evaluated[0] else "eval_loss"
        eval_axes.plot(
            [m["step"] for m in evaluated], [m[metric] for m in evaluated], "o-", color=line.get_color(), label=label
        )
        eval_axes.set_ylabel(metric.replace("_", " "))
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("train loss")
    eval_axes.set_xlabel("step")
    loss_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
