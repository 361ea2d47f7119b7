"""A diffformer model for Hugging Face transformers (trust_remote_code): every attention kind it names
(IMPLEMENTED_KINDS), written plainly.

Shipped verbatim into every exported folder beside configuration_diffformer.py; it imports only torch and
transformers, so a folder on the hub loads without diffformer installed. Each attention map is built as an
explicit (T × T) matrix from its formula (the diffformer repository's docs/formulas.md §1–4, §10), which is
slower than diffformer's own fused code but easy to check against the papers: no fused kernels, no
key/value cache (generation recomputes the sequence at each step). Parameter names are diffformer's.

Layout shared by every kind: token embedding (+ learned positions) → blocks of
x + attention(RMSNorm(x)), x + SwiGLU(RMSNorm(x)) → RMSNorm → LM head.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_diffformer import DiffformerConfig


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        x32 = x.float()
        return (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rotate(x, base: float = 10000.0):
    """Rotary positions on (B, heads, T, d): pair (x[2m], x[2m+1]) at position t turns by t·base^(−2m/d)."""
    length, width = x.shape[-2], x.shape[-1]
    frequency = base ** (-torch.arange(0, width, 2, dtype=torch.float32, device=x.device) / width)
    angle = torch.arange(length, dtype=torch.float32, device=x.device)[:, None] * frequency
    even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
    turned = torch.stack([even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], -1)
    return turned.flatten(-2).type_as(x)


class Maps:
    """Scores and masks for one sequence length: q·kᵀ/√d plus ALiBi's −m·(i − j), and the causal mask."""

    def __init__(self, config: DiffformerConfig, length: int, device):
        self.alibi = config.position == "alibi"
        # ALiBi's slope of every map, in the kind's numbering of its maps, as diffformer trained them.
        self.slopes = config.alibi_slopes
        self.uniform = config.uniform_attention
        self.visible = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        self.distance = (torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)).float()

    def scores(self, q, k, slopes: list[float] | None):
        """q (B, h, T, d), k (B, h, T, d) -> (B, h, T, T) in float32, −inf on future keys; with ALiBi, map m
        adds −slopes[m]·(i − j)."""
        s = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if self.alibi:
            s = s - torch.tensor(slopes, device=s.device)[:, None, None] * self.distance.clamp_min(0)
        return s.masked_fill(~self.visible, float("-inf"))

    def uniform_rows(self):
        """The control's map: 1/(i + 1) on every key j ≤ i. It replaces a kind's effective map (for the
        differential kinds, A1 − λ·A2 as a whole)."""
        return self.visible.float() / self.visible.sum(-1, keepdim=True)

    def softmax(self, scores):
        return self.uniform_rows() if self.uniform else scores.softmax(-1)


def softmax_map(attention, scores, maps: Maps):
    """Vanilla: A_ij = softmax_{j ≤ i} S_ij."""
    return scores.softmax(-1)


def doubly_normalized_map(attention, scores, maps: Maps):
    """A_ij = softmax_{j ≤ i}(S_ij − m·C_ij), C_ij = log(Σ_{j ≤ i' ≤ i} exp S_i'j [+ exp b_h])."""
    column = scores.logcumsumexp(dim=-2)  # masked entries are −inf, so row i' < j adds nothing
    if attention.sink_logit is not None:
        column = torch.logaddexp(column, attention.sink_logit.float()[None, :, None, None])
    mix = attention.options["mix"]
    if attention.mix_logit is not None:
        mix = torch.sigmoid(attention.mix_logit.float())[:, None, None]
    logits = (scores - mix * column).masked_fill(~maps.visible, float("-inf"))
    return logits.softmax(-1)


def sigmoid_map(attention, scores, maps: Maps):
    """Sigmoid attention: A_ij = σ(S_ij + b) for j ≤ i (σ(−∞) = 0 on future keys), rows not normalised."""
    return torch.sigmoid(scores + attention.options["bias"])


# The kinds with one map per head this file implements: kind -> its map from the scores (B, h, T, T).
SINGLE_MAP_KINDS = {"vanilla": softmax_map, "doubly_normalized": doubly_normalized_map, "sigmoid": sigmoid_map}


def heads(x, count: int):
    """(B, T, count·w) -> (B, count, T, w)."""
    return x.view(x.shape[0], x.shape[1], count, -1).transpose(1, 2)


def joined(x):
    """(B, count, T, w) -> (B, T, count·w)."""
    return x.transpose(1, 2).flatten(2)


class SingleMapAttention(nn.Module):
    """One map per head over its key/value group (SINGLE_MAP_KINDS): out = A·V per head, mixed by out_proj."""

    def __init__(self, config: DiffformerConfig):
        super().__init__()
        self.config, self.d_head = config, config.hidden_size // config.num_attention_heads
        self.heads, self.groups = config.num_attention_heads, config.num_key_value_heads
        self.options = config.attention_options
        self.map = SINGLE_MAP_KINDS[config.attention_kind]
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.d_head, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.groups * self.d_head, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.groups * self.d_head, bias=False)
        self.out_proj = nn.Linear(self.heads * self.d_head, config.hidden_size, bias=False)
        if config.attention_kind == "doubly_normalized":
            self.sink_logit = nn.Parameter(torch.zeros(self.heads)) if self.options["sink"] else None
            self.mix_logit = nn.Parameter(torch.zeros(self.heads)) if self.options["mix"] == "learned" else None

    def forward(self, x, maps: Maps):
        per_group = self.heads // self.groups
        q = heads(self.q_proj(x), self.heads)
        k = heads(self.k_proj(x), self.groups).repeat_interleave(per_group, 1)
        v = heads(self.v_proj(x), self.groups).repeat_interleave(per_group, 1)
        if self.config.position == "rope":
            q, k = rotate(q), rotate(k)
        scores = maps.scores(q, k, maps.slopes)
        weights = maps.uniform_rows() if maps.uniform else self.map(self, scores, maps)
        return self.out_proj(joined(weights.to(v.dtype) @ v))


class DifferentialAttention(nn.Module):
    """Diff Transformer V1 (Ye et al. 2024): pair p = query sub-heads 2p, 2p+1 against key sub-heads 2g, 2g+1
    of its group g and the group's value of width 2d; head_p = RMSNorm(A1·V − λ·A2·V)·(1 − λ_init),
    λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init."""

    def __init__(self, config: DiffformerConfig, layer: int):
        super().__init__()
        self.config, self.d_head = config, config.hidden_size // config.num_attention_heads
        self.pairs, self.kv_pairs = config.num_attention_heads // 2, config.num_key_value_heads // 2
        width = config.hidden_size
        self.q_proj = nn.Linear(width, 2 * self.pairs * self.d_head, bias=False)
        self.k_proj = nn.Linear(width, 2 * self.kv_pairs * self.d_head, bias=False)
        self.v_proj = nn.Linear(width, 2 * self.kv_pairs * self.d_head, bias=False)
        self.out_proj = nn.Linear(2 * self.pairs * self.d_head, width, bias=False)
        self.lambda_init = config.attention_options["lambda_init_per_layer"][layer]
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.zeros(self.d_head)) for _ in range(4)
        )
        self.subln = RMSNorm(2 * self.d_head, 1e-5)

    def forward(self, x, maps: Maps):
        batch, length, _ = x.shape
        per_group = self.pairs // self.kv_pairs
        q = heads(self.q_proj(x), 2 * self.pairs)  # sub-head 2p + s
        k = heads(self.k_proj(x), 2 * self.kv_pairs)
        if self.config.position == "rope":
            q, k = rotate(q), rotate(k)
        q = q.view(batch, self.pairs, 2, length, self.d_head)
        k = k.view(batch, self.kv_pairs, 2, length, self.d_head).repeat_interleave(per_group, 1)
        v = heads(self.v_proj(x), self.kv_pairs).repeat_interleave(per_group, 1)  # (B, pairs, T, 2d)
        by_sub_head = maps.slopes  # map s of pair p is sub-head 2p + s
        a1 = maps.softmax(maps.scores(q[:, :, 0], k[:, :, 0], by_sub_head and by_sub_head[0::2]))
        a2 = maps.softmax(maps.scores(q[:, :, 1], k[:, :, 1], by_sub_head and by_sub_head[1::2]))
        lam = (
            torch.exp(torch.dot(self.lambda_q1.float(), self.lambda_k1.float()))
            - torch.exp(torch.dot(self.lambda_q2.float(), self.lambda_k2.float()))
            + self.lambda_init
        )
        difference = a1 @ v.float() - lam * (a2 @ v.float())
        if maps.uniform:
            difference = maps.uniform_rows() @ v.float()
        return self.out_proj(joined(self.subln(difference) * (1 - self.lambda_init)).to(x.dtype))


class DifferentialV2Attention(nn.Module):
    """Differential V2: 2·H query heads over G key/value groups (query head j reads group j // (2H/G));
    out_h = A[2h]·V − sigmoid(x·W_λ)_h · A[2h+1]·V."""

    def __init__(self, config: DiffformerConfig):
        super().__init__()
        self.config, self.d_head = config, config.hidden_size // config.num_attention_heads
        self.heads, self.groups = config.num_attention_heads, config.num_key_value_heads
        width = config.hidden_size
        self.q_proj = nn.Linear(width, 2 * self.heads * self.d_head, bias=False)
        self.k_proj = nn.Linear(width, self.groups * self.d_head, bias=False)
        self.v_proj = nn.Linear(width, self.groups * self.d_head, bias=False)
        self.o_proj = nn.Linear(self.heads * self.d_head, width, bias=False)
        self.lambda_proj = nn.Linear(width, self.heads, bias=False)

    def forward(self, x, maps: Maps):
        per_group = 2 * self.heads // self.groups
        q = heads(self.q_proj(x), 2 * self.heads)
        k = heads(self.k_proj(x), self.groups).repeat_interleave(per_group, 1)
        v = heads(self.v_proj(x), self.groups).repeat_interleave(per_group, 1)
        if self.config.position == "rope":
            q, k = rotate(q), rotate(k)
        attended = maps.softmax(maps.scores(q, k, maps.slopes)) @ v.float()  # (B, 2H, T, d), query head order
        lam = torch.sigmoid(self.lambda_proj(x).float()).transpose(1, 2)[..., None]  # (B, H, T, 1)
        out = attended[:, 0::2] - lam * attended[:, 1::2]
        if maps.uniform:
            out = maps.uniform_rows() @ v[:, 0::2].float()
        return self.o_proj(joined(out).to(x.dtype))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def attention_for(config: DiffformerConfig, layer: int) -> nn.Module:
    """The attention of layer `layer`; a kind this file was not written for is an error, never a fallback."""
    if config.attention_kind == "differential":
        return DifferentialAttention(config, layer)
    if config.attention_kind == "differential_v2":
        return DifferentialV2Attention(config)
    if config.attention_kind in SINGLE_MAP_KINDS:
        return SingleMapAttention(config)
    raise ValueError(f"this modelling code implements {', '.join(IMPLEMENTED_KINDS)}, not {config.attention_kind!r}")


IMPLEMENTED_KINDS = ("differential", "differential_v2", *SINGLE_MAP_KINDS)


class Block(nn.Module):
    def __init__(self, config: DiffformerConfig, layer: int):
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = attention_for(config, layer)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x, maps: Maps):
        x = x + self.attention(self.attention_norm(x), maps)
        return x + self.mlp(self.mlp_norm(x))


class DiffformerPreTrainedModel(PreTrainedModel):
    config_class = DiffformerConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        # Only weights missing from a checkpoint get here; an exported folder has them all.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)


class DiffformerModel(DiffformerPreTrainedModel):
    def __init__(self, config: DiffformerConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position == "learned":
            self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.num_hidden_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids):
        length = input_ids.shape[1]
        x = self.embed(input_ids)
        if self.config.position == "learned":
            if length > self.config.max_position_embeddings:
                raise ValueError(
                    f"sequence length {length} exceeds max_position_embeddings "
                    f"({self.config.max_position_embeddings}), the longest position this model learned"
                )
            x = x + self.position_embedding(torch.arange(length, device=input_ids.device))
        maps = Maps(self.config, length, input_ids.device)
        for block in self.blocks:
            x = block(x, maps)
        return self.final_norm(x)


class DiffformerForCausalLM(DiffformerPreTrainedModel, GenerationMixin):
    def __init__(self, config: DiffformerConfig):
        super().__init__(config)
        self.model = DiffformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, labels=None, **unused):
        """Logits (B, T, vocab). Padding may only follow the tokens (right padding): causal attention keeps
        real positions from seeing it. Left padding would shift positions, so it is refused."""
        if attention_mask is not None and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("diffformer models take right padding only (tokens first); use batch size 1 or pad right")
        logits = self.lm_head(self.model(input_ids))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **unused):
        return {"input_ids": input_ids, "attention_mask": attention_mask}
