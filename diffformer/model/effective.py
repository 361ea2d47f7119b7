"""Effective settings: what shapes a run's results without being written in its recipe (docs/formulas.md §18).

A recipe names the kind, n_heads and d_model; the kind then decides the positional prior each map gets
(ALiBi's slopes, rotary's base), how heads split into maps and how wide they are, the values it derives
per layer (differential V1's λ_init) and where the parameters go. Comparisons are only as fair as these,
so every run folder records them (RUN/effective.json) and every comparison shows and compares them.
They are a pure function of the built model, so runs trained before the file existed get them too.
"""

from fractions import Fraction

from torch import nn

from diffformer.model.position import RotaryEmbedding

# Parameter groups by where a parameter lives; the first matching rule names its part.
PARAMETER_PARTS = (
    ("embeddings", ("embed.", "position_embedding.")),
    ("attention projections", ("q_proj.", "k_proj.", "v_proj.", "out_proj.", "o_proj.", "scorer.key.")),
    ("norms", ("norm.", "subln.")),
    ("attention (the kind's own)", ("attention.", "scorer.")),
    ("mlp", ("mlp.", "encoder.")),
    ("output head", ("lm_head.", "classifier.")),
)


def effective_settings(model: nn.Module) -> dict:
    """The derived settings of a built model (a Transformer, or the focus lab's model), as plain data."""
    config = model.config
    attention = config.attention
    settings = {
        "parameters": parameters_by_part(model),
        "layout": attention.map_layout(config).describe(),
        "attention_options": attention.exported_options(config),
    }
    if not hasattr(model, "blocks"):  # the focus lab: one learned query over segment features, no positions
        settings["positional_prior"] = "none (the focus lab scores segments, not positions)"
        return settings
    rotary = next((m for m in model.modules() if isinstance(m, RotaryEmbedding)), None)
    settings["positional_prior"] = positional_prior(config, rotary)
    if config.position == "alibi":
        settings["alibi_slopes_per_map"] = attention.map_alibi_slopes(config).tolist()
    return settings


def positional_prior(config, rotary: RotaryEmbedding | None) -> str:
    """One line: which position signal the maps get, with the numbers that set it."""
    if config.position == "alibi":
        slopes = sorted(set(config.attention.map_alibi_slopes(config).tolist()), reverse=True)
        return "ALiBi slopes " + ", ".join(str(Fraction(s).limit_denominator(1 << 20)) for s in slopes)
    if config.position == "rope":
        return f"rotary, base {rotary.base:g}, {config.d_head // 2} frequencies"
    if config.position == "learned":
        return f"learned absolute positions up to {config.max_seq_len}"
    return "none (causal mask only)"


def parameters_by_part(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per part (a tied embedding counts once, as embeddings), and their total."""
    parts = {name: 0 for name, _ in PARAMETER_PARTS}
    for name, parameter in model.named_parameters():
        part = next((part for part, prefixes in PARAMETER_PARTS if any(p in f"{name}." for p in prefixes)), "other")
        parts[part] = parts.get(part, 0) + parameter.numel()
    parts = {name: count for name, count in parts.items() if count}
    parts["total"] = sum(parts.values())
    return parts
