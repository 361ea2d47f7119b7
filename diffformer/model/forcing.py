"""Forcing attention: chosen query rows of every layer attend to one key alone (docs/formulas.md §12).

Usage::

    with force_attention(model, keys):   # keys: (B, T) long, −1 where a row is left alone
        logits = model(tokens)

Row (b, t) with keys[b, t] = s ≥ 0 takes, in every layer and head, the value at s alone in
place of its attention output: the effective map of that row is one-hot on s (for the
differential kinds, A1 − λ·A2 is one-hot; the rest of the kind's output path is unchanged).
Forcing row t changes only what position t and later positions compute.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from diffformer.model.instruments import attached


@contextmanager
def force_attention(model: nn.Module, keys: torch.Tensor) -> Iterator[None]:
    """Force the rows `keys` names in every layer for forward passes inside the block (keys[b, t] ≤ t)."""
    positions = torch.arange(keys.shape[-1], device=keys.device)
    if bool((keys > positions).any()):
        raise ValueError("a forced key lies after its query: attention is causal")
    with attached(model, forced_keys=keys):  # the model hands the keys to every layer in its AttentionCall
        yield
