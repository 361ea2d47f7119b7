"""Editing what heads write: a function sees every layer's per-head outputs and may replace them (head
ablation, activation patching).

Usage::

    def zero_head_2_of_layer_1(layer, heads):      # heads: (B, output_heads, T, w)
        if layer == 1:
            heads = heads.clone()
            heads[:, 2] = 0
        return heads

    with edit_heads(model, zero_head_2_of_layer_1):
        logits = model(tokens)

Heads are the layer's output heads — a differential V1 pair is one head — as they enter the residual
projection (`Attention.write_heads`), so one mechanism serves every kind.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from diffformer.model.instruments import attached

HeadEdit = Callable[[int, torch.Tensor], torch.Tensor]


@contextmanager
def edit_heads(model: nn.Module, edit: HeadEdit) -> Iterator[None]:
    """Apply `edit(layer, heads) -> heads` in every layer for forward passes inside the block."""
    with attached(model, head_edit=edit):  # the model hands the edit to every layer in its AttentionCall
        yield
