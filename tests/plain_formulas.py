"""Plain, obviously-correct transcriptions of each attention formula (docs/formulas.md §1–4, §17).

Written for clarity, not speed: explicit per-head loops, explicit masks, float64,
rotary as complex multiplication. The fast modules in diffformer must agree with these.

PLAIN_FORMULAS maps each registered kind to its transcription: f(attention layer, x (B, T, d_model),
masked=None) -> (output (B, T, d_model), maps): per sequence, per output head, that head's (T, T) map, or for
the differential kinds (A1, A2, λ) with λ a scalar (V1) or a (T, 1) column of per-token values (V2).
`masked`: an attention layout, (T, T) bool, True where query i may not see key j ≤ i (docs/formulas.md §23).
"""

import math

import pytest
import torch


def rotary_complex(x: torch.Tensor) -> torch.Tensor:
    """Rotate (T, d) by position: pair (x[2m], x[2m+1]) is the complex number x[2m] + i·x[2m+1],
    multiplied by exp(i·t·10000^(−2m/d))."""
    length, width = x.shape
    pairs = torch.complex(x[:, 0::2], x[:, 1::2])
    frequencies = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * frequencies[None, :]
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.stack([rotated.real, rotated.imag], dim=-1).reshape(length, width)


def alibi_slope(heads: int, h: int) -> float:
    """ALiBi's slope of head h (0-based) of `heads` (Press et al. 2022): with p the largest power of two
    ≤ heads, heads h < p get 2^(−8(h+1)/p) and the rest the odd-numbered slopes of 2p heads."""
    p = 1
    while 2 * p <= heads:
        p *= 2
    if h < p:
        return 2.0 ** (-8.0 * (h + 1) / p)
    return 2.0 ** (-8.0 * (2 * (h - p) + 1) / (2 * p))


def alibi(attention, heads: int, h: int, length: int) -> torch.Tensor:
    """The (T, T) bias −m·(i − j) added to head h's scores (m: ALiBi's slope of head h of `heads`), or
    zeros when the model does not use ALiBi."""
    return distance_bias(attention, alibi_slope(heads, h), length)


def distance_bias(attention, slope: float, length: int) -> torch.Tensor:
    if not attention.uses_alibi:
        return torch.zeros(length, length, dtype=torch.float64)
    i = torch.arange(length, dtype=torch.float64)[:, None]
    j = torch.arange(length, dtype=torch.float64)[None, :]
    return -slope * (i - j).clamp_min(0)


def differential_slope(attention, pair: int, sub_map: int) -> float:
    """V1's ALiBi slope of map `sub_map` of `pair`, by its `alibi_layout` (H = n_heads sub-heads, P = H/2):
    per_map: vanilla's slope of head 2p+s; pair_on_head: vanilla's slope of head 2p for both maps;
    pair_count: the p-th slope of P heads for both."""
    heads = attention.n_heads
    if attention.alibi_layout == "per_map":
        return alibi_slope(heads, 2 * pair + sub_map)
    if attention.alibi_layout == "pair_on_head":
        return alibi_slope(heads, 2 * pair)
    return alibi_slope(heads // 2, pair)


def visible(length: int, masked: torch.Tensor | None) -> torch.Tensor:
    """(T, T) bool: query i sees key j when j ≤ i and the layout does not mask it."""
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return causal if masked is None else causal & ~masked


def causal_softmax(scores: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
    """Row softmax of (T, T) scores over the keys each query sees (j ≤ i, not masked)."""
    return scores.masked_fill(~visible(scores.shape[0], masked), float("-inf")).softmax(dim=-1)


def _head(weight: torch.Tensor, index: int, width: int) -> torch.Tensor:
    """Rows index·width … (index+1)·width of a projection weight (out, in), float64."""
    return weight.double()[index * width : (index + 1) * width]


def _qk(attention, x, q_head, k_head):
    """Query and key of one sub-head for one sequence x (T, d_model), rotated when the model uses rope."""
    d = attention.d_head
    q = x @ _head(attention.q_proj.weight, q_head, d).T
    k = x @ _head(attention.k_proj.weight, k_head, d).T
    if attention.rotary is not None:
        q, k = rotary_complex(q), rotary_complex(k)
    return q, k


def _single_map_kind(attention, x: torch.Tensor, head_map) -> tuple[torch.Tensor, list]:
    """Output (B, T, d_model) and per-sequence lists of each head's (T, T) map, for kinds where
    head h attends with one map, head_map(h, scores), over its group's values (the layout is head_map's)."""
    d, groups = attention.d_head, attention.n_heads // attention.n_kv_heads
    outputs, maps = [], []
    for seq in x.double():
        heads, seq_maps = [], []
        for h in range(attention.n_heads):
            q, k = _qk(attention, seq, h, h // groups)
            v = seq @ _head(attention.v_proj.weight, h // groups, d).T
            a = head_map(h, q @ k.T / math.sqrt(d) + alibi(attention, attention.n_heads, h, len(seq)))
            heads.append(a @ v)
            seq_maps.append(a)
        outputs.append(torch.cat(heads, dim=-1) @ attention.out_proj.weight.double().T)
        maps.append(seq_maps)
    return torch.stack(outputs), maps


def vanilla(attention, x: torch.Tensor, masked=None) -> tuple[torch.Tensor, list]:
    return _single_map_kind(attention, x, lambda h, scores: causal_softmax(scores, masked))


def differential_lambda(attention) -> torch.Tensor:
    lq1, lk1, lq2, lk2 = (
        p.double() for p in (attention.lambda_q1, attention.lambda_k1, attention.lambda_q2, attention.lambda_k2)
    )
    return torch.exp((lq1 * lk1).sum()) - torch.exp((lq2 * lk2).sum()) + attention.lambda_init


def differential(attention, x: torch.Tensor, masked=None) -> tuple[torch.Tensor, list]:
    """Diff Transformer V1, flash layout: pair h uses query sub-heads 2h, 2h+1, key
    sub-heads 2g, 2g+1 and value head g (width 2d) of its group g."""
    d = attention.d_head
    pairs, kv_pairs = attention.n_heads // 2, attention.n_kv_heads // 2
    lam = differential_lambda(attention)
    gain = attention.subln.weight.double()
    outputs, maps = [], []
    for seq in x.double():
        heads, seq_maps = [], []
        for h in range(pairs):
            g = h // (pairs // kv_pairs)
            q1, k1 = _qk(attention, seq, 2 * h, 2 * g)
            q2, k2 = _qk(attention, seq, 2 * h + 1, 2 * g + 1)
            v = seq @ _head(attention.v_proj.weight, g, 2 * d).T
            bias1 = distance_bias(attention, differential_slope(attention, h, 0), len(seq))
            bias2 = distance_bias(attention, differential_slope(attention, h, 1), len(seq))
            a1 = causal_softmax(q1 @ k1.T / math.sqrt(d) + bias1, masked)
            a2 = causal_softmax(q2 @ k2.T / math.sqrt(d) + bias2, masked)
            head = (a1 - lam * a2) @ v
            head = head / torch.sqrt(head.pow(2).mean(-1, keepdim=True) + 1e-5) * gain
            heads.append(head * (1 - attention.lambda_init))
            seq_maps.append((a1, a2, lam))
        outputs.append(torch.cat(heads, dim=-1) @ attention.out_proj.weight.double().T)
        maps.append(seq_maps)
    return torch.stack(outputs), maps


def differential_v2(attention, x: torch.Tensor, masked=None) -> tuple[torch.Tensor, list]:
    """out_h = A[2h] V − sigmoid(x W_λ)_h · A[2h+1] V, both query heads in one K/V group."""
    d, heads_total = attention.d_head, 2 * attention.n_heads
    group_size = heads_total // attention.n_kv_heads
    outputs, maps = [], []
    for seq in x.double():
        lam = torch.sigmoid(seq @ attention.lambda_proj.weight.double().T)  # (T, H)
        heads, seq_maps = [], []
        for h in range(attention.n_heads):
            per_map, head_maps = [], []
            for q_head in (2 * h, 2 * h + 1):
                g = q_head // group_size
                q, k = _qk(attention, seq, q_head, g)
                v = seq @ _head(attention.v_proj.weight, g, d).T
                bias = alibi(attention, attention.n_heads, h, len(seq))  # output head h's slope
                a = causal_softmax(q @ k.T / math.sqrt(d) + bias, masked)
                per_map.append(a @ v)
                head_maps.append(a)
            heads.append(per_map[0] - lam[:, h : h + 1] * per_map[1])
            seq_maps.append((*head_maps, lam[:, h : h + 1]))
        outputs.append(torch.cat(heads, dim=-1) @ attention.o_proj.weight.double().T)
        maps.append(seq_maps)
    return torch.stack(outputs), maps


def doubly_normalized_map(scores: torch.Tensor, mix, sink: torch.Tensor | None, masked=None) -> torch.Tensor:
    """The causal prefix definition, entry by entry, for one head's (T, T) scores:
    C_ij = log Σ_{i' = j..i, i' sees j, and i sees i' (or i' = i)} exp(S_i'j) (+ exp(b) with a sink),
    A_ij = softmax over the keys j query i sees of (S_ij − m·C_ij). Without a layout every i' in j..i counts."""
    length = scores.shape[0]
    sees = visible(length, masked)
    rows = []
    for i in range(length):
        keys = [j for j in range(i + 1) if sees[i, j]]
        logits = []
        for j in keys:
            column = [scores[r, j] for r in range(j, i + 1) if sees[r, j] and sees[i, r]]
            if sink is not None:
                column.append(sink)
            c = torch.logsumexp(torch.stack(column), dim=0)
            logits.append(scores[i, j] - mix * c)
        row = scores.new_zeros(length)
        row[keys] = torch.stack(logits).softmax(dim=0)
        rows.append(row)
    return torch.stack(rows)


def doubly_normalized(attention, x: torch.Tensor, masked=None) -> tuple[torch.Tensor, list]:
    def head_map(h, scores):
        if attention.mix_logit is None:
            mix = attention.fixed_mix
        else:
            mix = torch.sigmoid(attention.mix_logit[h].double())
        sink = None if attention.sink_logit is None else attention.sink_logit[h].double()
        return doubly_normalized_map(scores, mix, sink, masked)

    return _single_map_kind(attention, x, head_map)


def sigmoid(attention, x: torch.Tensor, masked=None) -> tuple[torch.Tensor, list]:
    """A_ij = σ(S_ij + b) for the keys j query i sees (j ≤ i, not masked) and 0 otherwise, entry by entry;
    no row normalisation."""

    def head_map(h, scores):
        length = scores.shape[0]
        sees = visible(length, masked)
        zero = scores.new_zeros(())
        rows = [
            torch.stack(
                [1 / (1 + torch.exp(-(scores[i, j] + attention.bias))) if sees[i, j] else zero for j in range(length)]
            )
            for i in range(length)
        ]
        return torch.stack(rows)

    return _single_map_kind(attention, x, head_map)


PLAIN_FORMULAS = {
    "vanilla": vanilla,
    "differential": differential,
    "differential_v2": differential_v2,
    "doubly_normalized": doubly_normalized,
    "sigmoid": sigmoid,
}


def plain_formula(kind: str):
    """The transcription of `kind`; a registered kind without one fails the test that needs it."""
    if kind not in PLAIN_FORMULAS:
        pytest.fail(
            f"attention kind {kind!r} has no plain formula: write one in tests/plain_formulas.py "
            f"and add it to PLAIN_FORMULAS (docs/adding-an-attention-kind.md)"
        )
    return PLAIN_FORMULAS[kind]
