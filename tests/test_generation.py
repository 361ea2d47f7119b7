"""Incremental decoding and sampling: the cache gives, token by token, the logits of full recomputation
for every attention kind and position encoding; sampling settings do what they say."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, KINDS, small_model

from diffformer.generation import SamplingSettings, generate, next_token
from diffformer.model.decoding import DecodingCache


@pytest.mark.parametrize("position", ["rope", "alibi", "learned", "none"])
@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_cached_decoding_equals_full_recomputation_token_by_token(variant, position):
    model = small_model(ATTENTION_VARIANTS[variant], position=position, n_kv_heads=2).eval()
    for block in model.blocks:
        if hasattr(block.attention, "query_block"):
            block.attention.query_block = 4  # the prompt spans several doubly normalized query blocks
    torch.manual_seed(1)
    tokens = torch.randint(0, 37, (2, 20))
    cache = DecodingCache()
    with torch.no_grad():
        cached = [model(tokens[:, :9], cache=cache)]  # a prompt, then one token at a time, then two at once
        for t in range(9, 17):
            cached.append(model(tokens[:, t : t + 1], cache=cache))
        cached.append(model(tokens[:, 17:20], cache=cache))
        full = model(tokens)
    torch.testing.assert_close(torch.cat(cached, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 20


@pytest.mark.parametrize("kind", KINDS)
def test_the_uniform_control_decodes_with_the_cache_as_without_it(kind):
    """Every cached row is the mean of all values so far, the cache's included (was: of the new tokens' only)."""
    model = small_model({"kind": kind}, n_kv_heads=2, uniform_attention=True).eval()
    tokens = torch.randint(0, 37, (2, 12))
    cache = DecodingCache()
    with torch.no_grad():
        cached = [model(tokens[:, :3], cache=cache)] + [model(tokens[:, t : t + 1], cache=cache) for t in range(3, 12)]
        full = model(tokens)
    torch.testing.assert_close(torch.cat(cached, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_generation_with_the_cache_picks_the_tokens_recomputation_picks(kind):
    model = small_model({"kind": kind}).eval()
    prompt = torch.randint(0, 37, (3, 5))
    for settings in (SamplingSettings(temperature=0), SamplingSettings(temperature=0.8, top_k=10, seed=4)):
        with_cache = generate(model, prompt, 12, settings)
        without = generate(model, prompt, 12, SamplingSettings(**{**settings.__dict__, "use_cache": False}))
        assert torch.equal(with_cache, without)
        assert torch.equal(with_cache[:, :5], prompt) and with_cache.shape == (3, 17)


def test_sampling_settings():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 10.0]])
    generator = torch.Generator().manual_seed(0)
    assert next_token(logits, SamplingSettings(temperature=0), generator).item() == 4
    drawn = {next_token(logits, SamplingSettings(top_k=2), generator).item() for _ in range(200)}
    assert drawn <= {3, 4} and 4 in drawn
    # Token 4 holds > 0.99 of the mass: top-p 0.9 keeps it alone.
    assert {next_token(logits, SamplingSettings(top_p=0.9), generator).item() for _ in range(50)} == {4}
    flat = torch.zeros(1, 5)
    assert len({next_token(flat, SamplingSettings(temperature=1.0), generator).item() for _ in range(200)}) == 5
