"""Measurements on attention maps (docs/formulas.md §6), as plain functions of tensors.

Maps are rows over keys: (..., T). Not every kind's rows are distributions (model/capture.py Rows):
differential attention's A1 − λA2 can be negative, sigmoid attention's rows are not normalised.
Where a share or a distribution is needed (masses, entropy, divergences, key coverage) a row is
taken as |w| / Σ|w| — how the head's attention, of either sign, is spread — which is the row
itself for a distribution, so every kind's numbers mean the same.
"""

import math

import torch

from diffformer.probes.results import KeyCoverage


def as_distribution(rows: torch.Tensor) -> torch.Tensor:
    """|w| normalised to sum to 1 along the last axis."""
    magnitude = rows.abs()
    return magnitude / magnitude.sum(-1, keepdim=True).clamp_min(1e-30)


def normalized_entropy(rows: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """Entropy of each row divided by log(#keys it can see): 0 = one key, 1 = uniform.

    rows: (..., P, T); query_positions: (P,). Position 0 sees one key; its entropy is 0.
    """
    p = as_distribution(rows)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    visible = (query_positions + 1).to(rows.dtype)
    return torch.where(visible > 1, entropy / torch.log(visible.clamp_min(2)), torch.zeros_like(entropy))


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence (natural log, in [0, ln 2]) between distributions along the last axis."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return (a * (torch.log(a.clamp_min(1e-30)) - torch.log(b.clamp_min(1e-30)))).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def head_diversity(rows: torch.Tensor) -> torch.Tensor:
    """Mean pairwise JS divergence between heads. rows: (..., H, T) -> (...)."""
    p = as_distribution(rows)
    heads = p.shape[-2]
    if heads < 2:
        return torch.zeros(p.shape[:-2])
    pairs = [(a, b) for a in range(heads) for b in range(a + 1, heads)]
    return torch.stack([js_divergence(p[..., a, :], p[..., b, :]) for a, b in pairs], dim=-1).mean(-1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def span_mass(rows: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Attention each row puts on its span [start, end). rows: (..., T); spans: (..., 2) broadcastable."""
    keys = torch.arange(rows.shape[-1], device=rows.device)
    inside = (keys >= spans[..., :1]) & (keys < spans[..., 1:])
    return (rows * inside).sum(-1)


# A source counts as dropped when, in its best head, all the scored rows together give it less than half of
# what one row gives a source it attends to alone (docs/formulas.md §24).
DROPPED_BELOW = 0.5


def source_coverage(shares: torch.Tensor, spans: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
    """Explaining away at the sources a task marks (docs/formulas.md §24): for each scored row, the share of
    attention its source receives from all the sequence's scored rows together, in the head that gives it most.

    shares: (B, H, P, T) rows as shares of |w| at the P captured positions; spans: (B, P, 2) each row's source
    [start, end); asked: (B, P) whether the row is scored -> (B, P), ≈ 1 when every source is read by its row.
    """
    received = (shares * asked[:, None, :, None]).sum(2)  # (B, H, T): what each key gets from the scored rows
    keys = torch.arange(shares.shape[-1], device=shares.device)
    inside = ((keys >= spans[..., :1]) & (keys < spans[..., 1:])).to(received.dtype)  # (B, P, T)
    return torch.einsum("bht,bpt->bhp", received, inside).amax(1)


def negative_share(rows: torch.Tensor) -> torch.Tensor:
    """Share of a row's total |weight| that is negative (0 for any softmax map)."""
    return rows.clamp_max(0).abs().sum(-1) / rows.abs().sum(-1).clamp_min(1e-30)


def causal_uniform_baseline(length: int) -> torch.Tensor:
    """H_j = Σ_{i=j}^{T} 1/i (1-based): what key j receives when every query attends uniformly."""
    reciprocal = 1.0 / torch.arange(1, length + 1, dtype=torch.float64)
    return reciprocal.flip(0).cumsum(0).flip(0)


def key_coverage(full_map: torch.Tensor) -> KeyCoverage:
    """Explaining away (Ding et al.): how much attention each key receives, against the uniform causal baseline.

    full_map: (..., T, T) rows = all queries. r_j = Σ_i p_ij with p_i = |A_i| / Σ|A_i| (the row itself for a
    distribution), r̃_j = r_j / H_j. Returns min r̃, the fraction of keys with r̃ < 0.1 and < 0.01, and the
    largest share r_j / Σ r (a sink).
    """
    received = as_distribution(full_map).sum(-2).double()  # (..., T)
    normalised = received / causal_uniform_baseline(full_map.shape[-1]).to(received.device)
    share = received / received.sum(-1, keepdim=True)
    return KeyCoverage(
        min=float(normalised.min()),
        below_0_1=float((normalised < 0.1).double().mean()),
        below_0_01=float((normalised < 0.01).double().mean()),
        largest_share=float(share.max(-1).values.mean()),
    )


def summarize(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan
