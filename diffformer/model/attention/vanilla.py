"""Vanilla causal multi-head softmax attention (docs/formulas.md §1)."""

from typing import Literal

import torch
from torch import nn

from diffformer.model.attention.base import (
    Attention,
    AttentionKindConfig,
    merge_heads,
    repeat_kv_groups,
    split_heads,
)
from diffformer.model.capture import AttentionMaps, causal_logits
from diffformer.model.position import alibi_slopes


class VanillaConfig(AttentionKindConfig):
    kind: Literal["vanilla"] = "vanilla"


class VanillaAttention(Attention):
    """softmax(Q Kᵀ/√d) V per head through SDPA's fused causal kernels."""

    config_class = VanillaConfig

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        d_model = model.d_model
        self.q_proj = nn.Linear(d_model, self.n_heads * self.d_head, bias=False)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=False)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=False)
        self.out_proj = nn.Linear(self.n_heads * self.d_head, d_model, bias=False)
        self.set_alibi_slopes(alibi_slopes(self.n_heads))

    @property
    def residual_projection(self) -> nn.Linear:
        return self.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_proj(x), self.n_heads)  # (B, H, T, d)
        k = split_heads(self.k_proj(x), self.n_kv_heads)  # (B, G, T, d)
        v = split_heads(self.v_proj(x), self.n_kv_heads)
        q, k = self.rotate(q, k)
        k, v = repeat_kv_groups(k, self.n_heads), repeat_kv_groups(v, self.n_heads)
        out = self.forced(self.causal_attention(q, k, v), v)
        self.record_maps(softmax_maps, q, k, self.alibi_slopes)
        return self.out_proj(merge_heads(out))


def softmax_maps(q: torch.Tensor, k: torch.Tensor, slopes, positions: torch.Tensor) -> AttentionMaps:
    """softmax(q·k/√d (+ ALiBi)) rows at `positions`; q, k: (B, H, T, d) -> weights (B, H, P, T)."""
    logits = causal_logits(q, k, positions, slopes)
    return AttentionMaps(logits.softmax(dim=-1), {"logits": logits}, positions)
