"""A vanilla rotary run in the Hugging Face Llama layout (docs/formulas.md §16): config.json for
LlamaForCausalLM and the weights under Llama's names, which transformers loads with no custom code.
The architectures match block for block (pre-norm RMSNorm, SwiGLU, no biases, grouped-query
attention); the one difference is rotary's layout: diffformer rotates interleaved pairs (0, 1),
(2, 3), …, Llama rotates dimension i with i + d/2, so each head's query and key rows are permuted —
which leaves every q·k unchanged.
"""

import torch


def interleaved_to_half(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection, per head, from pair-interleaved (0, 1, 2, 3, …) to halves (0, 2, …, 1, 3, …)."""
    rows, width = weight.shape
    per_head = weight.view(heads, rows // heads, width)
    order = torch.cat([torch.arange(0, rows // heads, 2), torch.arange(1, rows // heads, 2)])
    return per_head[:, order].reshape(rows, width)


def half_to_interleaved(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of interleaved_to_half: Llama's rows (halves) back to diffformer's pairs (import)."""
    rows, width = weight.shape
    per_head = weight.view(heads, rows // heads, width)
    half = rows // heads // 2
    order = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    return per_head[:, order].reshape(rows, width)


def transformers_shape(config) -> dict:
    """A ModelConfig's shape under the names transformers uses (Llama's; the exported modelling code reuses them)."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "torch_dtype": "float32",
    }


def llama_config(config) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **transformers_shape(config),
        "head_dim": config.d_head,
        "hidden_act": "silu",
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},
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
