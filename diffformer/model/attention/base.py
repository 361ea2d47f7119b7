"""What every attention kind shares: its contract with the transformer block.

A kind is a subclass of `Attention` plus a pydantic config class with a literal
`kind` field; registering both in `registry.py` is all it takes to add one.
The contract:
- forward: (B, T, d_model) -> (B, T, d_model), causal, applying rotary itself;
- maps: one pure function of the layer's q, k (and the kind's own extras) and the
  query positions, returning AttentionMaps, passed to `record_maps` in forward;
- initialise: the kind owns the initialisation of its parameters (the default
  covers plain projection matrices);
- forcing: forward passes what its map produced, per output head, through `forced`
  with the values those heads read, so a probe can replace chosen rows by one-hot
  attention (model/forcing.py).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from diffformer.model.capture import AttentionCapture, AttentionMaps
from diffformer.model.decoding import LayerCache
from diffformer.model.position import RotaryEmbedding, alibi_bias
from diffformer.sections import Section

if TYPE_CHECKING:
    from diffformer.model.config import ModelConfig


# (tensor, dim, heads): the tensor is `heads` equal slices along `dim`, one per head or group.
HeadSlices = tuple[torch.Tensor, int, int]


class AttentionKindConfig(Section):
    """Base for the `model.attention` section of one kind; unknown keys are errors."""

    def check_model(self, model: "ModelConfig") -> None:
        """Raise ValueError if this kind cannot be built with `model`'s shape."""


class Attention(nn.Module):
    """Causal self-attention: (B, T, d_model) -> (B, T, d_model).

    Applies the model's rotary position encoding itself (when the model uses it) and
    reports explicit maps to `recorder` when a capture is active.
    """

    config_class: ClassVar[type[AttentionKindConfig]]

    def __init__(self, model: "ModelConfig", layer_index: int, rotary: RotaryEmbedding | None):
        super().__init__()
        self.n_heads = model.n_heads
        self.n_kv_heads = model.kv_heads
        self.d_head = model.d_model // model.n_heads
        self.layer_index = layer_index
        self.rotary = rotary
        self.recorder: AttentionCapture | None = None
        self.uses_alibi = model.position == "alibi"
        # Set by the model while its blocks are activation-checkpointed (recomputed in backward).
        self.recomputed = False
        # The uniform-attention control: the kind's map is computed (its parameters exist) but not applied.
        self.uniform = model.uniform_attention
        self.output_heads = self.n_heads  # heads whose outputs are mixed (differential V1: its pairs)
        # Set by the model during a cached (incremental) forward pass: model/decoding.py.
        self.cache: LayerCache | None = None
        # Set by model/forcing.py only: (B, T) key each query row must attend to alone, −1 = as computed.
        self.forced_keys: torch.Tensor | None = None
        # Non-persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("alibi_slopes", None, persistent=False)

    def set_alibi_slopes(self, slopes: torch.Tensor) -> None:
        """With position `alibi`: the slope of each query head as this kind lays its heads out for SDPA."""
        if self.uses_alibi:
            self.alibi_slopes = slopes

    def position_bias(self, query_positions: torch.Tensor, keys: int) -> torch.Tensor | None:
        """ALiBi's bias for every query head (heads, P, keys), or None without ALiBi."""
        return None if self.alibi_slopes is None else alibi_bias(self.alibi_slopes, query_positions, keys)

    def causal_attention(self, q, k, v, scale: float | None = None) -> torch.Tensor:
        """Causal SDPA of (B, heads, T, d) tensors, with ALiBi's bias when the model uses it.

        During a cached forward, q, k, v are the new positions': k and v join the cache and the new
        queries attend to every cached key up to their own position."""
        if self.cache is not None:
            past = self.cache.length
            k, v = self.cache.extend(k, v)
            queries = torch.arange(past, past + q.shape[-2], device=q.device)
            seen = torch.arange(k.shape[-2], device=q.device)[None, :] <= queries[:, None]
            bias = self.position_bias(queries, k.shape[-2])
            mask = torch.zeros_like(seen, dtype=torch.float32) if bias is None else bias
            mask = mask.masked_fill(~seen, float("-inf")).to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        length = q.shape[-2]
        bias = self.position_bias(torch.arange(length, device=q.device), length)
        if bias is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        mask = bias.masked_fill(future, float("-inf")).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    @property
    def residual_projection(self) -> nn.Linear:
        """The projection that writes into the residual stream (gets the scaled-down init)."""
        raise NotImplementedError

    def per_head_parameters(self) -> tuple[list[HeadSlices], list[HeadSlices]]:
        """How this kind's weights split into heads: (what the heads read with, what they write with).

        Each entry (tensor, dim, heads) says the tensor is `heads` equal slices along `dim`, one per
        head (or key/value group), numbered as the kind numbers its heads. Default: q/k/v rows per
        head or group; the residual projection's columns per head.
        """
        reading = [(self.q_proj.weight, 0, self.n_heads), (self.k_proj.weight, 0, self.n_kv_heads)]
        reading.append((self.v_proj.weight, 0, self.n_kv_heads))
        return reading, [(self.residual_projection.weight, 1, self.n_heads)]

    def map_flops_per_token(self, context: int) -> int:
        """Forward matmul FLOPs per query token of the attention maps and what they read (docs/formulas.md §11):
        Q·Kᵀ and A·V over `context` keys; the projections are counted as linear layers.

        Default, one map per head: 2·context·(heads·d_head) for Q·Kᵀ and as much again for A·V.
        """
        width = self.n_heads * self.d_head
        return 2 * context * width + 2 * context * width

    def initialise(self, matrix_std: Callable[[int], float], residual_scale: float) -> None:
        """Every matrix ~ N(0, matrix_std(fan_in)²); the residual projection's std is further ÷ residual_scale.

        Kinds with parameters of their own (λ vectors, sinks, gates) override this or set
        those parameters in __init__, which this leaves alone.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=matrix_std(module.in_features))
        projection = self.residual_projection
        nn.init.normal_(projection.weight, std=matrix_std(projection.in_features) / residual_scale)

    def record_maps(self, maps_of: Callable[..., AttentionMaps], q: torch.Tensor, *inputs) -> None:
        """If a capture is active, record maps_of(q, *inputs, positions=the requested query rows).

        q: (B, heads, T, d_head); `inputs` are whatever else the kind's map function needs.
        """
        if self.recorder is not None and self.cache is None:  # maps read whole sequences, not cached steps
            positions = self.recorder.positions(q.shape[-2], q.device)
            if self.uniform:
                maps = uniform_maps(q.shape[0], self.output_heads, positions, q.shape[-2])
            else:
                maps = maps_of(q, *inputs, positions=positions)
            self.recorder.record(self.layer_index, maps)

    def penalty(self) -> torch.Tensor | None:
        """A term this layer adds to the training loss, from its last training forward (None: nothing)."""
        return None

    def forced(self, attended: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """`attended` (B, heads, T, w), except rows whose `forced_keys` entry s ≥ 0 become values[:, :, s]:
        what one-hot attention on s would give. values: (B, heads, T, w), the values each output head reads.
        Under the uniform-attention control every row first becomes the mean of the values it can see."""
        if self.uniform:
            seen = torch.arange(1, values.shape[2] + 1, device=values.device, dtype=torch.float32)
            attended = (values.float().cumsum(2) / seen[:, None]).to(attended.dtype)
        keys = self.forced_keys
        if keys is None:
            return attended
        index = keys.clamp_min(0)[:, None, :, None].expand(-1, values.shape[1], -1, values.shape[-1])
        one_hot_rows = values.gather(2, index).to(attended.dtype)
        return torch.where((keys >= 0)[:, None, :, None], one_hot_rows, attended)

    def rotate(self, *heads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Apply rotary position encoding to (B, heads, T, d_head) tensors, if the model uses it."""
        if self.rotary is None:
            return heads
        offset = 0 if self.cache is None else self.cache.length
        return tuple(self.rotary(h, offset) for h in heads)


def uniform_maps(batch: int, heads: int, positions: torch.Tensor, keys: int) -> AttentionMaps:
    """The uniform-attention control's rows: 1/(i+1) on each key j ≤ i for the query at position i."""
    visible = torch.arange(keys, device=positions.device)[None, :] <= positions[:, None]  # (P, T)
    weights = visible.float() / visible.sum(-1, keepdim=True)
    return AttentionMaps(weights.expand(batch, heads, -1, -1), {}, positions)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, n_heads·d) -> (B, n_heads, T, d)."""
    batch, length, _ = x.shape
    return x.view(batch, length, n_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, T, heads·d)."""
    batch, heads, length, width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * width)


def repeat_kv_groups(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Expand grouped key/value heads (B, G, T, d) to (B, n_heads, T, d); head h uses group h // (n_heads/G)."""
    groups = x.shape[1]
    return x if groups == n_heads else x.repeat_interleave(n_heads // groups, dim=1)
