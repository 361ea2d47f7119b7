"""Vanilla causal multi-head softmax attention (docs/formulas.md §1)."""

from typing import Literal

import torch

from diffformer.model.attention.base import AttentionCall, AttentionKindConfig, SingleMapAttention
from diffformer.model.focus_scoring import FocusScorer


class VanillaConfig(AttentionKindConfig):
    kind: Literal["vanilla"] = "vanilla"


class VanillaAttention(SingleMapAttention):
    """softmax(Q Kᵀ/√d) V per head through SDPA's fused causal kernels."""

    config_class = VanillaConfig
    imports_pretrained = True

    @classmethod
    def state_from_vanilla(cls, vanilla, model, layer_index, second_map):
        return dict(vanilla)

    def map_weights(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=-1)

    def attend(self, q, k, v, call: AttentionCall) -> torch.Tensor:
        return self.causal_attention(q, k, v, call)


class SoftmaxScorer(FocusScorer):
    """The focus lab's map for vanilla attention: softmax(s) over the segments."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scores(features)[:, 0].softmax(-1)
