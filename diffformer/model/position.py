"""Position encodings applied inside attention: rotary (RoPE) and ALiBi's linear biases.

Rotary, interleaved layout (Su et al. 2021): dimensions (0, 1), (2, 3), ... are rotated as
pairs, as in the Diff Transformer reference code (`apply_rotary_emb(..., interleaved=True)`),
so a reference checkpoint keeps its meaning here.

ALiBi (Press et al. 2022): no embedding at all; each head adds −m_h·(i − j) to its scores,
which penalises distance the same way at any length, so models can run beyond their
training length (docs/formulas.md §10).
"""

import weakref
from collections import OrderedDict

import torch
from torch import nn

ROPE_BASE = 10000.0  # θ in angle = t·θ^(−2m/d)


class RotaryEmbedding(nn.Module):
    """Rotates query/key heads by their position; one instance is shared by all layers.

    cos/sin are cached up to `max_seq_len` and computed on the fly beyond it, so
    rotary models can be probed at lengths longer than they were trained on.
    """

    def __init__(self, d_head: int, max_seq_len: int, base: float = ROPE_BASE):
        super().__init__()
        self.base = base
        inverse_frequency = base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
        # Non-persistent: derived from the config, so they stay out of checkpoints.
        self.register_buffer("inverse_frequency", inverse_frequency, persistent=False)
        cos, sin = self._angles(max_seq_len)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def _angles(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, dtype=torch.float32, device=self.inverse_frequency.device)
        angles = torch.outer(positions, self.inverse_frequency)  # (T, d_head/2)
        return angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, heads, T, d_head) -> same shape, rotated by position offset, offset + 1, …"""
        end = offset + x.shape[-2]
        if end <= self.cos_cached.shape[0]:
            cos, sin = self.cos_cached[offset:end], self.sin_cached[offset:end]
        else:
            cos, sin = (angles[offset:] for angles in self._angles(end))
        x32 = x.float()
        if torch.compiler.is_compiling():  # inductor fuses the real form, but cannot generate complex code
            even, odd = x32[..., 0::2], x32[..., 1::2]
            rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        else:
            # Pairs (x_2m, x_2m+1) as complex numbers times e^{i·angle}: one product in float32 instead
            # of slicing, four products, two sums and a stack (~5x faster forward+backward on CPU).
            pairs = torch.view_as_complex(x32.unflatten(-1, (-1, 2)))
            rotated = torch.view_as_real(pairs * torch.complex(cos, sin))
        return rotated.flatten(-2).type_as(x)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022, arXiv 2108.12409): 2^(−8/n), 2^(−16/n), … for n heads.

    For n not a power of two: the slopes of the largest power of two p below n, then every
    other slope of 2p for the remaining heads (the paper's recipe).
    """
    power = 2 ** (heads.bit_length() - 1)

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    slopes = geometric(power) + geometric(2 * power)[0::2][: heads - power]
    return torch.tensor(slopes, dtype=torch.float32)


# ALiBi's bias depends only on the slopes, the query range and the number of keys, so it is built once per
# (slopes, range, keys, device, dtype) and shared by every layer with those slopes, instead of rebuilt by every
# layer on every forward. Entries are (maps, T, K) float tensors: a few are kept, the least recently used go.
USE_BIAS_CACHE = True  # benchmarks/position_bias.py turns it off to measure what the cache saves
BIAS_CACHE_ENTRIES = 8
_bias_cache: OrderedDict = OrderedDict()
_slope_values: dict[int, tuple] = {}  # id of a slopes tensor -> its values, read once (forgotten with the tensor)


def alibi_bias_for_range(
    slopes: torch.Tensor, first: int, length: int, keys: int, causal_mask: bool = False, dtype=torch.float32
) -> torch.Tensor:
    """alibi_bias for the query positions first … first+length−1, from the cache; with `causal_mask`, −inf on
    the keys after each query as well (the additive mask SDPA takes). Not cached while compiling (the graph
    builds it itself) or with USE_BIAS_CACHE off. Callers must not modify the result in place."""
    if not USE_BIAS_CACHE or torch.compiler.is_compiling():
        return _range_bias(slopes, first, length, keys, causal_mask, dtype)
    values = _slope_values.get(id(slopes))
    if values is None:  # one read per tensor (on a GPU, one synchronisation), not one per forward
        values = _slope_values[id(slopes)] = tuple(slopes.tolist())
        weakref.finalize(slopes, _slope_values.pop, id(slopes), None)
    key = (values, slopes.device, first, length, keys, causal_mask, dtype)
    cached = _bias_cache.get(key)
    if cached is None:
        cached = _bias_cache[key] = _range_bias(slopes, first, length, keys, causal_mask, dtype)
        while len(_bias_cache) > BIAS_CACHE_ENTRIES:
            _bias_cache.popitem(last=False)
    else:
        _bias_cache.move_to_end(key)
    return cached


def _range_bias(slopes, first: int, length: int, keys: int, causal_mask: bool, dtype) -> torch.Tensor:
    positions = torch.arange(first, first + length, device=slopes.device)
    bias = alibi_bias(slopes, positions, keys)
    if causal_mask:
        future = torch.arange(keys, device=slopes.device)[None, :] > positions[:, None]
        bias = bias.masked_fill(future, float("-inf"))
    return bias.to(dtype)


def alibi_bias(slopes: torch.Tensor, query_positions: torch.Tensor, keys: int) -> torch.Tensor:
    """−m_h·(i − j) for each head h, query position i and key j ≤ i: (heads, P, keys), float32.

    Future keys (j > i) get 0 here; the causal mask removes them.
    """
    distance = (query_positions[:, None] - torch.arange(keys, device=query_positions.device)[None, :]).clamp_min(0)
    return -slopes.to(query_positions.device)[:, None, None] * distance.float()
