"""Heads that start identical, and how far apart a layer's heads are (the symmetry question, docs/formulas.md §8).

Heads of a layer differ only because their random initial weights do: with identical weights
and no dropout every head receives the same gradient and stays identical. `model.head_init`
starts them so: `identical_qkv` copies head 0's reading weights (q, k, v and each kind's
per-head extras) into every head but leaves the output projection random, `identical` copies
the output projection's columns too.
"""

import torch

from diffformer.model.attention.base import Attention, HeadSlices


def _slices(entries: list[HeadSlices]):
    for tensor, dim, heads in entries:
        yield tensor, tensor.unflatten(dim, (heads, -1)), dim


def make_heads_identical(attention: Attention, outputs_too: bool) -> None:
    """Copy head 0's weights into every head of `attention` (its output columns too with `outputs_too`)."""
    reading, writing = attention.per_head_parameters()
    with torch.no_grad():
        for _, per_head, dim in _slices(reading + (writing if outputs_too else [])):
            first = per_head.narrow(dim, 0, 1)
            per_head.copy_(first.expand_as(per_head))


def head_spread(attention: Attention, outputs_too: bool = True) -> float:
    """The largest absolute difference between any head's weights and head 0's: 0 for identical heads."""
    reading, writing = attention.per_head_parameters()
    spread = 0.0
    for _, per_head, dim in _slices(reading + (writing if outputs_too else [])):
        spread = max(spread, (per_head - per_head.narrow(dim, 0, 1)).abs().max().item())
    return spread
