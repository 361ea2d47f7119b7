"""FlexAttention for the softmax maps SDPA can only take with a materialised (T, K) float mask: ALiBi's
distance bias and attention layouts (docs/formulas.md §10, §23). FlexAttention compiles the score
modification (−m_h·(i − j)) and the mask (causal, plus the keys a layout hides) into one fused kernel,
so no T×K bias is built and the GPU keeps a flash-style kernel.

Used by `Attention.causal_attention` — vanilla and both differential kinds — for whole sequences (a decoding
step keeps SDPA: its length changes every token, and every new shape would compile again) when
`DIFFFORMER_FLEX` says so:
`auto` (default) on CUDA, `on` on CUDA and for forwards without gradients on CPU (FlexAttention has no
CPU backward; outside torch.compile it runs its unfused reference there, which the tests compare with the
SDPA path), `off` never. Sigmoid attention (rows are not
normalised) and doubly normalized attention (a row depends on other queries' scores) are not softmax
maps of their own scores, so FlexAttention cannot express them; they keep their blocked paths.
"""

import functools
import os
import warnings

import torch

from diffformer.errors import RecipeError

FLEX_VARIABLE = "DIFFFORMER_FLEX"
FLEX_SETTINGS = ("auto", "on", "off")


@functools.cache
def _flex_module():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:  # a torch without FlexAttention
        return None
    return flex_attention


def flex_wanted(device: torch.device) -> bool:
    """Whether softmax maps with ALiBi or a layout go through FlexAttention on `device`."""
    setting = os.environ.get(FLEX_VARIABLE, "auto")
    if setting not in FLEX_SETTINGS:
        raise RecipeError(f"{FLEX_VARIABLE} must be one of {', '.join(FLEX_SETTINGS)} (got {setting!r})")
    if setting == "off" or _flex_module() is None:
        return False
    if device.type == "cuda":
        return True
    # FlexAttention has no backward on CPU: there it serves forwards without gradients only.
    return setting == "on" and not torch.is_grad_enabled()


@functools.cache
def _compiled_flex():
    return torch.compile(_flex_module().flex_attention, dynamic=False)


@functools.lru_cache(maxsize=32)
def _causal_block_mask(length: int, keys: int, offset: int, device: torch.device):
    """Causal over absolute positions (queries offset … offset+length−1 against keys 0 … keys−1)."""

    def causal(batch, head, query, key):
        return key <= query + offset

    return _flex_module().create_block_mask(causal, None, None, length, keys, device=device)


def flex_causal_attention(q, k, v, slopes, offset: int, masked_keys, scale: float | None = None) -> torch.Tensor:
    """softmax(q·kᵀ·scale − slope_h·(i − j), causal, minus the layout's hidden keys)·v for q (B, H, T, d) at
    positions offset … and k, v (B, H, K, ·) at 0 … K−1; equal to the SDPA path with its float mask."""
    flex = _flex_module()
    length, keys = q.shape[-2], k.shape[-2]
    if masked_keys is None and not torch.compiler.is_compiling():
        block_mask = _causal_block_mask(length, keys, offset, q.device)
    elif masked_keys is None:  # the compiler traces the mask's construction itself
        block_mask = _causal_block_mask.__wrapped__(length, keys, offset, q.device)
    else:
        hidden = masked_keys.to(q.device)

        def visible(batch, head, query, key):
            position = query + offset
            return (key <= position) & ~hidden[position, key]

        block_mask = flex.create_block_mask(visible, None, None, length, keys, device=q.device)
    score_mod = None
    if slopes is not None:
        slope = slopes.to(q.device, torch.float32)

        def score_mod(score, batch, head, query, key):
            return score - slope[head] * (query + offset - key)

    if torch.compiler.is_compiling():  # inside a compiled model: the compiler fuses it
        return flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if q.device.type == "cpu":
        with warnings.catch_warnings():  # the unfused reference on CPU: exact, and known to be slow
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
