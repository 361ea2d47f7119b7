"""A comparison as a self-contained Markdown report: how to reproduce it, what differs, the numbers with
their uncertainty, the verdicts, and the figures beside it."""

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from diffformer import __version__
from diffformer.comparison.table import Comparison, Row
from diffformer.devices import machine_description

STATISTICS = (
    "Each value is the mean over a column's seeds ± its standard error (the seeds' s/√n, never below the runs' "
    "own measurement errors; a single run: its measurement error). Each difference against the first column "
    "carries a 95% interval — paired by seed where the columns share seeds, else Welch's, with Student's t; "
    "shares of seeds with Wilson and Newcombe intervals — and a verdict names the interval and n "
    "(docs/formulas.md §19)."
)


def markdown_report(comparison: Comparison, figures: Sequence[Path], commands: Sequence[str]) -> str:
    machines = ", ".join(comparison.machines) or "not recorded (runs from before 2026-12)"
    lines = [
        f"# Comparison: {' vs '.join(comparison.columns)}",
        "",
        f"Written by diffformer {__version__} on {time.strftime('%Y-%m-%d %H:%M')} on {machine_description()}.",
        f"Trained on: {machines}.",
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
    lines += ["## Is the comparison fair?", ""]
    lines += [*(f"- {warning}" for warning in comparison.warnings)] or [
        "- Every column was given the same parameters, tokens, positional prior, head layout, kind options, "
        "learning rate and precision, beyond the settings varied on purpose, and every run had converged."
    ]
    lines.append("")
    if comparison.notes:
        lines += ["## Best settings", "", *(f"- {note}" for note in comparison.notes), ""]
    lines += ["## Results", "", f"Δ is against the first column. {STATISTICS}", ""]
    section = None
    for row in comparison.rows:
        if row.section != section:
            section = row.section
            lines += ["", f"### {section}", "", _header(["", *comparison.columns])]
        lines.append(f"| {row.name} | " + " | ".join(_cell(row, i) for i in range(len(row.values))) + " |")
    lines += ["", "## Verdicts", "", *_verdicts(comparison), ""]
    if comparison.scaling:
        lines += ["## Parameter efficiency (docs/formulas.md §22)", ""]
        for result in comparison.scaling:
            lines.append(f"- {result.verdict()}")
            for fitted in result.fits:
                lines.append(f"  - {fitted.kind}: {result.metric} ≈ {fitted.intercept:.4g} {fitted.slope:+.4g}·ln N")
            by_size = ", ".join(f"{n:,}: {r:.0%}" for n, r in result.ratio_by_size.items())
            if by_size:
                lines.append(f"  - {result.other}'s share of {result.reference}'s parameters at each size: {by_size}")
        lines.append("")
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
    if row.kind == "share" and row.intervals[index] is not None:
        low, high = row.intervals[index]
        text = f"{value:.2f} (95%: {low:.2f}–{high:.2f})"
    elif isinstance(error, float) and error == error:
        text += f" ± {error:.2g}"
    if index > 0 and row.verdicts[index] and row.kind != "text":
        text += f" ({row.verdicts[index]})"
    return text


def _verdicts(comparison: Comparison) -> list[str]:
    """Every difference against the first column whose interval excludes zero, then how many showed none and
    the smallest differences the comparison could have detected."""
    found, undetected, detectable = [], 0, []
    for row in comparison.rows:
        if row.kind not in ("mean", "share"):
            continue
        for label, difference in zip(comparison.columns[1:], row.differences[1:]):
            if difference is None:
                continue
            if difference.detected:
                found.append(
                    f"- {row.section} · {row.name}: {label} − {comparison.columns[0]} = {difference.verdict()}"
                )
            else:
                undetected += 1
                if difference.detectable is not None:
                    detectable.append((row, label, difference))
    lines = found or [f"- No difference against {comparison.columns[0]} is detectable at these seed counts."]
    if undetected:
        lines.append(f"- {undetected} other differences are not detectable at their n (intervals in the tables).")
    by_section: dict[str, list[float]] = {}
    for row, _, difference in detectable:
        by_section.setdefault(row.section, []).append(difference.detectable)
    for section, sizes in by_section.items():
        lines.append(
            f"- smallest difference this comparison could have detected in {section} (80% power at the 5% level): "
            f"median ±{statistics.median(sizes):.3g}, from ±{min(sizes):.3g} to ±{max(sizes):.3g} "
            f"over {len(sizes)} undetected differences"
        )
    return lines
