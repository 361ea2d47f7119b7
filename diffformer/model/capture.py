"""Capturing attention maps from a forward pass.

Usage::

    with capture_attention(model, query_positions=[-1]) as capture:
        logits = model(tokens)
    maps = capture.maps[layer]        # AttentionMaps
    maps.weights                      # (B, heads, P, T) effective attention

Every attention module has a `recorder` attribute that is None outside this context,
so an ordinary forward pass pays one attribute check and never builds a T×T map.
Inside it, each kind's pure map function (`Attention.record_maps`) computes the
explicit maps only at the requested query positions, so long contexts can be probed
without T×T memory per layer.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from diffformer.model.position import alibi_bias


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


@dataclass
class AttentionMaps:
    """What one layer's attention did at the captured query positions.

    weights: (B, heads, P, T) the effective attention each head applies to the
        values. Rows sum to 1 for vanilla and doubly normalized attention; for
        differential it is A1 − λ·A2 (rows sum to 1 − λ, entries may be negative).
    logits: name -> (B, maps, P, T) scaled q·k/√d_head before normalisation, −inf
        on future keys ("logits" for one map; "logits1"/"logits2" for differential).
    query_positions: (P,) the query positions (non-negative) the rows belong to.
    differential: A1, A2 and λ for the differential kinds, else None.
    """

    weights: torch.Tensor
    logits: dict[str, torch.Tensor]
    query_positions: torch.Tensor
    differential: DifferentialParts | None = None


class AttentionCapture:
    """Collects AttentionMaps per layer index during a captured forward pass."""

    def __init__(self, query_positions: Sequence[int] | None = None):
        self.requested_positions = None if query_positions is None else list(query_positions)
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
        )


def causal_logits(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, alibi_slopes: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled scores of the queries at `positions` against all keys (plus ALiBi's bias), −inf on future keys.

    q, k: (B, heads, T, d_head) -> (B, heads, P, T), float32; alibi_slopes: (heads,) or None.
    """
    scale = q.shape[-1] ** -0.5
    scores = (q[:, :, positions].float() @ k.float().transpose(-1, -2)) * scale
    if alibi_slopes is not None:
        scores = scores + alibi_bias(alibi_slopes, positions, k.shape[-2])
    future = torch.arange(k.shape[-2], device=k.device)[None, :] > positions[:, None]
    return scores.masked_fill(future, float("-inf"))


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
    capture = AttentionCapture(query_positions)
    chosen = set(range(len(model.blocks))) if layers is None else set(layers)
    unknown = chosen - set(range(len(model.blocks)))
    if unknown:
        raise ValueError(f"layers {sorted(unknown)} do not exist; the model has {len(model.blocks)} layers")
    attentions = [model.blocks[i].attention for i in sorted(chosen)]
    for attention in attentions:
        attention.recorder = capture
    try:
        yield capture
    finally:
        for attention in attentions:
            attention.recorder = None
