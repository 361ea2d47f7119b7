"""Differential attention V2 (Microsoft 2026, unilm `multihead_flashdiffv2.py`; docs/formulas.md §3).

2·n_heads query heads share n_kv_heads key/value heads of width d_head and go
through one ordinary causal SDPA call; output head h is
    out_h = attn[2h] − λ_h · attn[2h+1],   λ = sigmoid(lambda_proj(x)) per token and head.
The two query heads of a pair are adjacent, so they always fall into the same K/V
group (pairing by halves trains unstably). No per-head norm, no λ_init schedule.
"""

from typing import Literal

import torch
from torch import nn

from diffformer.model.attention.base import (
    PLAIN_CALL,
    Attention,
    AttentionCall,
    MapLayout,
    repeat_kv_groups,
)
from diffformer.model.attention.differential import LambdaWarmupConfig
from diffformer.model.capture import AttentionMaps, DifferentialParts, causal_logits
from diffformer.model.position import alibi_slopes


class DifferentialV2Config(LambdaWarmupConfig):
    kind: Literal["differential_v2"]

    def map_layout(self, model) -> MapLayout:
        return MapLayout(model.n_heads, 2, model.d_head, model.d_head)

    def map_alibi_slopes(self, model) -> torch.Tensor:
        """Query heads 2h and 2h+1 (output head h's two maps) share vanilla's slope of head h."""
        return alibi_slopes(model.n_heads).repeat_interleave(2)


class DifferentialV2Attention(Attention):
    config_class = DifferentialV2Config
    differential_hooks = True
    imports_pretrained = True

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        d_model, d_head = model.d_model, self.d_head
        self.q_proj = nn.Linear(d_model, 2 * self.n_heads * d_head, bias=model.bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * d_head, bias=model.bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * d_head, bias=model.bias)
        self.o_proj = nn.Linear(self.n_heads * d_head, d_model, bias=model.bias)
        self.lambda_proj = nn.Linear(d_model, self.n_heads, bias=False)
        self.set_alibi_slopes(model.attention.map_alibi_slopes(model))
        self.warmup = model.attention
        # λ's warm-up factor (at_step), a tensor so that a compiled model does not recompile as it changes.
        warming = model.attention.lambda_warmup_steps > 0
        self.register_buffer("lambda_ramp", torch.ones(()) if warming else None, persistent=False)

    def at_step(self, step: int) -> None:
        if self.lambda_ramp is not None:
            self.lambda_ramp.fill_(self.warmup.lambda_ramp(step))

    @classmethod
    def state_from_vanilla(cls, vanilla, model, layer_index, second_map):
        """Query heads (2h, 2h+1) = (pretrained q_h, 0 or q_h); keys, values, output projection kept; the λ
        gate's weights 0, so λ = ½ until trained (docs/formulas.md §27)."""
        state = {name: tensor for name, tensor in vanilla.items() if not name.startswith("out_proj")}
        for part in ("weight", "bias"):
            if f"out_proj.{part}" in vanilla:
                state[f"o_proj.{part}"] = vanilla[f"out_proj.{part}"]
            if f"q_proj.{part}" in vanilla:
                rows = vanilla[f"q_proj.{part}"]
                per_head = rows.reshape(model.n_heads, 1, model.d_head, -1)
                second = torch.zeros_like(per_head) if second_map == "zero" else per_head
                state[f"q_proj.{part}"] = torch.cat([per_head, second], dim=1).reshape(-1, *rows.shape[1:])
        state["lambda_proj.weight"] = torch.zeros(model.n_heads, model.d_model)
        return state

    @property
    def residual_projection(self) -> nn.Linear:
        return self.o_proj

    def forward(self, x: torch.Tensor, call: AttentionCall = PLAIN_CALL) -> torch.Tensor:
        q = self.project_heads(self.q_proj(x), 2 * self.n_heads, self.hook_q)  # (B, 2H, T, d)
        k = self.project_heads(self.k_proj(x), self.n_kv_heads, self.hook_k)
        v = self.project_heads(self.v_proj(x), self.n_kv_heads, self.hook_v)
        q, k = self.rotate(call, q, k)
        k, v = repeat_kv_groups(k, 2 * self.n_heads), repeat_kv_groups(v, 2 * self.n_heads)
        k, v = self.keys_and_values(k, v, call)  # (B, 2H, K, d)
        lam = torch.sigmoid(self.lambda_proj(x)).transpose(1, 2).unsqueeze(-1)  # (B, H, T, 1)
        lam = self.hook_lambda.through(lam if self.lambda_ramp is None else lam * self.lambda_ramp)

        def fused() -> torch.Tensor:
            attn = self.causal_attention(q, k, v, call)  # (B, 2H, T, d)
            return attn[:, 0::2] - lam * attn[:, 1::2]

        out = self.through_pattern_hooks(fused, v[:, 0::2], call, differential_v2_maps, q, k, lam, self.alibi_slopes)
        out = self.forced(out, v[:, 0::2], call)
        self.record_maps(call, differential_v2_maps, q, k, lam, self.alibi_slopes)
        return self.write_heads(out.to(x.dtype), call)

    def per_head_parameters(self):
        # Output head h reads with query heads 2h, 2h+1 (adjacent rows) and its own λ gate row.
        reading = [(self.q_proj.weight, 0, self.n_heads), (self.k_proj.weight, 0, self.n_kv_heads)]
        reading += [(self.v_proj.weight, 0, self.n_kv_heads), (self.lambda_proj.weight, 0, self.n_heads)]
        return reading, [(self.o_proj.weight, 1, self.n_heads)]

    def map_flops_per_token(self, context: int) -> int:
        # 2·n_heads query heads of width d_head, each with its own map reading V of width d_head.
        width = 2 * self.n_heads * self.d_head
        return 2 * context * width + 2 * context * width

    def initialise(self, matrix_std, residual_scale) -> None:
        # The λ gate keeps PyTorch's Linear default, as in the reference implementation;
        # only the projections follow the model's matrix rule.
        super().initialise(matrix_std, residual_scale)
        self.lambda_proj.reset_parameters()


def differential_v2_maps(q, k, lam, slopes, positions: torch.Tensor, masked_keys=None) -> AttentionMaps:
    """Maps at `positions`; q, k: (B, 2H, T, d) with the pair of head h at 2h, 2h+1; lam: (B, H, T, 1)."""
    logits = causal_logits(q[:, :, positions], k, positions, slopes, masked_keys)  # (B, 2H, P, T)
    probs = logits.softmax(-1)
    lam_at = lam[:, :, positions]  # (B, H, P, 1)
    return AttentionMaps(
        weights=probs[:, 0::2] - lam_at * probs[:, 1::2],
        logits={"logits1": logits[:, 0::2], "logits2": logits[:, 1::2]},
        query_positions=positions,
        differential=DifferentialParts(probs[:, 0::2], probs[:, 1::2], lam_at.squeeze(-1)),
    )
