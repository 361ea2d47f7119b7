"""Pictures of a comparison's retrieval results: heatmaps side by side, and accuracy by length with seed bands."""

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffformer.probes.results import ProbeReport, RetrievalGrid  # noqa: E402

Column = tuple[str, list[ProbeReport]]  # a comparison column's label and its runs' probe reports


def retrieval_variants(columns: list[Column]) -> list[str]:
    """The retrieval variants every probed run of every column has."""
    reports = [report for _, reports in columns for report in reports]
    if not reports:
        return []
    return [variant for variant in reports[0].retrieval if all(variant in r.retrieval for r in reports)]


def mean_grid(grids: list[RetrievalGrid]) -> list[list[float | None]]:
    """Cell-wise mean accuracy over seeds (None where no seed has prompts)."""
    rows = []
    for i in range(len(grids[0].lengths)):
        row = []
        for j in range(len(grids[0].depths)):
            cells = [g.accuracy[i][j] for g in grids if g.accuracy[i][j] is not None]
            row.append(statistics.fmean(cells) if cells else None)
        rows.append(row)
    return rows


def retrieval_heatmaps(columns: list[Column], variant: str, path: Path) -> None:
    """One heatmap per column (mean over its seeds), all on one 0–1 colour scale."""
    grids = [[r.retrieval[variant] for r in reports] for _, reports in columns]
    first = grids[0][0]
    width = 1.0 + 0.75 * len(first.depths)
    figure, axes = plt.subplots(
        1, len(columns), figsize=(width * len(columns) + 1.2, 1.3 + 0.45 * len(first.lengths)), squeeze=False
    )
    image = None
    for axis, (label, _), column_grids in zip(axes[0], columns, grids):
        values = [[float("nan") if a is None else a for a in row] for row in mean_grid(column_grids)]
        image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        axis.set_xticks(range(len(first.depths)), [f"{d:.0%}" for d in first.depths], fontsize=7)
        axis.set_yticks(range(len(first.lengths)), [str(n) for n in first.lengths], fontsize=7)
        axis.set_xlabel("needle depth", fontsize=8)
        axis.set_title(label.replace(", ", "\n"), fontsize=8)  # the label already counts its seeds
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                if value == value:
                    colour = "white" if value < 0.6 else "black"
                    axis.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=6)
    axes[0][0].set_ylabel("context length", fontsize=8)
    figure.colorbar(image, ax=axes[0].tolist(), label="exact match", shrink=0.9)
    figure.suptitle(f"Retrieval ({variant}): exact match, mean over seeds", fontsize=10, y=1.08)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def retrieval_by_length(columns: list[Column], variants: list[str], path: Path) -> None:
    """Accuracy (mean over depths) against context length: a line per column, its seeds' range as a band."""
    figure, axes = plt.subplots(1, len(variants), figsize=(4.6 * len(variants), 3.4), squeeze=False)
    for axis, variant in zip(axes[0], variants):
        for label, reports in columns:
            grids = [r.retrieval[variant] for r in reports]
            lengths = grids[0].lengths
            per_seed = [[g.mean_accuracy(i) for i in range(len(lengths))] for g in grids]
            means, lows, highs = [], [], []
            for i in range(len(lengths)):
                values = [seed[i] for seed in per_seed if seed[i] is not None]
                means.append(statistics.fmean(values) if values else float("nan"))
                lows.append(min(values) if values else float("nan"))
                highs.append(max(values) if values else float("nan"))
            (line,) = axis.plot(lengths, means, "o-", label=label, linewidth=1.4, markersize=3)
            axis.fill_between(lengths, lows, highs, color=line.get_color(), alpha=0.18, linewidth=0)
        axis.set_xscale("log", base=2)
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.set_ylim(-0.03, 1.03)
        axis.set_xlabel("context length")
        axis.set_ylabel("exact match (mean over depths)")
        axis.set_title(variant, fontsize=9)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    figure.suptitle("Retrieval by context length; bands span the seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
