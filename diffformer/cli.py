"""The `diffformer` command: a thin layer that parses arguments, calls the library and renders results."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from diffformer import __version__
from diffformer.cli_inspection import attention, dynamics, export, import_, patch, sample
from diffformer.console import (
    DeviceOption,
    OneLineErrors,
    cell_progress,
    print_json,
    stderr,
    stdout,
    user_errors,
)
from diffformer.errors import RecipeError
from diffformer.reporting import (
    render_comparison,
    render_eval_report,
    render_probe_report,
    render_train_result,
)

app = typer.Typer(
    name="diffformer",
    cls=OneLineErrors,
    help="Train, evaluate, probe and compare small decoder-only transformers with pluggable attention.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"diffformer {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """diffformer: attention research workbench."""


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file, or a run folder to resume.")],
    set_: Annotated[
        list[str],
        typer.Option("--set", help="Override a recipe key: --set train.steps=200 (repeatable; values are YAML)."),
    ] = [],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")] = False,
    only: Annotated[
        list[str], typer.Option("--only", help="With variants: train only those with KEY=VALUE (repeatable).")
    ] = [],
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain", help="Train anew any run whose recorded settings differ from the recipe (else refused)."
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(help="auto, cpu or cuda: overrides the recipe's train.device (a missing GPU is refused)."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="With variants: train this many at once (a process each).")
    ] = 1,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            help="With variants: processes (here, --jobs at once), slurm (a job per variant through submitit), "
            "submitit-local (submitit's local executor).",
        ),
    ] = "processes",
    cluster_option: Annotated[
        list[str],
        typer.Option(
            "--cluster-option", help="A submitit parameter: timeout_min=120, gpus_per_node=1, slurm_partition=gpu ..."
        ),
    ] = [],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --launcher slurm: wait for the jobs, then compare.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a model from a recipe into a run folder (runs/<name> by default).

    A recipe with `variants:` trains every combination into runs/<name>/<key=value+...>,
    skipping finished variants and resuming interrupted ones, then prints the comparison.

    Shows a progress bar, writes metrics.jsonl and safetensors checkpoints, and ends
    with a summary. Ctrl-C saves a checkpoint (exit 130); resume with --resume.
    """
    from diffformer.launch import train_from_path
    from diffformer.progress import ConsoleProgress, ConsoleSweep
    from diffformer.training.distributed import process_info

    try:
        with user_errors(as_json):
            overrides = [*set_, *([f"train.device={device}"] if device is not None else [])]
            from diffformer.cluster import LAUNCHERS

            if launcher not in LAUNCHERS:
                raise RecipeError(f"--launcher must be one of {', '.join(LAUNCHERS)} (got {launcher!r})")
            outcome = train_from_path(
                recipe,
                overrides,
                only,
                resume,
                [ConsoleProgress(stderr)],
                ConsoleSweep(stderr),
                retrain,
                jobs,
                launcher,
                cluster_option,
                wait,
            )
    except KeyboardInterrupt:
        stderr.print("[bold red]error:[/bold red] interrupted twice; stopped without saving this step")
        raise typer.Exit(130) from None
    if not process_info().is_main:  # under torchrun, rank 0 reports
        return
    if outcome.submitted:
        if as_json:
            print_json({"submitted": outcome.submitted})
        else:
            stdout.print(f"submitted {outcome.submitted} variant(s); run the same command again to wait and compare")
        return
    if outcome.result is not None:
        if outcome.result.already_finished:
            stderr.print(f"{outcome.result.name} already finished at step {outcome.result.steps}; nothing to train")
        if as_json:
            print_json(outcome.result)
        else:
            render_train_result(outcome.result, stdout)
    elif outcome.comparison is not None:
        if as_json:
            print_json(outcome.comparison)
        else:
            render_comparison(outcome.comparison, stdout)
            stdout.print("wrote " + ", ".join(str(f) for f in outcome.files))


@app.command("eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
    set_: Annotated[
        list[str],
        typer.Option("--set", help="Evaluate on other data: --set data.seq_len=512 --set data.task=needle ..."),
    ] = [],
    batches: Annotated[
        int | None, typer.Option(min=1, help="Held-out batches (default: the recipe's eval.batches).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Sequences per batch.")] = None,
    data_seed: Annotated[
        int | None, typer.Option("--data-seed", min=0, help="Seed of the held-out data (default: the run's own).")
    ] = None,
    split: Annotated[str, typer.Option(help="val (held out) or train.")] = "val",
    device: DeviceOption = "auto",
    quantize: Annotated[
        list[str],
        typer.Option(
            "--quantize", help="Also with weights/activations rounded to wBITSaBITS, e.g. w8a8, w4a16 (repeatable)."
        ),
    ] = [],
    granularity: Annotated[
        str, typer.Option(help="Quantization scales: tensor (one per tensor) or channel (per row / feature).")
    ] = "tensor",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Held-out loss, accuracy and exact match (text: perplexity, bits per byte), each with its standard error;
    with --quantize, the same under low-bit weights and activations and the change against full precision."""
    from diffformer.evaluation import evaluate_checkpoint
    from diffformer.quantization import QuantizationScheme

    with user_errors(as_json):
        schemes = [QuantizationScheme.parse(spec, granularity) for spec in quantize]
        with cell_progress(stderr, "evaluating") as on_batch:
            report = evaluate_checkpoint(
                checkpoint, set_, batches, batch_size, data_seed, split, device, on_batch=on_batch, quantize=schemes
            )
    if as_json:
        print_json(report)
    else:
        render_eval_report(report, stdout)


def _numbers(text: str | None, kind: type, option: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RecipeError(f"{option} expects comma-separated numbers, e.g. 128,256,512 (got {text!r})") from None


@app.command()
def probe(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
    probe_names: Annotated[
        list[str],
        typer.Option(
            "--probes",
            "-P",
            help="retrieval, attention, outliers, ablation, quantization (repeatable; default retrieval+attention).",
        ),
    ] = [],
    lengths: Annotated[
        str | None, typer.Option(help="Context lengths, comma-separated (default ½, 1, 2, 4 × training length).")
    ] = None,
    depths: Annotated[str, typer.Option(help="Needle depths in [0, 1], comma-separated.")] = "0,0.25,0.5,0.75,1",
    variant: Annotated[
        list[str], typer.Option(help="Prompt variants (mqar, mqar_distractors, or a needle variant); 'all': every one.")
    ] = [],
    samples: Annotated[int, typer.Option(min=1, help="Prompts per grid cell.")] = 32,
    held_out_sequences: Annotated[
        int, typer.Option(min=1, help="With -P ablation / quantization: held-out sequences they are scored on.")
    ] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per forward pass.")] = 16,
    prompt_seed: Annotated[
        int,
        typer.Option(
            "--prompt-seed", min=0, help="Seed of the prompts: the same seed gives every checkpoint the same prompts."
        ),
    ] = 1234,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for probe.json and PNGs (default RUN/probes).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Probe on other data settings: --set data.num_pairs=4 ...")
    ] = [],
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Long-context retrieval (accuracy over context length × needle depth) and where attention goes."""
    from diffformer.probes.runner import default_output_dir, run_probes
    from diffformer.probes.settings import DEFAULT_PROBES, ProbeSettings

    with user_errors(as_json):
        # Built unvalidated so that check() words every problem as the option the user typed.
        settings = ProbeSettings.model_construct(
            probes=list(probe_names or DEFAULT_PROBES),
            lengths=_numbers(lengths, int, "--lengths"),
            depths=_numbers(depths, float, "--depths"),
            variants=variant or None,
            samples=samples,
            batch_size=batch_size,
            held_out_sequences=held_out_sequences,
            seed=prompt_seed,
            device=device,
            data_overrides=list(set_),
        )
        settings.check()
        with stderr.status("Probing…"):
            with cell_progress(stderr, "probing") as on_cell:
                report = run_probes(checkpoint, settings, output or default_output_dir(checkpoint), on_cell)
    if as_json:
        print_json(report.to_dict())
    else:
        render_probe_report(report, stdout)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders or checkpoints.")],
    probe: Annotated[
        bool, typer.Option("--probe", help="(Re)run the default probes on identical prompts for every input first.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Folder for the report and figures (default: a new comparisons/<date-time>)."
        ),
    ] = None,
    best_of: Annotated[
        str | None,
        typer.Option(
            "--best-of", help="Collapse a swept setting to its best value per everything else, e.g. train.lr."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="With --probe: cpu, cuda, cuda:N or auto (a GPU when there is one).")] = (
        "auto"
    ),
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="With --best-of: the eval metric that decides (loss, exact_match…), or steps_to_learn "
            "(runs with train.early_stop: most seeds reaching the threshold, then the fewest steps).",
        ),
    ] = "loss",
    average: Annotated[
        bool,
        typer.Option(
            "--average", help="Attention measurements averaged over layers and lengths (labelled) instead of one each."
        ),
    ] = False,
    scaling: Annotated[
        bool,
        typer.Option(
            "--scaling",
            help="Fit held-out loss against parameters per kind: the parameters each kind needs for the "
            "first run's kind's loss, with a bootstrap interval (runs at several sizes).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare runs side by side: what the recipes and the models' derived settings differ in (a fairness
    section with a warning per unnamed difference), budget, losses, eval metrics and probe results.

    Each difference to the first column carries a 95% interval (paired by seed or Welch's t; Wilson and
    Newcombe for shares of seeds) and a verdict naming it and n; metrics on different data are not compared.
    """
    from diffformer.comparison import compare_runs, comparison_as_dict, fresh_output_dir

    with user_errors(as_json):
        comparison, files = compare_runs(
            runs,
            probe,
            output or fresh_output_dir(),
            on_probe=lambda run: stderr.print(f"Probing {run}…"),
            commands=[" ".join(["diffformer", *sys.argv[1:]])],
            best_of=best_of,
            by=by,
            device=device,
            average_attention=average,
            scaling=scaling,
        )
    if as_json:
        print_json(comparison_as_dict(comparison))
        return
    render_comparison(comparison, stdout)
    stdout.print("wrote " + ", ".join(str(f) for f in files))


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the recipe format (for editors' YAML validation)."""
    import json

    from diffformer.recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    with user_errors():
        output.write_text(text + "\n")


app.command()(sample)
app.command()(attention)
app.command()(dynamics)
app.command()(export)
app.command()(patch)
app.command("import")(import_)


if __name__ == "__main__":
    app()
