"""The configuration of a diffformer model exported for Hugging Face transformers (trust_remote_code).

Shipped verbatim into every exported folder beside modeling_diffformer.py; it needs only transformers.
Names follow transformers' conventions where one exists (hidden_size, num_hidden_layers, …), so tools
that read them — lm-evaluation-harness reads max_position_embeddings — find them.
"""

from transformers import PretrainedConfig


class DiffformerConfig(PretrainedConfig):
    model_type = "diffformer"

    def __init__(
        self,
        vocab_size: int = 256,
        hidden_size: int = 256,
        intermediate_size: int = 704,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 1024,
        position: str = "rope",
        rms_norm_eps: float = 1e-5,
        attention_kind: str = "vanilla",
        attention_options: dict | None = None,
        alibi_slopes: list[float] | None = None,
        uniform_attention: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.position = position  # rope (interleaved pairs), alibi, learned or none
        self.rms_norm_eps = rms_norm_eps
        self.attention_kind = attention_kind  # which of modeling_diffformer.py's attention kinds
        # The kind's options as diffformer exported them, e.g. differential: lambda_init_per_layer (λ_init of
        # each layer); doubly_normalized: sink (a learned background query per head) and mix (m in S − m·C,
        # a number or "learned"); sigmoid: bias (b in σ(S + b)).
        self.attention_options = attention_options or {}
        # position alibi: the slope of every map, in the kind's numbering (heads; V2 query heads; V1 sub-heads).
        self.alibi_slopes = alibi_slopes
        self.uniform_attention = uniform_attention  # the control: every row uniform over visible keys
        kwargs.setdefault("tie_word_embeddings", False)  # the export writes the LM head out in full
        kwargs.setdefault("use_cache", False)  # no key/value cache: each step recomputes the sequence
        super().__init__(**kwargs)
