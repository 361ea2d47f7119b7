"""Pictures of probe results (matplotlib, headless)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffformer.probes.ablation import AblationReport  # noqa: E402
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


def ablation_plot(ablation: AblationReport, title: str, path: Path) -> None:
    """Layers × heads: the change in the task metric when each head is zero- or mean-ablated (paired)."""
    synthetic = ablation.exact_match is not None
    layers = sorted({cell.layer for cell in ablation.cells})
    heads = sorted({cell.head for cell in ablation.cells})
    figure, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * len(heads), 1.4 + 0.7 * len(layers)), squeeze=False)
    for panel, mode in zip(axes[0], ("zero", "mean")):
        grid = [[float("nan")] * len(heads) for _ in layers]
        for cell in ablation.cells:
            if cell.mode == mode:
                change = cell.exact_match_change if synthetic else cell.loss_change
                grid[layers.index(cell.layer)][heads.index(cell.head)] = change
        limit = max(1e-6, max(abs(v) for row in grid for v in row if v == v))
        image = panel.imshow(grid, cmap="RdBu" if synthetic else "RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                needed = heads[j] in ablation.retrieval_heads.get(layers[i], [])
                panel.text(j, i, f"{value:+.2f}" + ("*" if needed else ""), ha="center", va="center", fontsize=8)
        panel.set_xticks(range(len(heads)), [str(h) for h in heads])
        panel.set_yticks(range(len(layers)), [str(layer) for layer in layers])
        panel.set_xlabel("head")
        panel.set_ylabel("layer")
        panel.set_title(f"{mode} ablation", fontsize=9)
        figure.colorbar(image, ax=panel, label=("Δ exact match" if synthetic else "Δ loss") + " (ablated − not)")
    figure.suptitle(f"{title} · * = needed (95%)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# What each curve shows, and how it is labelled (docs/formulas.md §6).
CURVES = {
    "needle_mass": "needle: share of |w|",
    "noise": "rest of context: share of |w|",
    "needle_net_mass": "needle: net Σw (signed)",
    "a1_needle_mass": "needle in A1 (softmax)",
    "a2_needle_mass": "needle in A2 (softmax)",
}


def attention_plot(attention: AttentionSummary, title: str, path: Path) -> None:
    """A panel per layer: at the answer position, against context length, the share of each row's |weight|
    on the needle and on the rest of the context, the signed net mass for rows that are not distributions,
    and for differential kinds the needle's share in A1 and in A2."""
    lengths = sorted(attention.by_length)
    layers = sorted({layer for per_layer in attention.by_length.values() for layer in per_layer})
    figure, axes = plt.subplots(1, len(layers), figsize=(0.5 + 3.4 * len(layers), 3.2), squeeze=False)
    for panel, layer in zip(axes[0], layers):
        for name, label in CURVES.items():
            values = [getattr(attention.by_length[n].get(layer), name, None) for n in lengths]
            if any(v is not None for v in values):
                style = "--" if name.startswith("a") else "-"
                panel.plot(lengths, [float("nan") if v is None else v for v in values], style, marker="o", label=label)
        panel.set_xscale("log", base=2)
        panel.set_xticks(lengths, [str(n) for n in lengths])
        panel.set_xlabel("context length")
        panel.set_title(f"layer {layer}", fontsize=9)
        panel.axhline(0, color="black", linewidth=0.5)
    axes[0][0].set_ylabel(f"at the answer (rows: {attention.rows})")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
