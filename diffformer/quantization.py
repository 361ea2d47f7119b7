"""Fake quantization for low-bit evaluation: what a model loses when its weights and activations are rounded
to b bits (docs/formulas.md §21).

Symmetric absmax quantization to b bits, q = 2^(b−1) − 1 levels each side of zero:
    x̂ = clamp(round(x / s), −q, q) · s,   s = max|x| / q
over the whole tensor (`tensor`) or per channel (`channel`: per output row of a weight; per input feature,
over every token of the batch, of an activation). Every `nn.Linear` — attention projections, a kind's own
linear maps (V2's λ gate), the SwiGLU and the LM head — gets its weight quantized and its input quantized
on the fly; embeddings, norms and a kind's vectors (λ, sinks) stay in full precision. "Fake": values are
rounded and computed with in floating point, which measures the rounding's effect, not a kernel's speed.
"""

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from diffformer.errors import RecipeError
from diffformer.metrics import score_sequences

Z_95 = 1.96

SCHEME = re.compile(r"w(\d+)a(\d+)")
FULL_PRECISION_BITS = 16  # "a16" / "w16": left as they are


@dataclass(frozen=True)
class QuantizationScheme:
    weight_bits: int | None  # None: full precision
    activation_bits: int | None
    granularity: Literal["tensor", "channel"] = "tensor"

    @classmethod
    def parse(cls, spec: str, granularity: str = "tensor") -> "QuantizationScheme":
        """`w8a8`, `w4a16` (weights only), `w16a8` (activations only); bits from 2 to 16."""
        match = SCHEME.fullmatch(spec.strip().lower())
        if match is None or granularity not in ("tensor", "channel"):
            raise RecipeError(
                f"--quantize {spec!r}: expected wBITSaBITS such as w8a8, w4a16 or w6a6, and --granularity tensor or "
                f"channel (got {granularity!r})"
            )
        bits = [int(match.group(1)), int(match.group(2))]
        if any(not 2 <= b <= FULL_PRECISION_BITS for b in bits):
            raise RecipeError(f"--quantize {spec!r}: bits must be between 2 and {FULL_PRECISION_BITS}")
        weight, activation = (None if b == FULL_PRECISION_BITS else b for b in bits)
        return cls(weight, activation, granularity)

    @property
    def name(self) -> str:
        weights = self.weight_bits or FULL_PRECISION_BITS
        return f"w{weights}a{self.activation_bits or FULL_PRECISION_BITS} ({self.granularity})"


def fake_quantize(x: torch.Tensor, bits: int, channel_dim: int | None = None) -> torch.Tensor:
    """x rounded to `bits`-bit symmetric absmax levels: one scale for the tensor (channel_dim None), or one per
    slice along `channel_dim` (the max taken over every other dimension)."""
    levels = 2 ** (bits - 1) - 1
    magnitude = x.detach().abs().float()
    if channel_dim is None:
        absmax = magnitude.amax()
    else:
        others = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
        absmax = magnitude.amax(dim=others, keepdim=True)
    scale = (absmax / levels).clamp_min(torch.finfo(torch.float32).tiny)
    return ((x.float() / scale).round().clamp(-levels, levels) * scale).to(x.dtype)


@contextmanager
def quantized(model: nn.Module, scheme: QuantizationScheme) -> Iterator[nn.Module]:
    """The model with every Linear's weight and input fake-quantized by `scheme`, for the block; its own weights
    are restored afterwards (also when the block fails)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    originals = [m.weight.data for m in linears]
    hooks = []
    channel = 0 if scheme.granularity == "channel" else None  # a weight's output rows
    try:
        if scheme.weight_bits is not None:
            for module in linears:
                module.weight.data = fake_quantize(module.weight.data, scheme.weight_bits, channel)
        if scheme.activation_bits is not None:
            features = -1 if scheme.granularity == "channel" else None  # an input's features, over every token
            bits = scheme.activation_bits

            def quantize_input(module, inputs):
                return (fake_quantize(inputs[0], bits, features), *inputs[1:])

            hooks = [module.register_forward_pre_hook(quantize_input) for module in linears]
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for module, weight in zip(linears, originals):
            module.weight.data = weight


@dataclass
class QuantizedEval:
    """The held-out metrics under one scheme, and their change against full precision on the same sequences
    (paired), each with its standard error and 95% interval."""

    scheme: str
    metrics: dict[str, float]
    change: dict[str, dict[str, float]]  # metric -> {delta, se, low, high}


def evaluate_quantized(model, where: tuple, schemes: Sequence[QuantizationScheme], split="val", on_batch=None):
    """Each scheme's metrics on the held-out batches `where` = (data, seed, batches, batch_size, device,
    precision), and the paired change against the model in full precision."""
    data = where[0]
    reference = score_sequences(model, *where, split=split)
    results = []
    for scheme in schemes:
        with quantized(model, scheme):
            scores = score_sequences(model, *where, split=split, on_batch=on_batch)
        metrics = scores.metrics(data.bytes_per_token(split))
        change = {
            name: {"delta": delta, "se": se, "low": delta - Z_95 * se, "high": delta + Z_95 * se}
            for name, (delta, se) in scores.change_from(reference).items()
            if name in metrics
        }
        results.append(QuantizedEval(scheme.name, metrics, change))
    return results
