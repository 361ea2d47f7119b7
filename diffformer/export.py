"""`diffformer export RUN DIR`: a vanilla run as a Hugging Face Llama-family folder (docs/formulas.md §16).

The folder holds config.json (LlamaForCausalLM), model.safetensors in Llama's tensor names, and the
run's tokenizer.json for text runs, so `transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads
it with no custom code — and tools built on it (lm-evaluation-harness's `hf` model) read it as is.
The architectures match block for block (pre-norm RMSNorm, SwiGLU, no biases, grouped-query
attention); the one difference is rotary's layout: diffformer rotates interleaved pairs (0, 1),
(2, 3), …, Llama rotates dimension i with i + d/2, so each head's query and key rows are permuted —
which leaves every q·k unchanged.

Only vanilla attention with rotary positions has a standard Hugging Face layout; other kinds and
position encodings are refused in one line (they would need their own modelling code).
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffformer.checkpoint import load_trained_model
from diffformer.errors import RecipeError


def interleaved_to_half(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection, per head, from pair-interleaved (0, 1, 2, 3, …) to halves (0, 2, …, 1, 3, …)."""
    rows, width = weight.shape
    per_head = weight.view(heads, rows // heads, width)
    order = torch.cat([torch.arange(0, rows // heads, 2), torch.arange(1, rows // heads, 2)])
    return per_head[:, order].reshape(rows, width)


def llama_config(config) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.d_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "torch_dtype": "float32",
    }


def llama_weights(model) -> dict[str, torch.Tensor]:
    config, state = model.config, model.state_dict()
    weights = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["final_norm.weight"]}
    if not config.tie_embeddings:
        weights["lm_head.weight"] = state["lm_head.weight"]
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        weights[theirs + "input_layernorm.weight"] = state[ours + "attention_norm.weight"]
        weights[theirs + "post_attention_layernorm.weight"] = state[ours + "mlp_norm.weight"]
        weights[theirs + "self_attn.q_proj.weight"] = interleaved_to_half(
            state[ours + "attention.q_proj.weight"], config.n_heads
        )
        weights[theirs + "self_attn.k_proj.weight"] = interleaved_to_half(
            state[ours + "attention.k_proj.weight"], config.kv_heads
        )
        weights[theirs + "self_attn.v_proj.weight"] = state[ours + "attention.v_proj.weight"]
        weights[theirs + "self_attn.o_proj.weight"] = state[ours + "attention.out_proj.weight"]
        for our_name, their_name in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            weights[theirs + f"mlp.{their_name}.weight"] = state[ours + f"mlp.{our_name}.weight"]
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()}


def export_run(path: Path | str, output: Path) -> list[Path]:
    """Write the Hugging Face folder; returns its files. Refuses what Llama's layout cannot express."""
    loaded = load_trained_model(path)
    config = loaded.model.config
    problems = []
    if loaded.task == "focus":
        problems.append("a focus-task model is not a language model")
    else:
        if config.attention.kind != "vanilla":
            problems.append(f"{config.attention.kind} attention has no standard Hugging Face layout")
        if config.position != "rope":
            problems.append(f"position {config.position} is not Llama's rotary encoding")
        if config.uniform_attention:
            problems.append("the uniform-attention control is not Llama attention")
    if problems:
        raise RecipeError(f"cannot export {loaded.path} as a Llama model: {'; '.join(problems)} (vanilla + rope only)")
    if output.exists() and any(output.iterdir()):
        raise RecipeError(f"export folder {output} is not empty; choose a new folder")
    output.mkdir(parents=True, exist_ok=True)
    files = [output / "config.json", output / "model.safetensors"]
    files[0].write_text(json.dumps(llama_config(config), indent=2) + "\n")
    save_file(llama_weights(loaded.model), str(files[1]), metadata={"format": "pt"})
    if loaded.folder.tokenizer_file.is_file():
        files.append(output / "tokenizer.json")
        shutil.copyfile(loaded.folder.tokenizer_file, files[-1])
        (output / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}) + "\n")
        files.append(output / "tokenizer_config.json")
    return files
