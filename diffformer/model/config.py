"""ModelConfig: the `model:` section of a recipe, validated."""

import math
from typing import Literal

from pydantic import Field, model_validator

from diffformer.model.attention.registry import AttentionConfig
from diffformer.model.attention.vanilla import VanillaConfig
from diffformer.sections import MAX_COUNT, MAX_TOKENS, MAX_WIDTH, Section


class ModelConfig(Section):
    """Shape and options of a decoder-only transformer; unknown keys are errors."""

    vocab_size: int | None = Field(
        None,
        gt=0,
        le=MAX_TOKENS,
        description="Token ids the model reads and predicts; in a recipe, defaults to the data's.",
    )
    d_model: int = Field(256, gt=0, le=MAX_WIDTH, description="Width of the residual stream.")
    n_layers: int = Field(4, gt=0, le=MAX_COUNT, description="Number of transformer blocks.")
    n_heads: int = Field(
        8, gt=0, le=MAX_COUNT, description="Query/key heads of width d_model/n_heads (differential pairs them)."
    )
    n_kv_heads: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="Key/value heads; fewer than n_heads gives grouped-query attention."
    )
    ffn_hidden: int | None = Field(
        None,
        gt=0,
        le=MAX_WIDTH * 4,
        description="MLP hidden width; default 8/3·d_model rounded up to a multiple of 64 (swiglu), 4·d_model (gelu).",
    )
    norm: Literal["rmsnorm", "layernorm"] = Field(
        "rmsnorm", description="The blocks' and the final norm: rmsnorm (Llama), layernorm with a bias (GPT-2)."
    )
    mlp: Literal["swiglu", "gelu"] = Field(
        "swiglu", description="swiglu: down(silu(gate·x) · up·x) (Llama); gelu: down(gelu_tanh(up·x)) (GPT-2)."
    )
    bias: bool = Field(
        False, description="Biases on the attention projections and the MLP (GPT-2 has them; Llama does not)."
    )
    rope_theta: float = Field(10000.0, gt=1.0, description="Rotary base θ (angle = t·θ^(−2m/d)); Llama 3 uses 500000.")
    max_seq_len: int = Field(
        1024, gt=0, le=MAX_TOKENS, description="Longest sequence for learned positions and caches."
    )
    position: Literal["rope", "none", "learned", "alibi"] = Field(
        "rope",
        description="Position encoding: rope (rotary), none, learned (absolute, up to max_seq_len), "
        "alibi (linear distance biases; extrapolates beyond the training length).",
    )
    tie_embeddings: bool = Field(False, description="Share the token embedding with the LM head.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on embeddings and residual branches.")
    norm_eps: float = Field(1e-5, gt=0.0, description="RMSNorm epsilon.")
    init_std: float | None = Field(
        None,
        gt=0.0,
        description="Std of every weight at init (0.02 = GPT-2). Default: 1/√(3·fan_in) per matrix and N(0, 1) "
        "embeddings, which equals GPT-2's 0.02 at d_model 768 and lets small models learn recall.",
    )
    head_init: Literal["random", "identical_qkv", "identical"] = Field(
        "random",
        description="random; identical_qkv: every head of a layer starts with head 0's query/key/value weights "
        "(output projection random); identical: the output projection's columns too (heads then stay identical "
        "without dropout).",
    )
    uniform_attention: bool = Field(
        False,
        description="Control: every attention row is uniform over the keys it can see (queries and keys go "
        "unused); values and everything else are learned. Measures what is learnable without attention.",
    )
    attention: AttentionConfig = Field(default_factory=VanillaConfig, description="Attention kind and options.")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def mlp_hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.mlp == "gelu":
            return 4 * self.d_model
        return 64 * math.ceil(8 * self.d_model / 3 / 64)

    def resolved(self) -> "ModelConfig":
        """The same model with the widths left to defaults written out (ffn_hidden, n_kv_heads), so two
        configs that build the same model compare equal."""
        return self.model_copy(update={"ffn_hidden": self.mlp_hidden, "n_kv_heads": self.kv_heads})

    @property
    def llama_architecture(self) -> bool:
        """RMSNorm, SwiGLU and no biases: the blocks of Llama (and of diffformer by default)."""
        return self.norm == "rmsnorm" and self.mlp == "swiglu" and not self.bias

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.kv_heads})")
        if self.position == "rope" and self.d_head % 2:
            raise ValueError(f"rope rotates pairs of dimensions, so d_model/n_heads must be even (got {self.d_head})")
        self.attention.check_model(self)
        return self
