"""Attention measurements on hand-built maps with known answers."""

import math

import pytest
import torch

from diffformer.probes.attention_stats import (
    causal_uniform_baseline,
    head_diversity,
    js_divergence,
    key_coverage,
    negative_share,
    normalized_entropy,
    span_mass,
)


def test_one_hot_row_has_zero_entropy_and_full_needle_mass():
    row = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    assert normalized_entropy(row, torch.tensor([4])).item() == pytest.approx(0.0, abs=1e-6)
    assert span_mass(row, torch.tensor([[2, 3]])).item() == 1.0
    assert span_mass(row, torch.tensor([[0, 2]])).item() == 0.0


def test_uniform_row_has_entropy_one_and_proportional_mass():
    row = torch.full((1, 8), 1 / 8)
    assert normalized_entropy(row, torch.tensor([7])).item() == pytest.approx(1.0)
    assert span_mass(row, torch.tensor([[2, 5]])).item() == pytest.approx(3 / 8)
    causal = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # query 1 sees keys 0 and 1
    assert normalized_entropy(causal, torch.tensor([1])).item() == pytest.approx(1.0)


def test_js_divergence_bounds_and_head_diversity():
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert js_divergence(p, q).item() == pytest.approx(math.log(2))
    assert js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-9)
    identical = torch.tensor([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    assert head_diversity(identical).item() == pytest.approx(0.0, abs=1e-9)
    opposite = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert head_diversity(opposite).item() == pytest.approx(math.log(2))


def test_negative_share_of_a_differential_row():
    assert negative_share(torch.tensor([0.6, -0.2, 0.4, -0.2])).item() == pytest.approx(0.4 / 1.4)
    assert negative_share(torch.tensor([0.5, 0.5])).item() == 0.0


def test_uniform_causal_attention_covers_every_key_exactly_at_the_baseline():
    length = 6
    uniform = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1)[:, None]
    coverage = key_coverage(uniform)
    assert coverage.min == pytest.approx(1.0)
    assert coverage.below_0_1 == 0.0
    assert causal_uniform_baseline(3).tolist() == pytest.approx([1 + 1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3])


def test_a_sink_explains_every_other_key_away():
    length = 10
    sink = torch.zeros(length, length)
    sink[:, 0] = 1.0  # every query attends only to the first token
    coverage = key_coverage(sink)
    assert coverage.min == 0.0
    assert coverage.below_0_01 == pytest.approx(0.9)
    assert coverage.largest_share == pytest.approx(1.0)
