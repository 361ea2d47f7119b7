"""Pictures of attention dynamics: one run's (a panel per measurement, a curve per layer over training steps),
and a comparison's (a panel per measurement, a curve per variant: the mean over its seeds, their range as a band)."""

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffformer.atomic import atomic_write  # noqa: E402
from diffformer.dynamics.milestones import readings  # noqa: E402
from diffformer.dynamics.records import DynamicsRecord  # noqa: E402
from diffformer.errors import CheckpointError  # noqa: E402


def draw_dynamics(records: list[DynamicsRecord], title: str, path: Path) -> Path:
    """Draw RUN/dynamics.jsonl's records into `path`; the dashed curve is the mean over layers."""
    if not records:
        raise CheckpointError(f"no attention dynamics to draw for {title} (train with a track: section)")
    model_names = sorted({name for record in records for name in record.model})
    names = sorted({name for record in records for name in record.average})
    layers = sorted({layer for record in records for layer in record.layers})
    figure, axes = _panels(len(model_names) + len(names))
    steps = [record.step for record in records]
    for panel, name in zip(axes.flat, model_names):
        panel.plot(steps, [record.model.get(name, math.nan) for record in records], "k-", linewidth=1.2)
        panel.set_title(f"model: {name.replace('_', ' ')}", fontsize=10)
        panel.set_xlabel("step")
    for panel, name in zip(list(axes.flat)[len(model_names) :], names):
        for layer in layers:
            values = [record.layers.get(layer, {}).get(name, math.nan) for record in records]
            panel.plot(steps, values, label=f"layer {layer}", linewidth=1.2)
        average = [record.average.get(name, math.nan) for record in records]
        panel.plot(steps, average, "k--", label="mean", linewidth=1.0)
        panel.set_title(name.replace("_", " "), fontsize=10)
        panel.set_xlabel("step")
    for panel in list(axes.flat)[len(model_names) + len(names) :]:
        panel.axis("off")
    if names:
        axes.flat[len(model_names)].legend(fontsize=7)
    figure.suptitle(f"{title}: attention over training")
    return _save(figure, path)


def draw_dynamics_overlay(
    columns: list[tuple[str, list[list[DynamicsRecord]]]], path: Path, only: str | None = None
) -> Path:
    """A comparison's dynamics: for each column (label, its seeds' dynamics records), the mean over seeds of
    every model measurement, every layer-averaged measurement and the milestone readings (or `only` that one,
    in one larger panel), with the seeds' min–max as a band."""
    series = [(label, [_flatten(records) for records in runs]) for label, runs in columns]
    names = sorted({name for _, runs in series for run in runs for name in run}, key=_panel_order)
    names = [name for name in names if only in (None, name)]
    if not names:
        raise CheckpointError("none of the compared runs tracked attention dynamics")
    figure, axes = _panels(len(names)) if only is None else plt.subplots(1, 1, figsize=(7, 4.2), squeeze=False)
    for panel, name in zip(axes.flat, names):
        for label, runs in series:
            steps = sorted({step for run in runs for step in run.get(name, {})})
            values = [[run.get(name, {}).get(step, math.nan) for run in runs] for step in steps]
            means = [_nanmean(v) for v in values]
            (line,) = panel.plot(steps, means, label=label, linewidth=1.3)
            if len(runs) > 1:
                low = [min((x for x in v if x == x), default=math.nan) for v in values]
                high = [max((x for x in v if x == x), default=math.nan) for v in values]
                panel.fill_between(steps, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        panel.set_title(name.replace("_", " "), fontsize=9)
        panel.set_xlabel("step", fontsize=8)
    for panel in list(axes.flat)[len(names) :]:
        panel.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.suptitle("Attention over training: mean over seeds, band = their range")
    legend_rows = -(-len(labels) // 2)
    figure.tight_layout(rect=(0, 0.012 + (0.02 if only is None else 0.045) * legend_rows, 1, 1))
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    return _save(figure, path, laid_out=True)


def _flatten(records: list[DynamicsRecord]) -> dict[str, dict[int, float]]:
    """name -> step -> value for one run: model measurements, layer averages and milestone readings."""
    flat: dict[str, dict[int, float]] = {}
    for record in records:
        values = {**record.model, **record.average}
        best = readings(record)
        for key, name in (("diagonal", "best head: source argmax"), ("diagonal_near", "best head: ±1")):
            if key in best:
                values[name] = best[key]
        for name, value in values.items():
            flat.setdefault(name, {})[record.step] = value
    return flat


def _panel_order(name: str) -> tuple[int, str]:
    """What the model does first, then the milestone readings, then the attention measurements by name."""
    first = ("token_accuracy", "exact_match", "ktiw", "ktiw_probability", "best head: source argmax", "best head: ±1")
    return (first.index(name), name) if name in first else (len(first), name)


def _nanmean(values: list[float]) -> float:
    present = [v for v in values if v == v]
    return sum(present) / len(present) if present else math.nan


def _panels(count: int):
    columns = min(3, max(count, 1))
    rows = -(-max(count, 1) // columns)
    return plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False)


def _save(figure, path: Path, laid_out: bool = False) -> Path:
    if not laid_out:
        figure.tight_layout()
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=110)
    plt.close(figure)
    atomic_write(path, picture.getvalue())  # a run killed mid-draw keeps the previous picture
    return path
