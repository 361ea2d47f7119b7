"""What a comparison writes: comparison.json and curves.png, into a folder of the caller's choosing."""

import json
from pathlib import Path

from diffformer.comparison.records import RunRecord
from diffformer.comparison.table import Comparison, comparison_as_dict

DEFAULT_OUTPUT = Path("comparisons")


def write_comparison(comparison: Comparison, records: list[RunRecord], output_dir: Path) -> list[Path]:
    """Write the curves plot and the comparison as JSON; returns the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = comparison.columns if len(comparison.columns) == len(records) else [str(r.path) for r in records]
    curves, table = output_dir / "curves.png", output_dir / "comparison.json"
    curves_plot(records, labels, curves)
    table.write_text(json.dumps(comparison_as_dict(comparison), indent=2) + "\n")
    return [curves, table]


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
