"""Incremental decoding: each layer keeps what its attention read, so a new token costs one row, not T.

    cache = DecodingCache()
    logits = model(prompt, cache=cache)          # the prompt's logits; the cache now holds its keys
    logits = model(next_tokens, cache=cache)     # only the new tokens; positions continue from the prompt

Every kind caches its keys and values as its attention reads them (docs/formulas.md §15); doubly
normalized attention also keeps each key's running column log-sum-exp C_j over the queries so far
(with the sink), which is all its causal prefix form needs from earlier queries.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    keys: torch.Tensor | None = None  # (B, heads, past, width)
    values: torch.Tensor | None = None
    column_lse: torch.Tensor | None = None  # doubly normalized: (B, H, past)

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' keys and values; returns all of them."""
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)
        self.keys, self.values = keys, values
        return keys, values


@dataclass
class DecodingCache:
    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0  # positions already processed

    def layer(self, index: int) -> LayerCache:
        while len(self.layers) <= index:
            self.layers.append(LayerCache())
        return self.layers[index]
