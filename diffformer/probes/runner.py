"""`diffformer probe` as a library call: check the settings, load the run, run the probes, write the outputs.

    run_probes(path, ProbeSettings(...), output_dir) -> ProbeReport

Prompts are a pure function of (seed, variant, length, depth, batch), so every checkpoint
probed with the same seed sees exactly the same prompts (probes/retrieval.py).
"""

from pathlib import Path

from diffformer.checkpoint import LoadedModel, load_trained_model
from diffformer.data import prepare_data
from diffformer.data.mqar import MqarTask
from diffformer.data.needle import NeedleTask
from diffformer.devices import autocast_for, resolve_device
from diffformer.probes.ablation import ablate_heads
from diffformer.probes.full_capture import coverage_and_outliers
from diffformer.probes.prompts import PromptSource, SyntheticPrompts, synthetic_variants
from diffformer.probes.results import LayerAttention, ProbeReport
from diffformer.probes.retrieval import retrieval_grid
from diffformer.probes.settings import ProbeSettings
from diffformer.quantization import evaluate_quantized
from diffformer.run_folder import PROBE_FILE, probes_dir_for
from diffformer.training.trackers import log_probe_summary

FULL_CAPTURE_BATCH = 8  # sequences in the all-rows capture (T×T maps per layer)


def run_probes(path: Path | str, settings: ProbeSettings, output_dir: Path | None = None, on_cell=None) -> ProbeReport:
    """Probe a run folder or checkpoint; with output_dir, write probe.json and the pictures there."""
    settings.check()
    device = resolve_device(settings.device)
    loaded = load_trained_model(path, device)
    loaded.experiment.refuse("probe", loaded.path)
    model = loaded.model.eval()
    report = ProbeReport(str(loaded.path), loaded.step, model.config.attention.kind, settings.seed)
    report.settings = settings.model_dump(exclude={"device"})
    if loaded.unfinished:
        report.notes.append(f"{loaded.unfinished}: the probe reads weights from before training ended")
    source = _prompt_source(loaded, settings)
    if source is None:
        report.notes.append(
            f"the retrieval and attention probes need a model trained on needle, mqar or text data; "
            f"this one was trained on {loaded.task}"
        )
        return _finish(report, output_dir)
    longest = model.config.max_seq_len if model.config.position == "learned" else None
    lengths = settings.lengths_for(source.trained_length, longest)
    for length in lengths:
        loaded.check_length(length)
    report.notes += outside_training(loaded.data_config(), source.trained_length, lengths, settings)
    if settings.data_overrides:
        report.notes.append(f"probed on other data settings than trained: {', '.join(settings.data_overrides)}")
    with autocast_for(device, loaded.precision):  # compute as training did (a bf16 run is probed in bf16)
        _measure(report, loaded, source, lengths, settings, device, on_cell)
    if loaded.is_latest and loaded.recipe is not None and loaded.recipe.trackers:
        report.notes += log_probe_summary(loaded.recipe, loaded.folder, loaded.step, report.scalars())
    return _finish(report, output_dir)


def _measure(report: ProbeReport, loaded, source, lengths, settings: ProbeSettings, device, on_cell=None) -> None:
    """on_cell(done, total): hears each finished cell of the retrieval grid (a progress bar)."""
    model, wanted = loaded.model, set(settings.probes)
    if {"ablation", "quantization"} & wanted:
        batches = -(-settings.held_out_sequences // settings.batch_size)
        data = prepare_data(loaded.data_config(settings.data_overrides))
        where = (data, loaded.trained_recipe().seed, batches, settings.batch_size)
        where += (device, loaded.precision)
        if "ablation" in wanted:
            report.ablation = ablate_heads(model, *where)
        if "quantization" in wanted:
            report.quantization = evaluate_quantized(model, where, settings.schemes())
    if {"retrieval", "attention"} & wanted:
        grids, attention = retrieval_grid(
            model,
            source,
            lengths,
            settings.depths,
            settings.samples,
            settings.batch_size,
            device,
            settings.threshold,
            with_attention="attention" in wanted,
            notes=report.notes,
            on_cell=on_cell,
        )
        if "retrieval" in wanted:
            report.retrieval = grids
        if attention is not None:
            report.attention = attention.summary()
            if report.ablation is not None and report.ablation.retrieval_heads:
                report.attention.at_retrieval_heads = attention.at_heads(report.ablation.retrieval_heads)
    if {"attention", "outliers"} & wanted:
        plain = source.plain_batch(min(settings.batch_size, FULL_CAPTURE_BATCH)).to(device)
        coverage, outliers = coverage_and_outliers(model, plain.inputs)
        if report.attention is not None:
            for layer, values in coverage.items():
                report.attention.layers.setdefault(layer, LayerAttention()).key_coverage = values
        if "outliers" in wanted:
            report.outliers = outliers


def outside_training(data, trained_length: int, lengths: list[int], settings: ProbeSettings) -> list[str]:
    """Which probe cells ask for what the run never trained on — longer contexts, needle depths or layouts it
    did not see — said plainly, so a low number there is not read as a failure at what it learnt."""
    notes = []
    longer = [n for n in lengths if n > trained_length]
    if longer and {"retrieval", "attention"} & set(settings.probes):
        notes.append(
            f"lengths {', '.join(map(str, longer))} are longer than any training sequence ({trained_length}): "
            "those cells measure extrapolation"
        )
    depth = getattr(data, "depth", "absent")
    if isinstance(data, MqarTask) and depth is None:
        notes.append(
            "trained with the pairs first (data.depth: null); every probe prompt places them at a depth of filler "
            "with all keys asked at the end, a layout this run never saw"
        )
    elif isinstance(depth, float):
        unseen = [d for d in settings.depths if d != depth]
        if unseen:
            notes.append(
                f"trained at depth {depth:g} only (data.depth): depths {', '.join(f'{d:g}' for d in unseen)} "
                "are outside its training"
            )
    return notes


def default_output_dir(path: Path | str) -> Path:
    """RUN/probes for a run folder; beside the file for a checkpoint file."""
    from diffformer.run_folder import locate

    return probes_dir_for(locate(path)[1])


def _finish(report: ProbeReport, output_dir: Path | None) -> ProbeReport:
    if output_dir is not None:
        _write_outputs(report, output_dir)
    return report


def _prompt_source(loaded: LoadedModel, settings: ProbeSettings) -> PromptSource | None:
    data = loaded.data_config(settings.data_overrides)
    if isinstance(data, (MqarTask, NeedleTask)):
        return SyntheticPrompts(data, synthetic_variants(data, settings.variants), settings.seed)
    if data.task == "text":
        from diffformer.probes.text_needle import TextNeedle, TextNeedlePrompts

        text = prepare_data(data)
        needle = TextNeedle(text.tokenizer, text.val_tokens)
        return TextNeedlePrompts(needle, text, loaded.model, settings.seed, data.seq_len)
    return None


def _write_outputs(report: ProbeReport, output_dir: Path) -> None:
    import json

    from diffformer.probes.plots import ablation_plot, attention_plot, retrieval_heatmap

    output_dir.mkdir(parents=True, exist_ok=True)
    for variant, grid in report.retrieval.items():
        path = output_dir / f"retrieval_{variant}.png"
        retrieval_heatmap(grid, f"{variant} retrieval · {report.attention_kind} · step {report.step}", path)
        report.files.append(str(path))
    if report.attention is not None and any(
        layer.needle_mass is not None
        for per_layer in report.attention.by_length.values()
        for layer in per_layer.values()
    ):
        path = output_dir / "attention.png"
        attention_plot(report.attention, f"{report.attention_kind} · step {report.step}", path)
        report.files.append(str(path))
    if report.ablation is not None:
        path = output_dir / "ablation.png"
        ablation_plot(report.ablation, f"{report.attention_kind} · step {report.step}", path)
        report.files.append(str(path))
    path = output_dir / PROBE_FILE
    report.files.append(str(path))
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
