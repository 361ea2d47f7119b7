"""The focus lab's scorers: one learned query against the segments' keys (docs/formulas.md §14).

Each attention kind that takes part in the focus lab defines its scorer beside its attention (in its own
file) and names it in its registry entry; `model/focus.py` builds the one the recipe's kind names.
"""

import math

import torch
from torch import nn


class FocusScorer(nn.Module):
    """Scores s_j = q·k_j/√d of one learned query (or `queries` of them, each d/queries wide) against the
    segment features' keys; a kind's subclass turns them into the focus map w (B, m) in `forward`."""

    def __init__(self, config, queries: int = 1):
        super().__init__()
        self.key = nn.Linear(config.d_model, config.d_model, bias=False)
        self.query = nn.Parameter(torch.randn(queries, config.d_model // queries) * config.d_model**-0.5)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, m, d) -> (B, queries, m)."""
        keys = self.key(features).view(*features.shape[:2], self.query.shape[0], -1).transpose(1, 2)
        return (keys * self.query[None, :, None, :]).sum(-1) / math.sqrt(keys.shape[-1])

    def distribution(self, weights: torch.Tensor, scores: torch.Tensor, signed_map: str) -> torch.Tensor:
        """The focus map as the distribution α that hard and LVML objectives read: w itself by default.
        scores: this forward's `scores` (B, queries, m); signed_map: the `focus.signed_map` choice, which
        only a kind with signed maps reads."""
        return weights
