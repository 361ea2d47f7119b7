"""`diffformer import HF_DIR OUT`: a pretrained Hugging Face model (Llama layout or GPT-2, as transformers saves
them) as diffformer weights, with its attention kept or converted (docs/formulas.md §27).

Vanilla imports are exact: the blocks match layer for layer (Llama: RMSNorm, SwiGLU, rotary — its rotate-half
layout permuted back to diffformer's interleaved pairs, which leaves every q·k unchanged; GPT-2: LayerNorm,
tanh-GELU MLP, biases, learned positions, Conv1D weights transposed). A conversion to a differential kind
keeps every projection and initialises what the pretrained model does not have:
- differential (V1, n_heads kept; models without grouped-query attention): pair p's first map is pretrained
  head 2p; its value is the pair's 2·d_head wide slice, pretrained heads 2p and 2p+1 side by side, so the output
  projection is kept too. The second map (sub-head 2p+1) is zero-initialised (its queries 0: A2 is uniform over
  the visible keys) or mirrors the first (A2 = A1). Pretrained head 2p+1's map has no place: at a fixed n_heads
  V1 has half as many maps.
- differential_v2: head h's first map is pretrained head h exactly; the second map zero or mirrored; the λ
  gate's weights 0 (λ = sigmoid(0) = 1/2 until trained).
With `lambda_warmup_steps` λ starts at 0, so a V2 conversion starts as the pretrained model exactly and a V1
conversion (without the sub-layer norm) as its first maps reading both heads' values. The distance of the
converted logits from the pretrained ones at step 0 is measured and written to OUT/import.json.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from diffformer.atomic import staged_folder
from diffformer.checkpoint import save_model_weights
from diffformer.errors import RecipeError
from diffformer.hf.llama import half_to_interleaved
from diffformer.model.attention.registry import BASELINE_KIND, kind_entry, kinds_with
from diffformer.model.config import ModelConfig
from diffformer.model.transformer import Transformer

SECOND_MAPS = ("zero", "mirror")
IMPORT_FILE = "import.json"
FINETUNE_RECIPE = "finetune.yaml"
DISTANCE_SEQUENCES, DISTANCE_LENGTH = 8, 64


def importable_kinds() -> list[str]:
    """The kinds a pretrained vanilla model can be converted into (their modules say how)."""
    return kinds_with(lambda entry: entry.module.imports_pretrained)


@dataclass(frozen=True)
class Conversion:
    """How the attention of an imported model is set up (docs/formulas.md §27). sublayer_norm and
    lambda_warmup_steps go to the kind's options where the kind has them."""

    kind: str = BASELINE_KIND
    second_map: str = "zero"
    sublayer_norm: bool = False
    lambda_warmup_steps: int = 0

    def attention_section(self) -> dict:
        options = kind_entry(self.kind).module.config_class.model_fields
        chosen = {"sublayer_norm": self.sublayer_norm, "lambda_warmup_steps": self.lambda_warmup_steps}
        return {"kind": self.kind, **{name: value for name, value in chosen.items() if name in options}}


def read_pretrained(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and every weight of a transformers folder (model.safetensors or its shards). Pickled
    weights (pytorch_model.bin) are refused: diffformer loads nothing through pickle."""
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise RecipeError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RecipeError(f"{config_file} is not valid JSON") from None
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif any(folder.glob("*.bin")):
        raise RecipeError(
            f"{folder} holds pickled weights (.bin); diffformer reads safetensors only — save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    else:
        raise RecipeError(f"{folder} has no model.safetensors")
    weights = {}
    for name in files:
        try:
            weights.update(load_file(str(folder / name)))
        except (SafetensorError, OSError) as error:
            raise RecipeError(f"{folder / name} is not a readable safetensors file ({error})") from None
    return config, weights


def model_config_for(hf: dict, conversion: Conversion) -> ModelConfig:
    """The diffformer ModelConfig of a transformers config (llama or gpt2), with the conversion's attention."""
    model_type = hf.get("model_type")
    if model_type == "llama":
        settings = _llama_settings(hf)
    elif model_type == "gpt2":
        settings = _gpt2_settings(hf)
    else:
        raise RecipeError(f"diffformer imports Llama-layout and GPT-2 models, not model_type {model_type!r}")
    try:
        return ModelConfig(**settings, attention=conversion.attention_section())
    except ValueError as error:
        raise RecipeError(f"cannot convert to {conversion.kind}: {str(error).splitlines()[-1].strip()}") from None


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise RecipeError(f"cannot import this model: {problem}")


def _llama_settings(hf: dict) -> dict:
    heads, width = hf["num_attention_heads"], hf["hidden_size"]
    _require(hf.get("hidden_act", "silu") == "silu", f"hidden_act {hf.get('hidden_act')!r} (diffformer has silu)")
    _require(not hf.get("attention_bias") and not hf.get("mlp_bias"), "biases in a Llama layout")
    _require(hf.get("head_dim", width // heads) * heads == width, "head_dim × heads differs from hidden_size")
    scaling = hf.get("rope_scaling") or {}
    _require(scaling.get("rope_type", scaling.get("type", "default")) == "default", f"rope_scaling {scaling}")
    theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    return dict(
        vocab_size=hf["vocab_size"],
        d_model=width,
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_hidden=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        position="rope",
    )


def _gpt2_settings(hf: dict) -> dict:
    activation = hf.get("activation_function", "gelu_new")
    _require(activation in ("gelu_new", "gelu_pytorch_tanh"), f"activation {activation!r} (diffformer has tanh-GELU)")
    _require(not hf.get("scale_attn_by_inverse_layer_idx"), "scale_attn_by_inverse_layer_idx")
    _require(hf.get("scale_attn_weights", True), "unscaled attention (scale_attn_weights false)")
    width = hf["n_embd"]
    return dict(
        vocab_size=hf["vocab_size"],
        d_model=width,
        n_layers=hf["n_layer"],
        n_heads=hf["n_head"],
        ffn_hidden=hf.get("n_inner") or 4 * width,
        max_seq_len=hf["n_positions"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=True,
        position="learned",
        norm="layernorm",
        mlp="gelu",
        bias=True,
    )


def vanilla_state(hf: dict, weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The pretrained weights under diffformer's vanilla names."""
    if hf["model_type"] == "llama":
        return _llama_state(weights, config)
    return _gpt2_state(weights, config)


def _take(weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in weights:
        raise RecipeError(f"cannot import this model: its weights have no {name}")
    return weights[name].float()


def _llama_state(weights, config: ModelConfig) -> dict[str, torch.Tensor]:
    state = {"embed.weight": _take(weights, "model.embed_tokens.weight")}
    state["final_norm.weight"] = _take(weights, "model.norm.weight")
    if not config.tie_embeddings:
        state["lm_head.weight"] = _take(weights, "lm_head.weight")
    for i in range(config.n_layers):
        theirs, ours = f"model.layers.{i}.", f"blocks.{i}."
        state[ours + "attention_norm.weight"] = _take(weights, theirs + "input_layernorm.weight")
        state[ours + "mlp_norm.weight"] = _take(weights, theirs + "post_attention_layernorm.weight")
        q, k = _take(weights, theirs + "self_attn.q_proj.weight"), _take(weights, theirs + "self_attn.k_proj.weight")
        state[ours + "attention.q_proj.weight"] = half_to_interleaved(q, config.n_heads)
        state[ours + "attention.k_proj.weight"] = half_to_interleaved(k, config.kv_heads)
        state[ours + "attention.v_proj.weight"] = _take(weights, theirs + "self_attn.v_proj.weight")
        state[ours + "attention.out_proj.weight"] = _take(weights, theirs + "self_attn.o_proj.weight")
        for our_name, their_name in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            state[ours + f"mlp.{our_name}.weight"] = _take(weights, theirs + f"mlp.{their_name}.weight")
    return state


def _gpt2_state(weights, config: ModelConfig) -> dict[str, torch.Tensor]:
    # GPT2LMHeadModel saves its body under "transformer."; a GPT2Model saves it bare.
    prefix = "transformer." if "transformer.wte.weight" in weights else ""
    get = lambda name: _take(weights, prefix + name)  # noqa: E731
    width = config.d_model
    state = {"embed.weight": get("wte.weight"), "position_embedding.weight": get("wpe.weight")}
    state |= {"final_norm.weight": get("ln_f.weight"), "final_norm.bias": get("ln_f.bias")}
    for i in range(config.n_layers):
        theirs, ours = f"h.{i}.", f"blocks.{i}."
        for their_norm, our_norm in (("ln_1", "attention_norm"), ("ln_2", "mlp_norm")):
            state[ours + f"{our_norm}.weight"] = get(theirs + f"{their_norm}.weight")
            state[ours + f"{our_norm}.bias"] = get(theirs + f"{their_norm}.bias")
        # Conv1D computes x @ W + b with W (in, out): a Linear's weight is Wᵀ. c_attn holds q, k, v side by side.
        qkv, qkv_bias = get(theirs + "attn.c_attn.weight").t(), get(theirs + "attn.c_attn.bias")
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            state[ours + f"attention.{name}.weight"] = qkv[index * width : (index + 1) * width]
            state[ours + f"attention.{name}.bias"] = qkv_bias[index * width : (index + 1) * width]
        state[ours + "attention.out_proj.weight"] = get(theirs + "attn.c_proj.weight").t()
        state[ours + "attention.out_proj.bias"] = get(theirs + "attn.c_proj.bias")
        state[ours + "mlp.up.weight"] = get(theirs + "mlp.c_fc.weight").t()
        state[ours + "mlp.up.bias"] = get(theirs + "mlp.c_fc.bias")
        state[ours + "mlp.down.weight"] = get(theirs + "mlp.c_proj.weight").t()
        state[ours + "mlp.down.bias"] = get(theirs + "mlp.c_proj.bias")
    return state


def converted_state(vanilla: dict[str, torch.Tensor], config: ModelConfig, conversion: Conversion) -> dict:
    """Vanilla weights laid out for the conversion's kind, layer by layer as the kind's module converts them."""
    module = kind_entry(conversion.kind).module
    state = {name: tensor for name, tensor in vanilla.items() if ".attention." not in name}
    for layer in range(config.n_layers):
        prefix = f"blocks.{layer}.attention."
        pretrained = {name[len(prefix) :]: t for name, t in vanilla.items() if name.startswith(prefix)}
        try:
            converted = module.state_from_vanilla(pretrained, config, layer, conversion.second_map)
        except ValueError as error:
            raise RecipeError(f"cannot convert to {conversion.kind}: {error}") from None
        state |= {prefix + name: tensor for name, tensor in converted.items()}
    return state


def logit_distance(reference: Transformer, converted: Transformer) -> dict[str, float]:
    """How far the converted model's logits are from the reference's on fixed random token sequences:
    the largest |Δ logit|, the mean KL(reference ‖ converted) per token and top-1 agreement."""
    length = min(DISTANCE_LENGTH, reference.config.max_seq_len)
    tokens = torch.randint(
        0, reference.config.vocab_size, (DISTANCE_SEQUENCES, length), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        first, second = reference.eval()(tokens).float(), converted.eval()(tokens).float()
    kl = (first.log_softmax(-1).exp() * (first.log_softmax(-1) - second.log_softmax(-1))).sum(-1)
    return {
        "max_abs_logit_difference": float((first - second).abs().max()),
        "mean_kl_per_token": float(kl.mean()),
        "top1_agreement": float((first.argmax(-1) == second.argmax(-1)).float().mean()),
        "sequences": DISTANCE_SEQUENCES,
        "length": length,
    }


def build_model(config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    model = Transformer(config)
    expected = set(model.state_dict())
    if config.tie_embeddings:
        state = {name: tensor for name, tensor in state.items() if name != "lm_head.weight"}
        expected.discard("lm_head.weight")
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:  # a mapping bug, not the user's input: say which names
        raise RecipeError(
            f"import mapping incomplete: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    model.load_state_dict(state, strict=not config.tie_embeddings)
    return model


def import_pretrained(source: Path, output: Path, conversion: Conversion) -> tuple[list[Path], dict]:
    """Write OUT/model.safetensors (diffformer weights a recipe starts from with `init_from`), OUT/import.json
    (where they came from, the conversion and its measured distance), OUT/tokenizer.json (when the source has
    one) and OUT/finetune.yaml (a recipe to continue training on text with that tokenizer)."""
    if conversion.kind not in importable_kinds():
        raise RecipeError(f"--attention must be one of {', '.join(importable_kinds())} (got {conversion.kind!r})")
    if conversion.second_map not in SECOND_MAPS:
        raise RecipeError(f"--second-map must be one of {', '.join(SECOND_MAPS)} (got {conversion.second_map!r})")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RecipeError(f"import folder {output} exists and is not an empty folder; choose a new one")
    hf, weights = read_pretrained(source)
    vanilla_config = model_config_for(hf, Conversion())
    vanilla = vanilla_state(hf, weights, vanilla_config)
    reference = build_model(vanilla_config, vanilla)
    config = model_config_for(hf, conversion)
    converted = build_model(config, converted_state(vanilla, config, conversion))
    converted.at_step(0)
    distance = logit_distance(reference, converted)
    record = {
        "source": str(source.resolve()),
        "model_type": hf["model_type"],
        "conversion": vars(conversion),
        "parameters": {"pretrained": reference.num_parameters(), "converted": converted.num_parameters()},
        "distance_at_step_0": distance,
    }
    tokenizer = source / "tokenizer.json"
    has_tokenizer = tokenizer.is_file()
    with staged_folder(output) as staging:  # a failure leaves no half-written import behind
        stored = {"name": output.name, "model": config.model_dump(mode="json")}
        save_model_weights(converted, staging / "model.safetensors", stored)
        (staging / IMPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if has_tokenizer:
            shutil.copyfile(tokenizer, staging / "tokenizer.json")
        (staging / FINETUNE_RECIPE).write_text(_finetune_recipe(output, config, has_tokenizer))
    names = ["model.safetensors", IMPORT_FILE, FINETUNE_RECIPE] + (["tokenizer.json"] if has_tokenizer else [])
    return [output / name for name in names], record


def _finetune_recipe(output: Path, config: ModelConfig, has_tokenizer: bool) -> str:
    """A recipe that continues training the imported weights on text (paths relative to the recipe)."""
    tokenizer = {"kind": "file", "path": "tokenizer.json"} if has_tokenizer else {"kind": "byte"}
    recipe = {
        "name": f"{output.name}-finetune",
        "init_from": ".",
        "model": config.model_dump(mode="json"),
        "data": {
            "task": "text",
            "builtin": "pydoc_topics",
            "tokenizer": tokenizer,
            "seq_len": min(128, config.max_seq_len),
        },
        "train": {"steps": 200, "batch_size": 8, "lr": 3.0e-4, "warmup_steps": 20, "precision": "auto"},
        "eval": {"every": 50, "batches": 4},
        "output": "finetuned",
    }
    header = (
        "# Continue training the imported weights (diffformer import). Change data: to your text; the model\n"
        "# section must stay as it is (init_from checks it).   diffformer train " + f"{output / FINETUNE_RECIPE}\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False)
