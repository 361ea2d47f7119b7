"""Sigmoid attention (Ramapuram et al. 2024, arXiv 2409.04431; docs/formulas.md §17).

    A_ij = σ(S_ij + b) for j ≤ i, 0 for j > i;   out_i = Σ_j A_ij v_j

Each weight is its own sigmoid: rows are not normalised (they sum to anything in [0, i + 1]), so a key's
weight does not depend on the other keys. b is a constant, by default −log(max_seq_len) (the paper's
−log n, fixed at the model's longest training sequence): a constant keeps a prefix's outputs independent
of what follows it, so cached decoding equals a full pass. No fused kernel computes it on CPU: training
runs query block by query block with a hand-written backward (BlockedSigmoidAttention: it keeps q, k, v
only and recomputes each block's weights once, so memory stays linear in T and backward costs one
recomputed score matmul instead of a whole recomputed forward); elsewhere the explicit maps of
SingleMapAttention.attend.
"""

import functools
import math
from typing import Literal

import torch
from pydantic import Field

from diffformer.model.attention.base import AttentionCall, AttentionKindConfig, SingleMapAttention
from diffformer.model.position import alibi_bias_for_range

# False: train through the generic recomputed blocks instead (benchmarks/sigmoid_backward.py compares the two).
HAND_WRITTEN_BACKWARD = True


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

    def attend(self, q, k, v, call: AttentionCall) -> torch.Tensor:
        plain = call.offset == 0 and call.masked_keys is None and q.shape[-2] == k.shape[-2]
        if HAND_WRITTEN_BACKWARD and torch.is_grad_enabled() and plain and not torch.compiler.is_compiling():
            return BlockedSigmoidAttention.apply(q, k, v, self.bias, self.query_block, self.alibi_slopes)
        return super().attend(q, k, v, call)


def _block_weights(q_rows, k_prefix, first_position: int, bias: float, slopes) -> torch.Tensor:
    """σ(S + b) of a query block (B, H, P, d), already scaled by 1/√d and float32, against the float32 keys it
    can see (B, H, first+P, d); exactly 0 after each row's query. In place where it can: this runs twice
    per block per training step."""
    rows = q_rows.shape[-2]
    weights = q_rows @ k_prefix.transpose(-1, -2)
    if slopes is not None:
        weights += alibi_bias_for_range(slopes, first_position, rows, k_prefix.shape[-2])
    weights.add_(bias).sigmoid_()
    weights[..., first_position:].masked_fill_(_future_keys(rows, weights.device), 0.0)  # the diagonal block
    return weights


@functools.lru_cache(maxsize=8)
def _future_keys(rows: int, device) -> torch.Tensor:
    return torch.ones(rows, rows, dtype=torch.bool, device=device).triu(1)


class BlockedSigmoidAttention(torch.autograd.Function):
    """out = σ(QKᵀ/√d + b, causal)·V by query blocks; backward per block (docs/formulas.md §17):
    dV += Aᵀ·dO,  dA = dO·Vᵀ,  dS = dA ⊙ A ⊙ (1 − A),  dQ = dS·K/√d,  dK += dSᵀ·Q/√d
    (masked entries have A = 0, so they pass no gradient). Scores are computed in float32 as the explicit path
    computes them."""

    @staticmethod
    def forward(ctx, q, k, v, bias: float, block: int, slopes):
        with torch.autocast(q.device.type, enabled=False):  # float32 throughout, as the explicit path computes
            return BlockedSigmoidAttention._forward(ctx, q, k, v, bias, block, slopes)

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(grad_out.device.type, enabled=False):
            return BlockedSigmoidAttention._backward(ctx, grad_out)

    @staticmethod
    def _forward(ctx, q, k, v, bias: float, block: int, slopes):
        length, scale = q.shape[-2], q.shape[-1] ** -0.5
        scaled_q, keys, values = q.float() * scale, k.float(), v.float()
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=torch.float32, device=v.device)
        for start in range(0, length, block):
            end = min(start + block, length)
            weights = _block_weights(scaled_q[:, :, start:end], keys[:, :, :end], start, bias, slopes)
            torch.matmul(weights, values[:, :, :end], out=out[:, :, start:end])
        ctx.save_for_backward(q, k, v)
        ctx.bias, ctx.block, ctx.slopes = bias, block, slopes
        return out.to(v.dtype)

    @staticmethod
    def _backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        scale, length = q.shape[-1] ** -0.5, q.shape[-2]
        scaled_q, keys, values = q.float() * scale, k.float(), v.float()
        grad_q = torch.empty_like(scaled_q)
        grad_k = torch.zeros_like(keys)
        grad_v = torch.zeros_like(values)
        grad_out = grad_out.float()
        for start in range(0, length, ctx.block):
            end = min(start + ctx.block, length)
            weights = _block_weights(scaled_q[:, :, start:end], keys[:, :, :end], start, ctx.bias, ctx.slopes)
            grad_rows = grad_out[:, :, start:end]
            grad_v[:, :, :end] += weights.transpose(-1, -2) @ grad_rows
            grad_scores = torch.ops.aten.sigmoid_backward(grad_rows @ values[:, :, :end].transpose(-1, -2), weights)
            torch.matmul(grad_scores, keys[:, :, :end], out=grad_q[:, :, start:end])
            grad_k[:, :, :end] += grad_scores.transpose(-1, -2) @ scaled_q[:, :, start:end]
        grad_q.mul_(scale)  # dS·K/√d; dK already has the 1/√d through the scaled queries
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None, None
