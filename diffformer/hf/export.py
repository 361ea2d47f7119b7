"""`diffformer export RUN DIR`: a run as a folder Hugging Face transformers loads with AutoModelForCausalLM
(docs/formulas.md §16).

Vanilla attention with rotary positions becomes the standard Llama layout (no custom code, so every tool
built on transformers reads it as is); every other language-model run — differential V1/V2, doubly
normalized, ALiBi, learned or no positions, the uniform control — ships its own modelling code, loaded
with `trust_remote_code=True`. Text runs bring their tokenizer (tokenizer.json, <|endoftext|> as EOS).
"""

import json
from pathlib import Path

from safetensors.torch import save_file
from tokenizers import Tokenizer

from diffformer.atomic import staged_folder
from diffformer.checkpoint import load_trained_model, safetensors_writing
from diffformer.data.tokenizers import END_OF_TEXT
from diffformer.errors import RecipeError
from diffformer.hf.llama import llama_config, llama_weights
from diffformer.hf.remote_code import copy_remote_code, remote_config, remote_weights
from diffformer.metrics import uncertainty_text
from diffformer.model.attention.registry import kind_entry, kinds_with
from diffformer.model.position import ROPE_BASE


def is_llama(config) -> bool:
    """True when the standard Llama layout expresses the model exactly (its kind's registry entry says when)."""
    return kind_entry(config.attention.kind).llama_layout and config.position == "rope" and not config.uniform_attention


def export_run(path: Path | str, output: Path, license_: str = "other") -> tuple[list[Path], str]:
    """Write the Hugging Face folder; returns its files and the layout used ("llama" or "remote code")."""
    loaded = load_trained_model(path)
    loaded.experiment.refuse("export", loaded.path)
    kind = loaded.model.config.attention.kind
    if not kind_entry(kind).exports:
        exported = ", ".join(kinds_with(lambda entry: entry.exports))
        raise RecipeError(f"cannot export {loaded.path}: the exported modelling code knows {exported}, not {kind}")
    if loaded.model.masked_keys is not None:
        raise RecipeError(
            f"cannot export {loaded.path}: its task masks keys beyond causality (an attention layout, "
            "docs/formulas.md §23), and Hugging Face models are causal only"
        )
    model_config = loaded.model.config
    refusal = model_config.attention.export_refusal()
    if refusal is not None:
        raise RecipeError(f"cannot export {loaded.path}: {refusal}")
    ramps = [getattr(block.attention, "lambda_ramp", None) for block in loaded.model.blocks]
    if any(ramp is not None and float(ramp) < 1.0 for ramp in ramps):
        raise RecipeError(
            f"cannot export {loaded.path}: λ is still warming up at step {loaded.step} "
            f"(lambda_warmup_steps {model_config.attention.lambda_warmup_steps}); train past it first"
        )
    if not model_config.llama_architecture:
        raise RecipeError(
            f"cannot export {loaded.path}: its blocks have {model_config.norm}, {model_config.mlp}"
            f"{' and biases' if model_config.bias else ''}; the exported layouts (Llama, diffformer's modelling "
            "code) have RMSNorm, SwiGLU and no biases"
        )
    if model_config.rope_theta != ROPE_BASE and not is_llama(model_config):
        raise RecipeError(
            f"cannot export {loaded.path}: diffformer's modelling code rotates with θ = {ROPE_BASE:g}, "
            f"this run with {model_config.rope_theta:g}"
        )
    if output.exists() and not output.is_dir():
        raise RecipeError(f"export folder {output} is a file; choose a new folder")
    if output.exists() and any(output.iterdir()):
        raise RecipeError(f"export folder {output} is not empty; choose a new folder")
    llama = is_llama(model_config)
    config = llama_config(model_config) if llama else remote_config(model_config)
    weights = llama_weights(loaded.model) if llama else remote_weights(loaded.model)
    with staged_folder(output) as staging:  # a failure leaves no half-written export behind
        written = _write_export(loaded, staging, config, weights, llama, license_)
    return [output / path.name for path in written], "llama" if llama else "remote code"


def _write_export(loaded, folder: Path, config: dict, weights: dict, llama: bool, license_: str) -> list[Path]:
    files = [folder / "config.json", folder / "model.safetensors"]
    tokenizer_file = loaded.folder.tokenizer_file
    text_run = tokenizer_file.is_file()
    end_of_text = Tokenizer.from_file(str(tokenizer_file)).token_to_id(END_OF_TEXT) if text_run else None
    if end_of_text is not None:
        config["eos_token_id"] = end_of_text
    files[0].write_text(json.dumps(config, indent=2) + "\n")
    with safetensors_writing(files[1]):
        save_file(weights, str(files[1]), metadata={"format": "pt"})
    if not llama:
        files += copy_remote_code(folder)
    if text_run:
        files += _write_tokenizer(tokenizer_file, folder, end_of_text)
    files.append(folder / "README.md")
    files[-1].write_text(model_card(loaded, llama, license_))
    return files


def model_card(loaded, llama: bool, license_: str = "other") -> str:
    """README.md for the hub: what the model is, how to load it, what it scored, the recipe it was trained with."""
    import yaml

    config, recipe = loaded.model.config, loaded.stored_recipe
    remote = "" if llama else ", trust_remote_code=True"
    scores = loaded.summary.eval if loaded.summary is not None else {}
    metrics = [name for name in ("loss", "accuracy", "exact_match", "perplexity", "bits_per_byte") if name in scores]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"license: {license_}",
        f"tags: [diffformer, {config.attention.kind.replace('_', '-')}-attention]",
        "---",
        f"# {recipe.get('name', loaded.folder.path.name)}",
        "",
        f"A {config.n_layers}-layer decoder-only transformer with {config.attention.kind} attention "
        f"({loaded.model.num_parameters():,} parameters), trained with diffformer for {loaded.step:,} steps "
        f"({loaded.tokens_seen:,} tokens) on {recipe.get('data', {}).get('task', 'its data')}.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("PATH_OR_HUB_NAME"{remote})',
        *(  # without trust_remote_code, AutoTokenizer stops at an interactive "run the custom code?" prompt
            [f'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_NAME"{remote})']
            if loaded.folder.tokenizer_file.is_file()
            else []
        ),
        "```",
        "",
    ]
    if loaded.unfinished:
        lines += [f"**{loaded.unfinished.capitalize()}**: these weights are from before training ended.", ""]
    if metrics:
        lines += [f"Held-out metrics at the last step ({scores.get('examples', '?')} sequences):", ""]
        lines += [f"- {name}: {scores[name]:.4g}{uncertainty_text(scores, name)}" for name in metrics]
        lines.append("")
    lines += ["The recipe:", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def _write_tokenizer(tokenizer_file: Path, output: Path, end_of_text: int | None) -> list[Path]:
    files = [output / "tokenizer.json", output / "tokenizer_config.json"]
    files[0].write_bytes(tokenizer_file.read_bytes())
    settings = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if end_of_text is not None:
        settings["eos_token"] = END_OF_TEXT
    files[1].write_text(json.dumps(settings) + "\n")
    return files
