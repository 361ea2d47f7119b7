"""Sampling from a trained model: temperature, top-k, top-p, with or without the decoding cache.

    generate(model, prompt, max_new_tokens, settings, on_token=print_it) -> (B, T + new) token ids

Greedy at temperature 0. With the cache (model/decoding.py) each new token costs one position of
attention per layer; without it the whole sequence is run again for every token (the reference the
tests compare the cache against). Models that cannot decode with the cache (`decodes_with_cache`: the
uniform-attention control, doubly normalized attention under an attention layout) always recompute.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffformer.model.decoding import DecodingCache

GREEDY_BELOW = 1e-6  # temperatures below this sample the argmax (dividing by them overflows float64 logits)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    seed: int = 0
    use_cache: bool = True


def next_token(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator) -> torch.Tensor:
    """(B, V) logits -> (B,) tokens. top-p keeps at least the most likely token (top_p 0 is greedy); a
    temperature too small to divide by without overflow is greedy too."""
    if settings.temperature < GREEDY_BELOW:
        return logits.argmax(-1)
    logits = logits.double() / settings.temperature
    logits = logits - logits.max(-1, keepdim=True).values  # finite for any temperature above GREEDY_BELOW
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        kth = logits.topk(settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p is not None and settings.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        dropped = cumulative - ordered.softmax(-1) >= settings.top_p  # keeps the token that crosses p
        dropped[..., 0] = False  # and always the most likely one
        logits = logits.masked_fill(dropped.scatter(-1, order, dropped), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    prompt: torch.Tensor,
    max_new_tokens: int,
    settings: SamplingSettings = SamplingSettings(),
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Continue `prompt` (B, T) by `max_new_tokens`; `on_token` hears each new (B,) column as it comes."""
    model.eval()
    generator = torch.Generator(device=prompt.device).manual_seed(settings.seed)
    cached = settings.use_cache and model.decodes_with_cache()
    cache = DecodingCache() if cached else None
    tokens = prompt
    logits = model(prompt, cache=cache)[:, -1]
    for step in range(max_new_tokens):
        chosen = next_token(logits, settings, generator)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        if on_token is not None:
            on_token(chosen)
        if step + 1 < max_new_tokens:
            logits = (model(chosen[:, None], cache=cache) if cached else model(tokens))[:, -1]
    return tokens
