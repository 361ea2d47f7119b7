"""Rich tables for the results the CLI shows."""

from rich.console import Console
from rich.table import Table

from diffformer.devices import mfu_text
from diffformer.metrics import uncertainty_text
from diffformer.probes.ablation import AblationReport
from diffformer.probes.results import AttentionSummary, LayerAttention, LayerOutliers, ProbeReport, RetrievalGrid
from diffformer.training.trainer import TrainResult

SHORT_NAMES = {
    "needle_mass": "needle",
    "noise": "noise",
    "needle_net_mass": "needle Σw",
    "row_sum": "row Σw",
    "a1_needle_mass": "A1 needle",
    "a2_needle_mass": "A2 needle",
    "source_argmax": "argmax src",
    "source_argmax_near": "argmax ±1",
    "source_coverage": "src cover",
    "source_dropped": "src dropped",
    "entropy": "entropy",
    "head_diversity": "diversity",
    "lambda_value": "λ",
    "a1_a2_cosine": "A1·A2 cos",
    "a1_a2_js": "A1/A2 JS",
    "negative_share": "neg share",
}


def _fraction(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def render_probe_report(report: ProbeReport, console: Console) -> None:
    for variant, grid in report.retrieval.items():
        _render_grid(variant, grid, report, console)
    if report.attention is not None and report.attention.layers:
        _render_attention(report.attention, console)
    if report.outliers:
        _render_outliers(report.outliers, console)
    if report.ablation is not None:
        _render_ablation(report.ablation, console)
    if report.quantization:
        _render_quantized(report.quantization, console)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.files:
        console.print("wrote " + ", ".join(report.files))


def _render_grid(variant: str, grid: RetrievalGrid, report: ProbeReport, console: Console) -> None:
    table = Table(title=f"Retrieval ({variant}) · exact match · {report.attention_kind} · step {report.step}")
    table.add_column("length \\ depth", justify="right")
    for depth in grid.depths:
        table.add_column(f"{depth:.0%}", justify="right")
    table.add_column("n/cell", justify="right")
    ranks = grid.mean_rank or [[None] * len(grid.depths)] * len(grid.lengths)
    for length, row, rank_row, counts in zip(grid.lengths, grid.accuracy, ranks, grid.samples):
        cells = [_fraction(a) + ("" if r is None else f" r{r:.1f}") for a, r in zip(row, rank_row)]
        table.add_row(str(length), *cells, str(max(counts)))
    if grid.mean_rank:
        table.title += f" · rN = mean rank of the truth among {grid.candidates} numbers"
    effective = grid.effective_length
    table.caption = (
        f"effective length (mean accuracy ≥ {grid.threshold:.1%} at every length up to it): "
        f"{effective if effective is not None else 'none'}"
    )
    console.print(table)


def _render_attention(attention: AttentionSummary, console: Console) -> None:
    measured = [layer.measured() for layer in attention.layers.values()]
    columns = [name for name in SHORT_NAMES if any(name in m for m in measured)]
    table = Table(
        title="Attention at the answer position (per context length and layer, mean over heads and prompts; "
        f"rows: {attention.rows})"
    )
    table.add_column("length", justify="right")
    table.add_column("layer", justify="right")
    for name in columns:
        table.add_column(SHORT_NAMES[name], justify="right")
    table.add_column("coverage", justify="right")
    table.caption = (
        "needle/noise: share of each row's |weight| on the evidence / on the rest of the context (a "
        "distribution's mass); needle Σw, row Σw: signed sums, for rows that are not distributions; "
        "A1/A2 needle: the share each softmax map of a differential head puts there; entropy normalised to "
        "[0, 1]; diversity: mean pairwise JS between heads; coverage (training length): min r̃ / share of keys "
        "with r̃ < 0.1 / largest share (sink)"
    )
    by_length = [("", attention.by_length)]
    if attention.at_retrieval_heads:
        by_length.append(("needed heads only", attention.at_retrieval_heads))
    for label, per_length in by_length:
        if label:
            table.add_row(f"[bold]{label}[/bold]", *[""] * (len(columns) + 2))
        _attention_rows(table, attention, per_length, columns, with_coverage=not label)
    console.print(table)


def _attention_rows(table: Table, attention: AttentionSummary, per_length, columns, with_coverage: bool) -> None:
    for length, layers in per_length.items():
        for layer, values in layers.items():
            coverage = attention.layers.get(layer, LayerAttention()).key_coverage if with_coverage else None
            cover = (
                "–" if coverage is None else f"{coverage.min:.2f}/{coverage.below_0_1:.0%}/{coverage.largest_share:.2f}"
            )
            table.add_row(str(length), str(layer), *[_fraction(getattr(values, name)) for name in columns], cover)
        table.add_section()


def _render_ablation(ablation: AblationReport, console: Console) -> None:
    synthetic = ablation.exact_match is not None
    metric = "exact match" if synthetic else "loss"
    baseline = ablation.exact_match if synthetic else ablation.loss
    table = Table(
        title=f"Head ablation on {ablation.sequences} held-out sequences · {metric} without ablation {baseline:.3f}"
    )
    for column in ("layer", "head", f"zero: {metric}", "Δ ± s.e.", f"mean: {metric}", "Δ ± s.e.", "needed"):
        table.add_column(column, justify="right")
    by_head: dict[tuple[int, int], dict] = {}
    for cell in ablation.cells:
        by_head.setdefault((cell.layer, cell.head), {})[cell.mode] = cell
    for (layer, head), modes in sorted(by_head.items()):
        cells = []
        for mode in ("zero", "mean"):
            cell = modes[mode]
            value = cell.exact_match if synthetic else cell.loss
            change, error = (
                (cell.exact_match_change, cell.exact_match_change_se)
                if synthetic
                else (cell.loss_change, cell.loss_change_se)
            )
            cells += [f"{value:.3f}", f"{change:+.3f} ± {error:.3f}"]
        needed = "yes" if head in ablation.retrieval_heads.get(layer, []) else ""
        table.add_row(str(layer), str(head), *cells, needed)
    table.caption = (
        "Δ: ablated − unablated on the same sequences (paired); needed: zero or mean ablation makes the task "
        "detectably worse (95%). Mean ablation replaces a head's output by its mean over these sequences."
    )
    console.print(table)


def _render_outliers(outliers: dict[int, LayerOutliers], console: Console) -> None:
    maps = list(next(iter(outliers.values())).logits)
    table = Table(title="Outliers: |attention logit| and |hidden state| per layer (top-1, median, top-1 ÷ median)")
    table.add_column("layer", justify="right")
    for name in maps:
        suffix = name.removeprefix("logits")
        for statistic in ("top1", "median", "ratio"):
            table.add_column(f"logit{suffix} {statistic}", justify="right")
    for statistic in ("top1", "median", "ratio"):
        table.add_column(f"hidden {statistic}", justify="right")

    def numbers(*values) -> list[str]:
        return ["–" if v is None else f"{v:.2f}" for v in values]

    for layer, values in outliers.items():
        logits = [
            x
            for name in maps
            for x in numbers(values.logits[name].top1, values.logits[name].median, values.logits[name].ratio)
        ]
        table.add_row(str(layer), *logits, *numbers(values.hidden_top1, values.hidden_median, values.hidden_ratio))
    console.print(table)


def render_train_result(result: TrainResult, console: Console) -> None:
    table = Table(title=f"Trained {result.name}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("run folder", str(result.run_dir)),
        ("steps", f"{result.steps:,}"),
        ("tokens seen", f"{result.tokens_seen:,}"),
        ("parameters", f"{result.parameters:,}"),
        ("wall time", f"{result.wall_seconds:.1f} s"),
        ("final train loss", f"{result.final_loss:.4f}"),
    ]
    if result.resumed_from is not None:
        rows.insert(1, ("resumed from step", str(result.resumed_from)))
    if result.throughput:
        speed = result.throughput
        rows.append(("throughput", f"{speed['tokens_per_sec']:,.0f} tok/s, {mfu_text(speed.get('mfu'))}"))
    for name, value in result.eval.items():
        if name.endswith(("_se", "_low", "_high")):
            continue
        text = f"{value:.4f}" + uncertainty_text(result.eval, name) if isinstance(value, float) else f"{value:,}"
        rows.append((f"eval {name.replace('_', ' ')}", text))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def render_comparison(comparison, console: Console) -> None:
    for note in comparison.notes:
        console.print(f"[bold]best:[/bold] {note}")
    for warning in comparison.warnings:
        console.print(f"[yellow]{warning}[/yellow]")
    table = Table(title="Comparison (Δ against the first column)")
    table.add_column("", style="bold")
    for label in comparison.columns:
        table.add_column(label, justify="right")
    for key, values in comparison.differences.items():
        short = ".".join(key.split(".")[-2:])  # e.g. attention.kind, lambda_init.schedule
        table.add_row(short, *["–" if v is None else str(v) for v in values], style="cyan")
    section = None
    for row in comparison.rows:
        if row.section != section:
            table.add_section()
            section = row.section
        cells = []
        for i, value in enumerate(row.values):
            error = row.uncertainty[i] if row.uncertainty else None
            text = _format(value) + (f" ± {error:.3g}" if isinstance(error, float) and error == error else "")
            if row.kind == "share" and row.intervals[i] is not None:
                text = f"{value:.2f} (95%: {row.intervals[i][0]:.2f}–{row.intervals[i][1]:.2f})"
            if i > 0 and row.verdicts[i] and row.kind != "text":
                text += f"\n[dim]{row.verdicts[i]}[/dim]"
            cells.append(text)
        table.add_row(row.name, *cells)
    console.print(table)
    console.print(
        "± is a column's standard error over its seeds (never below its runs' own errors); each difference to "
        "the first column carries its 95% interval (paired by seed or Welch; docs/formulas.md §19)."
    )


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}"


def render_eval_report(report, console: Console) -> None:
    metrics = report.metrics
    where = f"{report.checkpoint} · step {report.step}"
    table = Table(title=f"{where} · {report.task} · T={report.seq_len} · {report.split}")
    for column in ("metric", "value", "± s.e.", "rests on"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    examples = f"{metrics['examples']:,} sequences"
    tokens = f"{metrics['scored_tokens']:,} tokens" if "scored_tokens" in metrics else examples
    per_token = ("loss", "accuracy", "bits_per_byte")
    measured = [name for name in metrics if f"{name}_se" in metrics]  # the focus task adds its own measurements
    for name in [
        *(n for n in (*per_token, "exact_match") if n in measured),
        *(n for n in measured if n not in per_token + ("exact_match",)),
    ]:
        basis = tokens if name in per_token else examples
        spread = uncertainty_text(metrics, name).strip(" ±()")  # a proportion's Wilson interval, else its s.e.
        table.add_row(name.replace("_", " "), f"{metrics[name]:.4f}", spread, basis)
    if "perplexity" in metrics:
        interval = f"95%: {metrics['perplexity_low']:.2f}–{metrics['perplexity_high']:.2f}"
        table.add_row("perplexity", f"{metrics['perplexity']:.2f}", interval, tokens)
    console.print(table)
    if report.unfinished:
        console.print(
            f"[yellow]⚠ {report.unfinished}: these numbers rest on weights from before training ended[/yellow]"
        )
    if report.quantized:
        _render_quantized(report.quantized, console)


def _render_quantized(results, console: Console) -> None:
    """Each scheme's metrics and their paired change against full precision (QuantizedEval rows)."""
    names = [name for name in ("loss", "exact_match") if name in results[0].change]
    table = Table(title="Low-bit evaluation: weights and activations fake-quantized (docs/formulas.md §21)")
    table.add_column("scheme")
    for name in names:
        label = name.replace("_", " ")
        table.add_column(label, justify="right")
        table.add_column(f"Δ {label} vs full precision (95%)", justify="right")
    full = {n: results[0].metrics[n] - results[0].change[n]["delta"] for n in names}
    table.add_row("full precision", *[x for n in names for x in (f"{full[n]:.4f}", "")])
    for result in results:
        cells = []
        for name in names:
            change = result.change[name]
            cells += [
                f"{result.metrics[name]:.4f}",
                f"{change['delta']:+.4f} ({change['low']:+.4f} … {change['high']:+.4f})",
            ]
        table.add_row(result.scheme, *cells)
    table.caption = "Δ: quantized − full precision on the same held-out sequences (paired)."
    console.print(table)
