"""Changing a future token must never change an earlier logit, for every kind × position."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, small_model

POSITIONS = ["rope", "none", "learned", "alibi"]


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("position", POSITIONS)
def test_perturbing_a_token_changes_no_earlier_logit(variant, position):
    model = small_model(ATTENTION_VARIANTS[variant], position, n_kv_heads=2).eval()
    tokens = torch.randint(0, 37, (2, 15))
    with torch.no_grad():
        original = model(tokens)
        for t in (0, 5, 11, 14):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 1 + torch.randint(0, 35, (2,))) % 37
            perturbed = model(changed)
            torch.testing.assert_close(perturbed[:, :t], original[:, :t], atol=1e-6, rtol=0)
            assert not torch.allclose(perturbed[:, t], original[:, t]), "the perturbed position itself must change"


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("position", POSITIONS)
def test_no_gradient_flows_from_a_logit_to_later_inputs(variant, position):
    model = small_model(ATTENTION_VARIANTS[variant], position, n_kv_heads=2)
    embedded = {}

    def keep_embedding(module, inputs, output):
        output.retain_grad()
        embedded["x"] = output

    model.embed.register_forward_hook(keep_embedding)
    tokens = torch.randint(0, 37, (2, 13))
    t = 6
    model(tokens)[:, t].pow(2).sum().backward()
    grad = embedded["x"].grad
    assert torch.count_nonzero(grad[:, t + 1 :]) == 0
    assert grad[:, : t + 1].abs().sum(-1).gt(0).all(), "every position up to t should influence logit t"
