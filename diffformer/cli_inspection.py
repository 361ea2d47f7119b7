"""The commands that look inside a trained model: `sample` (what it says), `attention` (where it looks),
`dynamics` (how its attention changed over training) and `export` (the model for Hugging Face).
Registered on the `diffformer` app in cli.py; like it, they parse, call the library and render."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from diffformer.console import DeviceOption, print_json, stdout, user_errors
from diffformer.errors import RecipeError
from diffformer.model.attention.registry import BASELINE_KIND
from diffformer.sections import MAX_SEED

MAX_SAMPLES = 1000  # continuations per call: more is a typo, not a study


def _read_prompt(prompt_file: Path) -> str:
    """The prompt file's text (`-`: standard input), which must be UTF-8."""
    try:
        if str(prompt_file) == "-":
            return sys.stdin.buffer.read().decode("utf-8") if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        return prompt_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        where = "standard input" if str(prompt_file) == "-" else str(prompt_file)
        raise RecipeError(
            f"--prompt-file {where} is not UTF-8 text (byte {error.start} is not valid UTF-8); save it as UTF-8"
        ) from None


def sample(
    run: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to continue (synthetic tasks: token ids, '3 17 5').")
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option("--prompt-file", help="Read the prompt from a file ('-': standard input).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="Softmax temperature; 0 = greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Sample among the k likeliest tokens.")] = None,
    top_p: Annotated[
        float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Sample among the likeliest tokens up to mass p.")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(min=0, max=MAX_SEED, help="Seed of the random draws of sampling (sample i uses seed + i)."),
    ] = 0,
    samples: Annotated[
        int, typer.Option("--samples", "-s", min=1, max=MAX_SAMPLES, help="How many continuations.")
    ] = 1,
    example: Annotated[
        int | None, typer.Option("--example", min=0, help="Synthetic tasks: held-out example N of the run's data.")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Other data settings for held-out examples: --set data.seq_len=48 ...")
    ] = [],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every step (slower; for checking).")] = False,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of streaming text.")] = False,
) -> None:
    """Generate from a trained model (text streams as it comes); for synthetic tasks, show held-out examples
    as input / prediction / target."""
    from diffformer.generation import SamplingSettings
    from diffformer.sampling import load_for_sampling, sample_text, synthetic_examples

    with user_errors(as_json):
        if prompt is not None and prompt_file is not None:
            raise RecipeError("give --prompt or --prompt-file, not both")
        if prompt_file is not None:
            prompt = _read_prompt(prompt_file)
        loaded, tokenizer = load_for_sampling(run, device)
        if tokenizer is None and prompt is None:
            chosen = [0 if example is None else example]
            rows = synthetic_examples(loaded, chosen, overrides=set_)
            if as_json:
                print_json({"examples": rows})
            else:
                _render_examples(rows, chosen)
            return
        settings = SamplingSettings(temperature, top_k, top_p, seed, use_cache=not no_cache)

        def stream(index: int, text: str) -> None:
            if not as_json:
                if text and index != stream.last:
                    if samples > 1:
                        stdout.print(f"{chr(10) if index else ''}[dim]── sample {index + 1} ──[/dim]")
                    _write_prompt(prompt or "", ids_prompt=tokenizer is None)
                    stream.last = index
                sys.stdout.write(text)
                sys.stdout.flush()

        stream.last = -1
        results = sample_text(loaded, tokenizer, prompt or "", max_new_tokens, settings, samples, stream)
    if as_json:
        print_json({"samples": results})
    else:
        sys.stdout.write("\n")


# Between a prompt of token ids and its continuation: "3 17 5" then "56 51" must not read as "3 17 556 51".
IDS_SEPARATOR = " | "


def _write_prompt(prompt: str, ids_prompt: bool) -> None:
    """The prompt before its continuation: dimmed on a terminal, and for token ids followed by IDS_SEPARATOR."""
    shown = prompt + (IDS_SEPARATOR if ids_prompt else "")
    if stdout.is_terminal:
        stdout.print(f"[dim]{escape(shown)}[/dim]", end="", highlight=False, soft_wrap=True)
        stdout.file.flush()
    else:
        sys.stdout.write(shown)


def _render_examples(examples, indices: list[int]) -> None:
    for index, rows in zip(indices, examples):
        table = Table(title=f"held-out example {index}: input · greedy prediction · target")
        for column in ("position", "input", "prediction", "target", ""):
            table.add_column(column, justify="right")
        for row in rows:
            scored = row.target is not None
            mark = ("[green]✓[/green]" if row.prediction == row.target else "[red]✗[/red]") if scored else ""
            target = str(row.target) if scored else "·"
            table.add_row(str(row.position), str(row.input), str(row.prediction) if scored else "", target, mark)
        right = sum(r.prediction == r.target for r in rows if r.target is not None)
        scored = sum(r.target is not None for r in rows)
        table.caption = f"{right}/{scored} scored positions right"
        stdout.print(table)


def attention(
    run: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Text to look at (synthetic tasks: token ids).")
    ] = None,
    example: Annotated[
        int | None, typer.Option("--example", min=0, help="Held-out example N of the run's data.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the pictures (default RUN/attention).")
    ] = None,
    image_format: Annotated[str, typer.Option("--format", help="png, or svg / pdf for papers.")] = "png",
    set_: Annotated[
        list[str], typer.Option("--set", help="Other data settings for held-out examples: --set data.seq_len=48 ...")
    ] = [],
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the written files as JSON.")] = False,
) -> None:
    """Every head's attention map for one prompt or example: a PNG grid per layer (differential: A1, A2 and
    A1 − λ·A2; doubly normalized: the map and its key coverage) and an interactive HTML page."""
    from diffformer.probes.head_maps import attention_pictures

    with user_errors(as_json):
        files = attention_pictures(run, prompt, example, output, device, image_format, set_)
    if as_json:
        print_json({"files": [str(f) for f in files]})
    else:
        stdout.print("wrote " + ", ".join(str(f) for f in files))


def patch(
    run: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint of an mqar or needle run.")],
    by: Annotated[
        str, typer.Option("--by", help="layers (attention / MLP / residual), heads, or positions.")
    ] = "heads",
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=2, max=4096, help="Held-out sequences to patch.")
    ] = 128,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The heatmap (default RUN/patching-BY.png).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Other data settings for held-out examples: --set data.depth=0.5 ...")
    ] = [],
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the shares restored as JSON.")] = False,
) -> None:
    """Activation patching: which layers, heads or positions carry the answer. Each held-out sequence is
    corrupted by changing its answer's value in the evidence; every cell reruns the corrupted sequence with
    one clean activation and shows the share of the clean–corrupted logit gap it restores (docs/formulas.md §26)."""
    from diffformer.console import cell_progress, stderr
    from diffformer.probes.patching import draw_patching, patch_run

    with user_errors(as_json):
        with cell_progress(stderr, "patching") as on_cell:
            report = patch_run(run, by, examples, device, set_, on_cell)
        from diffformer.run_folder import locate

        folder, _ = locate(run)
        figure = draw_patching(
            report, f"{folder.path.name} · patching by {by}", output or folder.path / f"patching-{by}.png"
        )
    if as_json:
        print_json({**report.to_json(), "figure": str(figure)})
        return
    _render_patching(report)
    stdout.print(f"wrote {figure}")


SHOWN_POSITION_SHARE = 0.05  # positions restoring less than this in every layer stay out of the table


def _render_patching(report) -> None:
    """Layers × columns; by position, transposed (a row per position) and only the positions that matter."""
    title = f"share of the clean–corrupted logit gap restored, by {report.by} (95% interval)"
    table = Table(title=title)
    table.add_column("position" if report.by == "positions" else "")
    cells = {
        (r, c): f"{share:.2f} [dim]({low:.2f}…{high:.2f})[/dim]"
        for r, (shares, lows, highs) in enumerate(zip(report.restored, report.low, report.high))
        for c, (share, low, high) in enumerate(zip(shares, lows, highs))
    }
    if report.by == "positions":
        for name in report.rows:
            table.add_column(name, justify="right")
        shown = [
            c for c in range(len(report.columns)) if any(abs(row[c]) >= SHOWN_POSITION_SHARE for row in report.restored)
        ]
        for c in shown:
            table.add_row(report.columns[c], *(cells[r, c] for r in range(len(report.rows))))
        left = len(report.columns) - len(shown)
        hidden = (
            f" · {left} positions under {SHOWN_POSITION_SHARE} in every layer left out (see --json)" if left else ""
        )
    else:
        for column in report.columns:
            table.add_column(column, justify="right")
        for r, name in enumerate(report.rows):
            table.add_row(name, *(cells[r, c] for c in range(len(report.columns))))
        hidden = ""
    row, column, share = report.strongest()
    table.caption = (
        f"{report.sequences} sequences · logit difference clean {report.clean_metric:.2f}, corrupted "
        f"{report.corrupted_metric:.2f} · clean accuracy {report.clean_accuracy:.3f} · "
        f"most: {row}, {column} ({share:.2f}){hidden}"
    )
    stdout.print(table)
    for note in report.notes:
        stdout.print(f"[yellow]note:[/yellow] {escape(note)}")


def export(
    run: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint of a language model.")],
    output: Annotated[Path, typer.Argument(help="A new folder for the Hugging Face files.")],
    license_: Annotated[
        str, typer.Option("--license", help="The model card's license, a hub identifier (mit, apache-2.0, …).")
    ] = "other",
    as_json: Annotated[bool, typer.Option("--json", help="Print the layout and written files as JSON.")] = False,
) -> None:
    """Write a run as a folder transformers' AutoModelForCausalLM loads (config.json, model.safetensors,
    tokenizer.json): vanilla + rope as a Llama model with no custom code, every other kind with its own
    modelling file (load with trust_remote_code=True). For lm-evaluation-harness, see the README."""
    from diffformer.hf.export import export_run

    with user_errors(as_json):
        files, layout = export_run(run, output, license_)
    if as_json:
        print_json({"layout": layout, "files": [str(f) for f in files]})
    else:
        loading = "" if layout == "llama" else " (load with trust_remote_code=True)"
        stdout.print(f"wrote a {layout} folder{loading}: " + ", ".join(f.name for f in files))


def import_(
    source: Annotated[
        Path, typer.Argument(help="A transformers folder (config.json, model.safetensors): Llama or GPT-2.")
    ],
    output: Annotated[Path, typer.Argument(help="A new folder for the diffformer weights.")],
    attention_kind: Annotated[
        str, typer.Option("--attention", help="vanilla (exact), differential or differential_v2 (converted).")
    ] = BASELINE_KIND,
    second_map: Annotated[
        str,
        typer.Option("--second-map", help="Differential: the second maps start zero (uniform) or mirror the first."),
    ] = "zero",
    sublayer_norm: Annotated[
        bool, typer.Option("--sublayer-norm", help="Differential V1: keep the paper's per-head RMSNorm·(1 − λ_init).")
    ] = False,
    lambda_warmup: Annotated[
        int, typer.Option("--lambda-warmup", min=0, help="Differential: λ grows from 0 over this many training steps.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the import record as JSON.")] = False,
) -> None:
    """Import a pretrained Hugging Face model as diffformer weights, its attention kept or converted to differential
    attention; prints how far the converted logits start from the pretrained ones, and writes finetune.yaml, a
    recipe that continues training it (init_from) on text with the model's own tokenizer."""
    from diffformer.hf.importing import Conversion, import_pretrained

    with user_errors(as_json):
        conversion = Conversion(attention_kind, second_map, sublayer_norm, lambda_warmup)
        files, record = import_pretrained(source, output, conversion)
    if as_json:
        print_json({**record, "files": [str(f) for f in files]})
        return
    distance = record["distance_at_step_0"]
    stdout.print(
        f"imported a {record['model_type']} model as {attention_kind} ({record['parameters']['converted']:,} "
        f"parameters) into {output}"
    )
    stdout.print(
        f"at step 0 against the pretrained logits ({distance['sequences']} random sequences of {distance['length']} "
        f"tokens): max |Δ logit| {distance['max_abs_logit_difference']:.3g}, mean KL "
        f"{distance['mean_kl_per_token']:.3g} nats/token, top-1 agreement {distance['top1_agreement']:.3f}"
    )
    stdout.print(f"continue training: diffformer train {output / 'finetune.yaml'}")


def dynamics(
    run: Annotated[Path, typer.Argument(help="A run folder trained with a track: section.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to draw (default RUN/dynamics.png).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """Draw a run's attention dynamics (RUN/dynamics.jsonl) again: one panel per measurement, a curve per layer."""
    from diffformer.dynamics.figure import draw_dynamics
    from diffformer.dynamics.records import read_dynamics
    from diffformer.run_folder import DYNAMICS_FIGURE, locate

    with user_errors(as_json):
        folder, _ = locate(run)
        records = read_dynamics(folder)
        path = draw_dynamics(records, folder.path.name, output or folder.path / DYNAMICS_FIGURE)
    if as_json:
        print_json({"figure": str(path), "records": [record.to_json() for record in records]})
    else:
        stdout.print(f"wrote {path}")
