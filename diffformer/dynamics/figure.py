"""The picture of a run's attention dynamics: one panel per measurement, a curve per layer over training steps."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffformer.atomic import atomic_write  # noqa: E402
from diffformer.errors import CheckpointError  # noqa: E402


def draw_dynamics(records: list[dict], title: str, path: Path) -> Path:
    """Draw RUN/dynamics.jsonl's records (as read) into `path`; the dashed curve is the mean over layers."""
    if not records:
        raise CheckpointError(f"no attention dynamics to draw for {title} (train with a track: section)")
    names = sorted({name for record in records for name in record.get("average", {})})
    layers = sorted({layer for record in records for layer in record.get("layers", {})}, key=int)
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False)
    steps = [record["step"] for record in records]
    for panel, name in zip(axes.flat, names):
        for layer in layers:
            values = [record["layers"].get(layer, {}).get(name, float("nan")) for record in records]
            panel.plot(steps, values, label=f"layer {layer}", linewidth=1.2)
        average = [record["average"].get(name, float("nan")) for record in records]
        panel.plot(steps, average, "k--", label="mean", linewidth=1.0)
        panel.set_title(name.replace("_", " "), fontsize=10)
        panel.set_xlabel("step")
    for panel in list(axes.flat)[len(names) :]:
        panel.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"{title}: attention over training")
    figure.tight_layout()
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=110)
    plt.close(figure)
    atomic_write(path, picture.getvalue())  # a run killed mid-draw keeps the previous picture
    return path
