"""The decoder-only transformer: pre-norm blocks, SwiGLU MLP, pluggable attention.

tokens (B, T) -> embed (+ learned positions) -> n_layers × Block -> RMSNorm -> LM head -> logits (B, T, V)
Every attention kind uses the same blocks; only `block.attention` differs.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffformer.model.attention.base import AttentionCall
from diffformer.model.attention.registry import kind_entry
from diffformer.model.config import ModelConfig
from diffformer.model.decoding import DecodingCache
from diffformer.model.heads import make_heads_identical
from diffformer.model.hooks import HookPoint
from diffformer.model.instruments import Instruments
from diffformer.model.norm import RMSNorm
from diffformer.model.position import RotaryEmbedding


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)) (Shazeer 2020)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    @property
    def reading_projections(self) -> tuple[nn.Linear, ...]:
        """The projections out of the residual stream (the fan-in init; `down` writes into it)."""
        return self.gate, self.up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class GeluMLP(nn.Module):
    """down(gelu_tanh(up(x))), with biases when the model has them (GPT-2's MLP)."""

    def __init__(self, d_model: int, hidden: int, bias: bool):
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    @property
    def reading_projections(self) -> tuple[nn.Linear, ...]:
        return (self.up,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


def make_norm(config: ModelConfig) -> nn.Module:
    """The norm the config names, over d_model."""
    if config.norm == "layernorm":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps)
    return RMSNorm(config.d_model, config.norm_eps)


def make_mlp(config: ModelConfig) -> nn.Module:
    if config.mlp == "gelu":
        return GeluMLP(config.d_model, config.mlp_hidden, config.bias)
    return SwiGLU(config.d_model, config.mlp_hidden)


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer_index: int, rotary: RotaryEmbedding | None):
        super().__init__()
        self.attention_norm = make_norm(config)
        self.attention = kind_entry(config.attention.kind).module(config, layer_index, rotary)
        self.mlp_norm = make_norm(config)
        self.mlp = make_mlp(config)
        self.dropout = nn.Dropout(config.dropout)
        # Named hook points (model/hooks.py): the residual stream and what each sub-layer adds to it.
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        x = self.hook_resid_pre.through(x)
        x = self.hook_resid_mid.through(
            x + self.dropout(self.hook_attn_out.through(self.attention(self.attention_norm(x), call)))
        )
        return self.hook_resid_post.through(x + self.dropout(self.hook_mlp_out.through(self.mlp(self.mlp_norm(x)))))


class Transformer(nn.Module):
    """Decoder-only language model; `model(tokens)` maps LongTensor (B, T) to logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set to build a model")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = (
            nn.Embedding(config.max_seq_len, config.d_model) if config.position == "learned" else None
        )
        rotary = (
            RotaryEmbedding(config.d_head, config.max_seq_len, config.rope_theta) if config.position == "rope" else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.hook_embed = HookPoint()  # token (+ learned position) embeddings, before the first block
        self.blocks = nn.ModuleList(Block(config, i, rotary) for i in range(config.n_layers))
        self.final_norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.activation_checkpointing = False  # set by training (train.activation_checkpointing)
        self.instruments = Instruments()
        # An attention layout the task asks for (mask_keys); derived from the recipe, so not in checkpoints.
        self.register_buffer("masked_keys", None, persistent=False)
        self._initialise()

    def mask_keys(self, masked: torch.Tensor) -> None:
        """Hide keys beyond causality in every layer: masked (L, L) bool over absolute positions, True where
        query i may not see key j ≤ i (the masked copy task; docs/formulas.md §23). Sequences longer than L
        are then refused. Each position must still see itself."""
        if masked.dim() != 2 or masked.shape[0] != masked.shape[1] or masked.diagonal().any():
            raise ValueError("an attention layout is an (L, L) boolean mask that leaves every position its own key")
        self.masked_keys = masked.bool().to(self.embed.weight.device)

    def _initialise(self) -> None:
        """Normal weights; projections into the residual stream get an extra 1/√(2·n_layers) so the
        stream's variance does not grow with depth (GPT-2). Each attention kind initialises its own
        layer (`Attention.initialise`), so its special parameters (λ vectors, sinks, gates) keep
        the initialisation the kind chose.

        Default scale: 1/√(3·fan_in) for matrices and 1 for embeddings (a tied embedding starts
        at 1/√d_model so that initial logits stay O(1)). GPT-2's fixed 0.02 is this rule at
        d_model 768; at d_model 128 it leaves attention scores so small that 2-layer models sat
        on a plateau and never learned MQAR in our runs, while this scale learns it in ~200 steps.
        `init_std` sets one std for everything instead.
        """
        fixed, tied = self.config.init_std, self.config.tie_embeddings

        def matrix_std(fan_in: int) -> float:
            return fixed or (3 * fan_in) ** -0.5

        embedding_std = fixed or (self.config.d_model**-0.5 if tied else 1.0)
        nn.init.normal_(self.embed.weight, std=embedding_std)
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=fixed or 1.0)
        if not tied:
            nn.init.normal_(self.lm_head.weight, std=matrix_std(self.lm_head.in_features))
        depth_scale = math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            block.attention.initialise(matrix_std, depth_scale)
            if self.config.head_init != "random":
                make_heads_identical(block.attention, outputs_too=self.config.head_init == "identical")
            for projection in block.mlp.reading_projections:
                nn.init.normal_(projection.weight, std=matrix_std(projection.in_features))
            nn.init.normal_(block.mlp.down.weight, std=matrix_std(block.mlp.down.in_features) / depth_scale)
        for module in self.modules():  # biases (model.bias) start at 0, as in GPT-2
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, cache: DecodingCache | None = None) -> torch.Tensor:
        """Logits of every position; with a `cache`, `tokens` continue the sequence the cache holds
        (model/decoding.py) and the cache grows by them."""
        past = 0 if cache is None else cache.length
        end = past + tokens.shape[1]
        if self.masked_keys is not None and end > self.masked_keys.shape[0]:
            raise ValueError(
                f"sequence length {end} exceeds the {self.masked_keys.shape[0]} positions "
                "of this run's attention layout"
            )
        x = self.embed(tokens)
        if self.position_embedding is not None:
            if end > self.config.max_seq_len:
                raise ValueError(
                    f"sequence length {end} exceeds max_seq_len {self.config.max_seq_len}, "
                    "the longest position a learned position embedding knows"
                )
            x = x + self.position_embedding(torch.arange(past, end, device=tokens.device))
        x = self.dropout(self.hook_embed.through(x))
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for index, block in enumerate(self.blocks):
            call = self.attention_call(index, past, cache, recompute)
            # Non-reentrant checkpointing restores the RNG state, so dropout masks match on recomputation.
            x = checkpoint(block, x, call, use_reentrant=False) if recompute else block(x, call)
        if cache is not None:
            cache.length = end
        return self.lm_head(self.final_norm(x))

    def attention_call(self, index: int, past: int, cache: DecodingCache | None, recompute: bool) -> AttentionCall:
        """What layer `index` needs besides its input in this forward: positions, cache, probes' instruments."""
        instruments = self.instruments
        return AttentionCall(
            offset=past,
            cache=None if cache is None else cache.layer(index),
            capture=instruments.capture if index in instruments.capture_layers else None,
            forced_keys=instruments.forced_keys,
            recomputed=recompute,
            head_edit=instruments.head_edit,
            masked_keys=self.masked_keys,
        )

    def at_step(self, step: int) -> None:
        """Every layer is told the training step its next forwards belong to (λ warm-up); training calls it
        before each step and evaluation, loading with the checkpoint's step."""
        for block in self.blocks:
            block.attention.at_step(step)

    def decodes_with_cache(self) -> bool:
        """Whether incremental decoding (model/decoding.py) reproduces full passes: not for the uniform control
        (its rows are recomputed from the sequence), nor for a kind that cannot cache under this layout."""
        if self.config.uniform_attention:
            return False
        return self.masked_keys is None or all(block.attention.caches_under_layout for block in self.blocks)

    def attention_penalty(self) -> torch.Tensor | None:
        """The mean over layers of what their attention adds to the training loss after a training forward
        (differential's similarity penalty), or None when no layer adds anything."""
        terms = [block.attention.penalty() for block in self.blocks]
        terms = [term for term in terms if term is not None]
        return torch.stack(terms).sum() / len(self.blocks) if terms else None

    def fresh_copy(self) -> "Transformer":
        """A newly initialised model of the same shape and attention layout (a module to gather full weights into)."""
        fresh = Transformer(self.config)
        if self.masked_keys is not None:
            fresh.mask_keys(self.masked_keys.cpu())
        return fresh

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())
