"""Pictures of probe results (matplotlib, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffformer.probes.results import AttentionSummary, RetrievalGrid  # noqa: E402


def retrieval_heatmap(grid: RetrievalGrid, title: str, path: Path) -> None:
    """Accuracy over context length (rows) × needle depth (columns), each cell annotated."""
    lengths, depths = grid.lengths, grid.depths
    values = [[float("nan") if a is None else a for a in row] for row in grid.accuracy]
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(depths), 1.0 + 0.55 * len(lengths)))
    image = axes.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    axes.set_xticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    axes.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    axes.set_xlabel("needle depth")
    axes.set_ylabel("context length")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    effective = grid.effective_length
    axes.set_title(f"{title}\neffective length: {effective if effective is not None else 'none'}", fontsize=9)
    figure.colorbar(image, ax=axes, label="exact match")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def attention_plot(attention: AttentionSummary, title: str, path: Path) -> None:
    """Per layer: attention on the needle vs on the rest of the context (noise), at the answer position."""
    layers = [layer for layer in sorted(attention.layers) if attention.layers[layer].needle_mass is not None]
    needle = [attention.layers[layer].needle_mass for layer in layers]
    noise = [attention.layers[layer].noise for layer in layers]
    figure, axes = plt.subplots(figsize=(1.5 + 0.8 * len(layers), 3.2))
    x = range(len(layers))
    axes.bar([i - 0.2 for i in x], needle, width=0.4, label="needle")
    axes.bar([i + 0.2 for i in x], noise, width=0.4, label="rest of context (noise)")
    axes.set_xticks(list(x), [str(layer) for layer in layers])
    axes.set_xlabel("layer")
    axes.set_ylabel("attention mass at the answer")
    axes.axhline(0, color="black", linewidth=0.5)
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
