"""Comparing runs: what each achieved (records.py), the side-by-side table with verdicts (table.py),
and the files a comparison writes (outputs.py)."""

from collections.abc import Callable, Sequence
from pathlib import Path

from diffformer.comparison.outputs import DEFAULT_OUTPUT, curves_plot, fresh_output_dir, write_comparison
from diffformer.comparison.records import RunRecord, load_run, load_runs
from diffformer.comparison.table import Comparison, Row, compare_records, comparison_as_dict

__all__ = [
    "DEFAULT_OUTPUT",
    "Comparison",
    "Row",
    "RunRecord",
    "compare_records",
    "compare_runs",
    "comparison_as_dict",
    "curves_plot",
    "fresh_output_dir",
    "load_run",
    "load_runs",
    "write_comparison",
]


def compare_runs(
    paths: Sequence[Path | str],
    probe: bool = False,
    output_dir: Path | None = None,
    on_probe: Callable[[Path | str], None] | None = None,
    commands: Sequence[str] = (),
    best_of: str | None = None,
    by: str = "loss",
    device: str = "auto",
    average_attention: bool = False,
    scaling: bool = False,
) -> tuple[Comparison, list[Path]]:
    """Compare runs (optionally re-probing each on identical prompts first); write outputs to output_dir.

    Returns the comparison and the files written (curves, retrieval figures, comparison.json and
    report.md, whose "how to reproduce" lists `commands`). Inputs are checked before any probing.
    """
    records = load_runs(paths)
    if probe:
        from diffformer.probes.runner import default_output_dir, run_probes
        from diffformer.probes.settings import ProbeSettings

        for path in paths:
            if on_probe is not None:
                on_probe(path)
            run_probes(path, ProbeSettings(device=device), default_output_dir(path))
        records = load_runs(paths)  # now with the fresh probe results
    comparison = compare_records(records, best_of, by, average_attention, scaling)
    files = write_comparison(comparison, records, output_dir, commands) if output_dir is not None else []
    return comparison, files
