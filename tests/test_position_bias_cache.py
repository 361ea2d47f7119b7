"""ALiBi's bias is built once per (slopes, query range, keys, device, dtype) and shared by layers (issue 28)."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, small_model

import diffformer.model.position as position


def test_the_cached_bias_is_the_rebuilt_one_and_layers_share_it():
    slopes = position.alibi_slopes(4)
    same_values = slopes.clone()  # another layer's buffer with the same slopes
    first = position.alibi_bias_for_range(slopes, 3, 5, 8)
    expected = position.alibi_bias(slopes, torch.arange(3, 8), 8)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    assert position.alibi_bias_for_range(same_values, 3, 5, 8) is first, "one entry for every layer with these slopes"
    masked = position.alibi_bias_for_range(slopes, 3, 5, 8, causal_mask=True)
    assert torch.isinf(masked[:, 0, 4:]).all() and torch.equal(masked[:, 0, :4], expected[:, 0, :4])
    other = position.alibi_bias_for_range(position.alibi_slopes(2), 3, 5, 8)
    assert other.shape == (2, 5, 8)


def test_the_cache_keeps_a_bounded_number_of_entries():
    slopes = position.alibi_slopes(2)
    for length in range(1, 3 * position.BIAS_CACHE_ENTRIES):
        position.alibi_bias_for_range(slopes, 0, length, length)
    assert len(position._bias_cache) <= position.BIAS_CACHE_ENTRIES


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_cached_and_rebuilt_biases_give_the_same_logits_and_gradients(variant, monkeypatch):
    """Eval first (the cache fills under no_grad), then a training step: the same numbers as without a cache."""
    tokens = torch.randint(0, 37, (2, 20))
    results = []
    for cached in (True, False):
        monkeypatch.setattr(position, "USE_BIAS_CACHE", cached)
        torch.manual_seed(0)
        model = small_model(ATTENTION_VARIANTS[variant], "alibi")
        with torch.no_grad():
            model(tokens)
        logits = model(tokens)
        logits.sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for cached_grad, rebuilt_grad in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(cached_grad, rebuilt_grad, rtol=0, atol=0)
