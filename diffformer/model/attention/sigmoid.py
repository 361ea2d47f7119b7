"""Sigmoid attention (Ramapuram et al. 2024, arXiv 2409.04431; docs/formulas.md §17).

    A_ij = σ(S_ij + b) for j ≤ i, 0 for j > i;   out_i = Σ_j A_ij v_j

Each weight is its own sigmoid: rows are not normalised (they sum to anything in [0, i + 1]), so a key's
weight does not depend on the other keys. b is a constant, by default −log(max_seq_len) (the paper's
−log n, fixed at the model's longest training sequence): a constant keeps a prefix's outputs independent
of what follows it, so cached decoding equals a full pass. No fused kernel computes it: the explicit
maps run query block by query block (SingleMapAttention.attend), memory linear in T.
"""

import math
from typing import Literal

import torch
from pydantic import Field

from diffformer.model.attention.base import AttentionKindConfig, SingleMapAttention


class SigmoidConfig(AttentionKindConfig):
    kind: Literal["sigmoid"]
    bias: float | None = Field(None, description="b in σ(S + b); default −log(model.max_seq_len), the paper's −log n.")

    def resolved_bias(self, model) -> float:
        return -math.log(model.max_seq_len) if self.bias is None else self.bias

    def exported_options(self, model) -> dict:
        return {"bias": self.resolved_bias(model)}


class SigmoidAttention(SingleMapAttention):
    config_class = SigmoidConfig

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        self.bias = model.attention.resolved_bias(model)

    def map_weights(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(scores + self.bias)  # future keys: σ(−∞) = 0
