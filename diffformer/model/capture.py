"""Capturing attention maps from a forward pass.

Usage::

    with capture_attention(model, query_positions=[-1]) as capture:
        logits = model(tokens)
    maps = capture.maps[layer]        # AttentionMaps
    maps.weights                      # (B, heads, P, T) effective attention

The context hands the capture to the model (`Transformer.instruments`), which passes it to each
chosen layer in that layer's AttentionCall; outside it no layer gets one, so an ordinary forward
pass never builds a T×T map. Inside it, each kind's map function (`Attention.record_maps`)
computes the explicit maps only at the requested query positions, so long contexts can be
probed without T×T memory per layer.

What the rows of a map are depends on the kind (`Rows`, declared in the attention registry):
measurements that need a share read each row as |w| / Σ|w| (docs/formulas.md §6).
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from diffformer.model.position import alibi_bias, alibi_bias_for_range


@dataclass
class DifferentialParts:
    """The two softmax maps of a differential head and the λ that subtracts them.

    a1, a2: (B, heads, P, T); lam: () for V1 (one λ per layer), (B, heads, P) for V2 (per token).
    """

    a1: torch.Tensor
    a2: torch.Tensor
    lam: torch.Tensor

    def detached(self) -> "DifferentialParts":
        return DifferentialParts(self.a1.detach().float(), self.a2.detach().float(), self.lam.detach().float())


class Rows(str, Enum):
    """What the rows of a kind's effective map are (each kind declares it in the attention registry)."""

    DISTRIBUTION = "distribution"  # non-negative, each row sums to 1 (softmax, doubly normalized)
    SIGNED = "signed"  # may be negative, rows sum to 1 − λ (differential: A1 − λ·A2)
    UNNORMALISED = "unnormalised"  # non-negative, no row constraint (sigmoid)


@dataclass
class AttentionMaps:
    """What one layer's attention did at the captured query positions.

    weights: (B, heads, P, T) the effective attention each head applies to the
        values; what its rows are is `rows` (a distribution for vanilla and doubly
        normalized attention; for differential A1 − λ·A2, signed, summing to 1 − λ;
        for sigmoid σ(S + b), non-negative with no row constraint).
    logits: name -> (B, maps, P, T) scaled q·k/√d_head before normalisation, −inf
        on future keys ("logits" for one map; "logits1"/"logits2" for differential).
    query_positions: (P,) the query positions (non-negative) the rows belong to.
    differential: A1, A2 and λ for the differential kinds, else None.
    rows: filled in by the capture from the model's kind (the uniform control's rows are distributions).
    """

    weights: torch.Tensor
    logits: dict[str, torch.Tensor]
    query_positions: torch.Tensor
    differential: DifferentialParts | None = None
    rows: Rows = Rows.DISTRIBUTION


class AttentionCapture:
    """Collects AttentionMaps per layer index during a captured forward pass."""

    def __init__(self, query_positions: Sequence[int] | None = None, rows: Rows = Rows.DISTRIBUTION):
        self.requested_positions = None if query_positions is None else list(query_positions)
        self.rows = rows
        self.maps: dict[int, AttentionMaps] = {}

    def positions(self, length: int, device: torch.device) -> torch.Tensor:
        """The query positions to record for a sequence of `length`, negatives counted from the end."""
        if self.requested_positions is None:
            return torch.arange(length, device=device)
        resolved = [p + length if p < 0 else p for p in self.requested_positions]
        bad = [p for p, r in zip(self.requested_positions, resolved) if not 0 <= r < length]
        if bad:
            raise ValueError(f"query positions {bad} are outside a sequence of length {length}")
        return torch.tensor(resolved, device=device, dtype=torch.long)

    def record(self, layer_index: int, maps: AttentionMaps) -> None:
        self.maps[layer_index] = AttentionMaps(
            weights=maps.weights.detach().float(),
            logits={name: t.detach().float() for name, t in maps.logits.items()},
            query_positions=maps.query_positions.detach(),
            differential=None if maps.differential is None else maps.differential.detached(),
            rows=self.rows,
        )


def hidden_keys(positions: torch.Tensor, keys: int, masked_keys: torch.Tensor | None = None) -> torch.Tensor:
    """(P, keys) bool: the keys each query row at `positions` may not see — every key after it, and with an
    attention layout (`masked_keys`, (L, L) bool, True where query i may not see key j ≤ i: the masked copy task,
    docs/formulas.md §23) the keys it hides."""
    hidden = torch.arange(keys, device=positions.device)[None, :] > positions[:, None]
    return hidden if masked_keys is None else hidden | masked_keys[positions, :keys]


def causal_logits(
    q_rows: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    alibi_slopes: torch.Tensor | None = None,
    masked_keys: torch.Tensor | None = None,
    first_position: int | None = None,
) -> torch.Tensor:
    """Scaled scores of query rows at `positions` against keys 0..K−1 (plus ALiBi's bias), −inf on the keys
    a row may not see (`hidden_keys`: future keys, and those an attention layout masks, `masked_keys`).

    q_rows: (B, heads, P, d_head), the queries at `positions` (P,); k: (B, heads, K, d_head)
    -> (B, heads, P, K), float32; alibi_slopes: (heads,) or None. first_position: when `positions` is the range
    first_position … first_position+P−1 (a block of a forward), ALiBi's bias comes from the shared cache.
    """
    scale = q_rows.shape[-1] ** -0.5
    scores = (q_rows.float() @ k.float().transpose(-1, -2)) * scale
    if alibi_slopes is not None and first_position is not None:
        scores = scores + alibi_bias_for_range(alibi_slopes, first_position, len(positions), k.shape[-2])
    elif alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes, positions, k.shape[-2])
    return scores.masked_fill(hidden_keys(positions, k.shape[-2], masked_keys), float("-inf"))


@contextmanager
def capture_attention(
    model: nn.Module,
    query_positions: Sequence[int] | None = None,
    layers: Iterable[int] | None = None,
) -> Iterator[AttentionCapture]:
    """Record attention maps of `model`'s layers (all, or `layers`) for forward passes inside the block.

    query_positions: which query rows to keep (None = every position; negative
    indices count from the end, so [-1] is the last token).
    """
    from diffformer.model.attention.registry import row_semantics  # the registry imports every kind
    from diffformer.model.instruments import attached

    capture = AttentionCapture(query_positions, row_semantics(model.config))
    chosen = set(range(len(model.blocks))) if layers is None else set(layers)
    unknown = chosen - set(range(len(model.blocks)))
    if unknown:
        raise ValueError(f"layers {sorted(unknown)} do not exist; the model has {len(model.blocks)} layers")
    with attached(model, capture=capture, capture_layers=frozenset(chosen)):
        yield capture
