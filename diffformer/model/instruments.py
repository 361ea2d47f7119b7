"""What probes attach to a model's forward passes, and the one way they attach it.

`capture_attention` (model/capture.py), `force_attention` (model/forcing.py) and `edit_heads`
(model/editing.py) each set their field of `Transformer.instruments` with `attached` for the duration of
their block; the Transformer hands every layer its share in that layer's AttentionCall.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from diffformer.model.capture import AttentionCapture


@dataclass(frozen=True)
class Instruments:
    capture: "AttentionCapture | None" = None
    capture_layers: frozenset[int] = frozenset()
    forced_keys: torch.Tensor | None = None  # (B, T) for every layer
    head_edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # see AttentionCall.head_edit


@contextmanager
def attached(model: nn.Module, **fields) -> Iterator[None]:
    """The model's instruments with `fields` replaced for the block, restored afterwards (also on errors)."""
    before = model.instruments
    model.instruments = replace(before, **fields)
    try:
        yield
    finally:
        model.instruments = before
