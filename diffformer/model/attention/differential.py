"""Differential attention V1 (Ye et al. 2024, arXiv 2410.05258; docs/formulas.md §2).

Sub-heads 2h and 2h+1 of width d_head form differential head h:
    head_h = RMSNorm((A1 − λ·A2) V_h) · (1 − λ_init),   V_h of width 2·d_head,
    λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init       (one scalar per layer).
Parameter names and shapes follow microsoft/unilm `multihead_diffattn.py`, so its
state dict loads here with strict=True; grouped-query attention follows the
flash layout (`multihead_flashdiff_2.py`), where each pair keeps distinct K1/K2.
"""

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from diffformer.model.attention.base import (
    PLAIN_CALL,
    Attention,
    AttentionCall,
    AttentionKindConfig,
    MapLayout,
    repeat_kv_groups,
)
from diffformer.model.capture import AttentionMaps, DifferentialParts, causal_logits
from diffformer.model.focus_scoring import FocusScorer
from diffformer.model.norm import RMSNorm
from diffformer.model.position import alibi_slopes
from diffformer.sections import Section


class ExpLambdaInit(Section):
    """λ_init(l) = 0.8 − 0.6·exp(−0.3·l), l counted from 0 (the paper's default)."""

    schedule: Literal["exp"] = "exp"

    def value_at(self, layer_index: int) -> float:
        return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


class ConstantLambdaInit(Section):
    """The same λ_init in every layer (the paper's ablations use 0.8 and 0.5)."""

    schedule: Literal["constant"]
    value: float = Field(0.8, ge=0.0, lt=1.0)

    def value_at(self, layer_index: int) -> float:
        return self.value


LambdaInit = Annotated[ExpLambdaInit | ConstantLambdaInit, Field(discriminator="schedule")]


class LambdaWarmupConfig(AttentionKindConfig):
    """The λ warm-up both differential kinds offer (docs/formulas.md §27)."""

    lambda_warmup_steps: int = Field(
        0,
        ge=0,
        description="Multiply λ by min(1, step/N) over the first N training steps (0: off), so a model converted "
        "from a pretrained one starts as its first maps alone and subtracts gradually.",
    )

    def lambda_ramp(self, step: int) -> float:
        """λ's factor after `step` completed training steps."""
        return 1.0 if not self.lambda_warmup_steps else min(1.0, step / self.lambda_warmup_steps)


class DifferentialConfig(LambdaWarmupConfig):
    kind: Literal["differential"]
    lambda_init: LambdaInit = Field(default_factory=ExpLambdaInit)
    sublayer_norm: bool = Field(
        True,
        description="head = RMSNorm((A1 − λ·A2)V)·(1 − λ_init) (the paper); false: head = (A1 − λ·A2)V, neither "
        "norm nor scale, as a converted pretrained model may start (docs/formulas.md §27).",
    )
    alibi_layout: Literal["per_map", "pair_on_head", "pair_count"] = Field(
        "per_map",
        description="With ALiBi, which slope each map gets (vanilla's slopes s_0…s_{H−1} for n_heads = H): "
        "per_map — sub-head 2p+s takes s_{2p+s}, vanilla's slope set (default); pair_on_head — both maps of "
        "pair p take s_{2p}, the steep half; pair_count — both take the p-th slope of H/2 heads (diffformer "
        "before 2026-12: no steep slope).",
    )
    similarity_penalty: float = Field(
        0.0,
        ge=0.0,
        description="Weight of a training penalty on how alike each pair's two maps are: the mean cosine "
        "between A1 and A2 rows over layers, pairs and queries (0 = off; builds the T×T maps while training).",
    )

    def map_layout(self, model) -> MapLayout:
        return MapLayout(model.n_heads // 2, 2, model.d_head, 2 * model.d_head)

    def map_alibi_slopes(self, model) -> torch.Tensor:
        """One slope per sub-head, in sub-head order (sub-head 2p+s is map s of pair p; docs/formulas.md §10)."""
        vanilla = alibi_slopes(model.n_heads)
        if self.alibi_layout == "per_map":
            return vanilla
        if self.alibi_layout == "pair_on_head":
            return vanilla[0::2].repeat_interleave(2)
        return alibi_slopes(model.n_heads // 2).repeat_interleave(2)

    def exported_options(self, model) -> dict:
        # The exported code reads each layer's λ_init rather than re-deriving the schedule.
        lambda_init = [self.lambda_init.value_at(layer) for layer in range(model.n_layers)]
        return {**super().exported_options(model), "lambda_init_per_layer": lambda_init}

    def export_refusal(self) -> str | None:
        if not self.sublayer_norm:
            return "the exported modelling code has differential attention's sub-layer norm, and this run has none"
        return None

    def check_model(self, model) -> None:
        if model.n_heads % 2:
            raise ValueError(f"differential attention pairs sub-heads, so n_heads must be even (got {model.n_heads})")
        if model.kv_heads % 2:
            raise ValueError(
                f"differential attention pairs key heads too, so n_kv_heads must be even (got {model.kv_heads})"
            )


class DifferentialAttention(Attention):
    config_class = DifferentialConfig
    differential_hooks = True
    imports_pretrained = True

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        d_model, d_head = model.d_model, self.d_head
        self.n_pairs = self.output_heads = self.n_heads // 2
        self.n_kv_pairs = self.n_kv_heads // 2
        self.q_proj = nn.Linear(d_model, self.n_heads * d_head, bias=model.bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * d_head, bias=model.bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * d_head, bias=model.bias)
        self.out_proj = nn.Linear(self.n_heads * d_head, d_model, bias=model.bias)
        self.lambda_init = model.attention.lambda_init.value_at(layer_index)
        self.similarity_penalty = model.attention.similarity_penalty
        self.pair_similarity: torch.Tensor | None = None  # set by a training forward when the penalty is on
        # λ's re-parameterisation vectors, float32 and N(0, 0.1²) as in the paper.
        self.lambda_q1 = nn.Parameter(torch.randn(d_head) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(d_head) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(d_head) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(d_head) * 0.1)
        # One gain shared by all heads; removing this norm costs ~0.06 loss in the paper.
        self.subln = RMSNorm(2 * d_head, eps=1e-5) if model.attention.sublayer_norm else None
        self.warmup = model.attention
        # λ's warm-up factor (at_step), a tensor so that a compiled model does not recompile as it changes.
        warming = model.attention.lambda_warmup_steps > 0
        self.register_buffer("lambda_ramp", torch.ones(()) if warming else None, persistent=False)
        self.alibi_layout = model.attention.alibi_layout
        by_sub_head = model.attention.map_alibi_slopes(model)  # sub-head 2p+s
        self.set_alibi_slopes(by_sub_head.view(self.n_pairs, 2).t().reshape(-1))  # map-major, like q_wide below

    @property
    def residual_projection(self) -> nn.Linear:
        return self.out_proj

    def per_head_parameters(self):
        # A head is a pair: sub-heads 2p and 2p+1 (adjacent rows) and the pair's V of width 2·d_head.
        reading = [(self.q_proj.weight, 0, self.n_pairs), (self.k_proj.weight, 0, self.n_kv_pairs)]
        reading.append((self.v_proj.weight, 0, self.n_kv_pairs))
        return reading, [(self.out_proj.weight, 1, self.n_pairs)]

    def map_flops_per_token(self, context: int) -> int:
        # Two maps per pair over sub-heads of width d_head (Q·Kᵀ: as wide as vanilla's), each map
        # reading its pair's V of width 2·d_head: twice vanilla's A·V.
        width = self.n_heads * self.d_head
        return 2 * context * width + 2 * context * (2 * width)

    def penalty(self) -> torch.Tensor | None:
        """similarity_penalty × this layer's mean A1/A2 row cosine from the last training forward (docs §13)."""
        similarity, self.pair_similarity = self.pair_similarity, None
        return None if similarity is None else self.similarity_penalty * similarity

    def at_step(self, step: int) -> None:
        if self.lambda_ramp is not None:
            self.lambda_ramp.fill_(self.warmup.lambda_ramp(step))

    @classmethod
    def state_from_vanilla(cls, vanilla, model, layer_index, second_map):
        """Pair p = pretrained sub-heads (2p, 2p+1): map 1 is pretrained head 2p, the pair reads both heads'
        values; sub-head 2p+1's queries 0 (zero: A2 uniform) or its q and k copied from 2p (mirror: A2 = A1);
        λ's vectors N(0, 0.1²) seeded by the layer (docs/formulas.md §27)."""
        if model.kv_heads != model.n_heads:
            raise ValueError(
                "a grouped-query model does not convert to differential (V1): its key/value groups are pairs of "
                "sub-heads, so pretrained head 2p would read another group's keys; use differential_v2"
            )
        state = dict(vanilla)
        for name in ("q_proj", "k_proj"):
            zero = name == "q_proj" and second_map == "zero"
            for part in ("weight", "bias"):
                if f"{name}.{part}" not in vanilla:
                    continue
                rows = vanilla[f"{name}.{part}"]
                pairs = rows.reshape(model.n_heads // 2, 2, model.d_head, -1).clone()
                pairs[:, 1] = 0 if zero else pairs[:, 0]
                state[f"{name}.{part}"] = pairs.reshape(rows.shape)
        generator = torch.Generator().manual_seed(layer_index)
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            state[name] = torch.randn(model.d_head, generator=generator) * 0.1
        if model.attention.sublayer_norm:
            state["subln.weight"] = torch.ones(2 * model.d_head)
        return state

    def lambda_value(self) -> torch.Tensor:
        """λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init, a float32 scalar (× the warm-up factor while it lasts)."""
        first = torch.exp(torch.dot(self.lambda_q1.float(), self.lambda_k1.float()))
        second = torch.exp(torch.dot(self.lambda_q2.float(), self.lambda_k2.float()))
        lam = first - second + self.lambda_init
        return lam if self.lambda_ramp is None else lam * self.lambda_ramp

    def forward(self, x: torch.Tensor, call: AttentionCall = PLAIN_CALL) -> torch.Tensor:
        batch, length, _ = x.shape
        P, G, d = self.n_pairs, self.n_kv_pairs, self.d_head
        q = self.project_heads(self.q_proj(x), self.n_heads, self.hook_q)  # (B, 2P, T, d), sub-head 2p+s
        k = self.project_heads(self.k_proj(x), self.n_kv_heads, self.hook_k)  # (B, 2G, T, d)
        q, k = self.rotate(call, q, k)
        v = self.project_heads(self.v_proj(x), G, self.hook_v)  # (B, G, T, 2d)
        # One SDPA call serves both maps: heads are regrouped "map-major" ([all first maps,
        # all second maps]) so GQA's grouping sends map s of pair p to key head s of its group.
        # Fused kernels need q/k as wide as V; zero-padding q and k to 2d leaves every q·k
        # unchanged (scale stays 1/√d), and is faster on CPU than splitting V into halves
        # (benchmarks/differential_layout.py). Writing into the padded buffer does the regroup.
        q_wide = _map_major_padded(q, P)  # (B, 2P, T, 2d)
        k_wide, v = self.keys_and_values(_map_major_padded(k, G), v, call)  # (B, 2G, K, 2d), (B, G, K, 2d)
        lam = self.hook_lambda.through(self.lambda_value())

        def fused() -> torch.Tensor:
            v_both = v.repeat(1, 2, 1, 1)  # (B, 2G, K, 2d): both maps read the same V
            attended = self.causal_attention(
                q_wide, repeat_kv_groups(k_wide, 2 * P), repeat_kv_groups(v_both, 2 * P), call, scale=d**-0.5
            )
            maps_out = attended.view(batch, 2, P, length, 2 * d)  # (B, map, pair, T, 2d)
            return maps_out[:, 0] - lam * maps_out[:, 1]

        pair_values = repeat_kv_groups(v, P)  # (B, P, K, 2d)
        diff = self.through_pattern_hooks(
            fused,
            pair_values,
            call,
            differential_maps,
            *(q_wide[..., :d], k_wide[..., :d], lam, self.alibi_slopes),
        )
        # Forcing makes the effective map A1 − λ·A2 one-hot: the pair's output is its value alone.
        diff = self.forced(diff, pair_values, call)
        heads = diff if self.subln is None else self.subln(diff) * (1 - self.lambda_init)
        if self.similarity_penalty and self.training:
            every_query = torch.arange(length, device=x.device)
            parts = differential_maps(
                q_wide[..., :d], k_wide[..., :d], lam, self.alibi_slopes, every_query, call.masked_keys
            )
            self.pair_similarity = F.cosine_similarity(parts.differential.a1, parts.differential.a2, dim=-1).mean()
        # Views only: the key groups are expanded inside the map function, so nothing is copied unless captured.
        self.record_maps(call, differential_maps, q_wide[..., :d], k_wide[..., :d], lam, self.alibi_slopes)
        return self.write_heads(heads.to(x.dtype), call)


def differential_maps(q, k, lam, slopes, positions: torch.Tensor, masked_keys=None) -> AttentionMaps:
    """A1, A2 and A1 − λ·A2 at `positions`; q: (B, 2P, T, d), k: (B, 2G, T, d) key groups, both map-major
    (all first maps, then all second)."""
    keys = repeat_kv_groups(k, q.shape[1])
    logits = causal_logits(q[:, :, positions], keys, positions, slopes, masked_keys)  # (B, 2P, P_q, T)
    logits1, logits2 = logits.chunk(2, dim=1)
    first, second = logits1.softmax(-1), logits2.softmax(-1)
    return AttentionMaps(
        weights=first - lam * second,
        logits={"logits1": logits1, "logits2": logits2},
        query_positions=positions,
        differential=DifferentialParts(first, second, lam.reshape(())),
    )


def _map_major_padded(heads: torch.Tensor, pairs: int) -> torch.Tensor:
    """(B, 2·pairs, T, d) with sub-head 2p+s  ->  (B, 2·pairs, T, 2d) with head s·pairs+p, zero-padded."""
    batch, _, length, d = heads.shape
    padded = heads.new_zeros(batch, 2, pairs, length, 2 * d)
    padded[..., :d] = heads.view(batch, pairs, 2, length, d).transpose(1, 2)
    return padded.view(batch, 2 * pairs, length, 2 * d)


class DifferentialScorer(FocusScorer):
    """The focus lab's map (docs/formulas.md §14): softmax(s₁) − λ·softmax(s₂), two queries of width d/2,
    λ re-parameterised as in V1 with λ_init at layer 0."""

    def __init__(self, config):
        super().__init__(config, queries=2)
        half = config.d_model // 2
        self.lambda_init = config.attention.lambda_init.value_at(0)
        self.lambda_vectors = nn.Parameter(torch.randn(4, half) * 0.1)  # λ_q1, λ_k1, λ_q2, λ_k2

    def lambda_value(self) -> torch.Tensor:
        q1, k1, q2, k2 = self.lambda_vectors
        return torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        first, second = self.scores(features).softmax(-1).unbind(1)
        return first - self.lambda_value() * second

    def distribution(self, weights: torch.Tensor, scores: torch.Tensor, signed_map: str) -> torch.Tensor:
        """The signed map w = A1 − λ·A2 as a distribution, by `focus.signed_map` (docs/formulas.md §14):
        positive_part  max(w, 0) / Σ max(w, 0)   (no gradient through segments where w < 0)
        absolute       |w| / Σ|w|                 (a subtracted segment counts as attended)
        softmax        softmax(s₁ − λ·s₂) = softmax(log A1 − λ·log A2)   (gradient through every segment)"""
        if signed_map == "softmax":
            first, second = scores.unbind(1)
            return (first - self.lambda_value() * second).softmax(-1)
        mass = weights.clamp_min(0) if signed_map == "positive_part" else weights.abs()
        return mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
