"""A comparison as a self-contained Markdown report: how to reproduce it, what differs, the numbers with
their uncertainty, the verdicts, and the figures beside it."""

import time
from collections.abc import Sequence
from pathlib import Path

from diffformer import __version__
from diffformer.comparison.table import Comparison, Row

NOISE_RULE = (
    "A difference counts only when it exceeds twice the combined uncertainty: the seed-to-seed standard "
    "deviation for columns with several seeds, else the standard error of the measurement."
)


def markdown_report(comparison: Comparison, figures: Sequence[Path], commands: Sequence[str]) -> str:
    lines = [
        f"# Comparison: {' vs '.join(comparison.columns)}",
        "",
        f"Written by diffformer {__version__} on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "## How to reproduce",
        "",
        "```",
        *(commands or ["# (the commands were not recorded)"]),
        "```",
        "",
        "## Runs",
        "",
        "| column | runs |",
        "|---|---|",
        *(f"| {label} | {', '.join(runs)} |" for label, runs in zip(comparison.columns, comparison.runs_per_column)),
        "",
    ]
    if comparison.differences:
        lines += ["## Settings that differ", "", _header(["setting", *comparison.columns])]
        lines += [
            f"| {key} | " + " | ".join("–" if v is None else str(v) for v in values) + " |"
            for key, values in comparison.differences.items()
        ]
        lines.append("")
    if comparison.notes:
        lines += ["## Best settings", "", *(f"- {note}" for note in comparison.notes), ""]
    lines += ["## Results", "", f"Δ is against the first column. {NOISE_RULE}", ""]
    section = None
    for row in comparison.rows:
        if row.section != section:
            section = row.section
            lines += ["", f"### {section}", "", _header(["", *comparison.columns])]
        lines.append(f"| {row.name} | " + " | ".join(_cell(row, i) for i in range(len(row.values))) + " |")
    lines += ["", "## Verdicts", "", *_verdicts(comparison), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{figure.stem.replace('_', ' ')}]({figure.name})\n" for figure in figures]
    return "\n".join(lines) + "\n"


def _header(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |\n|" + "---|" * len(cells)


def _cell(row: Row, index: int) -> str:
    value = row.values[index]
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    text = f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
    error = row.uncertainty[index] if row.uncertainty else None
    if isinstance(error, float) and error == error:
        text += f" ± {error:.2g}"
    if index > 0 and row.verdicts[index]:
        text += f" ({row.verdicts[index]})"
    return text


def _verdicts(comparison: Comparison) -> list[str]:
    """Every measured difference against the first column that is beyond noise, or a plain statement that none is."""
    found = []
    for row in comparison.rows:
        if row.section == "run" or not row.uncertainty:
            continue
        for label, verdict in zip(comparison.columns[1:], row.verdicts[1:]):
            if verdict and "within noise" not in verdict and verdict != "not comparable" and row.uncertainty[0]:
                found.append(f"- {row.section} · {row.name}: {label} differs from {comparison.columns[0]} by {verdict}")
    return found or [f"- No difference against {comparison.columns[0]} exceeds the noise."]
