"""Each attention kind equals a plain transcription of its formula, and its maps obey their properties."""

import math

import plain_formulas as plain
import pytest
import torch
from conftest import ATTENTION_VARIANTS, KINDS, small_model
from plain_formulas import plain_formula
from reference_diffattn import ReferenceMultiheadDiffAttn

from diffformer import ModelConfig, Transformer, capture_attention
from diffformer.model.attention import AttentionCall, kind_entry
from diffformer.model.capture import AttentionCapture, Rows


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("position", ["rope", "none", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_attention_equals_plain_formula(variant, position, n_kv_heads):
    model = small_model(ATTENTION_VARIANTS[variant], position, n_kv_heads)
    attention = model.blocks[1].attention  # layer 1: λ_init differs from layer 0's
    x = torch.randn(2, 11, 32)
    expected, _ = plain_formula(model.config.attention.kind)(attention, x)
    with torch.no_grad():
        actual = attention(x)
    assert actual.shape == (2, 11, 32)
    torch.testing.assert_close(actual.double(), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_captured_maps_equal_plain_maps(variant, position):
    model = small_model(ATTENTION_VARIANTS[variant], position, n_kv_heads=2)
    attention = model.blocks[1].attention
    x = torch.randn(2, 11, 32)
    _, plain_maps = plain_formula(model.config.attention.kind)(attention, x)
    rows = [10, 3, 7]
    capture = AttentionCapture(rows)
    with torch.no_grad():
        attention(x, AttentionCall(capture=capture))
    maps = capture.maps[1]
    for b in range(2):
        for h, head_maps in enumerate(plain_maps[b]):
            if isinstance(head_maps, tuple):  # the differential kinds: (A1, A2, λ)
                a1, a2, lam = head_maps
                lam = lam[rows] if lam.dim() else lam
                torch.testing.assert_close(maps.differential.a1[b, h].double(), a1[rows], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(maps.differential.a2[b, h].double(), a2[rows], atol=1e-5, rtol=1e-4)
                captured_lam = (
                    maps.differential.lam if maps.differential.lam.dim() == 0 else maps.differential.lam[b, h]
                )
                torch.testing.assert_close(captured_lam.double(), lam.squeeze(-1), atol=1e-6, rtol=1e-5)
                expected = a1[rows] - lam * a2[rows]
            else:
                expected = head_maps[rows]
            torch.testing.assert_close(maps.weights[b, h].double(), expected, atol=1e-5, rtol=1e-4)
    assert maps.query_positions.tolist() == rows


@pytest.mark.parametrize("kind", KINDS)
def test_captured_rows_are_what_the_registry_declares(kind):
    """Distributions sum to 1 and are non-negative; signed rows sum to 1 − λ; unnormalised rows are
    non-negative with no sum; the capture labels each map with its kind's declaration."""
    model = small_model({"kind": kind}).eval()
    with torch.no_grad(), capture_attention(model) as capture:
        model(torch.randint(0, 37, (2, 13)))
    declared = kind_entry(kind).rows
    for maps in capture.maps.values():
        assert maps.rows == declared
        sums = maps.weights.sum(-1)
        if declared == Rows.DISTRIBUTION:
            assert (maps.weights >= 0).all()
            torch.testing.assert_close(sums, torch.ones_like(sums))
        elif declared == Rows.SIGNED:
            lam = maps.differential.lam
            torch.testing.assert_close(sums, (1 - lam).expand_as(sums) if lam.dim() == 0 else 1 - lam)
        else:
            assert declared == Rows.UNNORMALISED and (maps.weights >= 0).all()
            assert not torch.allclose(sums, torch.ones_like(sums))
    with torch.no_grad(), capture_attention(small_model({"kind": kind}, uniform_attention=True)) as uniform:
        uniform.maps.clear()
    assert uniform.rows == Rows.DISTRIBUTION, "the uniform control's rows are distributions whatever the kind"


def test_capture_does_not_change_the_output_and_is_released():
    model = small_model(ATTENTION_VARIANTS["doubly_normalized"])
    tokens = torch.randint(0, 37, (2, 13))
    with torch.no_grad():
        before = model(tokens)
        with capture_attention(model, query_positions=[-1], layers=[0]) as capture:
            during = model(tokens)
        after = model(tokens)
    torch.testing.assert_close(during, before)
    torch.testing.assert_close(after, before)
    assert set(capture.maps) == {0}
    assert capture.maps[0].weights.shape == (2, 4, 1, 13)
    assert model.instruments.capture is None, "released after the block"


def test_reference_differential_state_dict_loads_strictly_and_matches():
    config = ModelConfig(
        vocab_size=37, d_model=64, n_layers=3, n_heads=8, position="none", attention={"kind": "differential"}
    )
    ours = Transformer(config).blocks[2].attention
    reference = ReferenceMultiheadDiffAttn(embed_dim=64, depth=2, num_heads=4)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(reference.state_dict())
    assert ours.lambda_init == pytest.approx(reference.lambda_init)
    x = torch.randn(3, 17, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-4)


def test_lambda_init_follows_the_schedule_per_layer():
    def layers(lambda_init):
        config = ModelConfig(
            vocab_size=11,
            d_model=32,
            n_layers=5,
            n_heads=4,
            attention={"kind": "differential", "lambda_init": lambda_init},
        )
        return [block.attention.lambda_init for block in Transformer(config).blocks]

    assert layers({"schedule": "exp"}) == pytest.approx([0.2, 0.35551, 0.47071, 0.55606, 0.61928], abs=1e-4)
    assert layers({"schedule": "exp"}) == pytest.approx([0.8 - 0.6 * math.exp(-0.3 * layer) for layer in range(5)])
    assert layers({"schedule": "constant", "value": 0.5}) == [0.5] * 5


def test_differential_adds_six_d_head_parameters_per_layer():
    def count(kind):
        config = ModelConfig(vocab_size=101, d_model=64, n_layers=3, n_heads=8, n_kv_heads=4, attention={"kind": kind})
        return Transformer(config).num_parameters()

    assert count("differential") == count("vanilla") + 6 * (64 // 8) * 3


def test_doubly_normalized_rows_sum_to_one_and_every_key_keeps_its_share():
    model = small_model({"kind": "doubly_normalized", "sink": False})
    with torch.no_grad():
        model.embed.weight.mul_(30)  # sharp scores: the regime where keys get explained away
        with capture_attention(model) as capture:
            model(torch.randint(0, 37, (3, 23)))
    for maps in capture.maps.values():
        torch.testing.assert_close(maps.weights.sum(-1), torch.ones(3, 4, 23))
        received = maps.weights.sum(dim=2)  # (B, H, keys): total attention each key receives
        one_based_key = torch.arange(1, 24, dtype=torch.float32)
        assert (received >= 1 / one_based_key - 1e-6).all()


def _gradients(attention, x, direction, forward) -> list[torch.Tensor]:
    """d(forward()·direction) with respect to x and every parameter of `attention`."""
    attention.zero_grad()
    x.grad = None
    (forward() * direction).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in attention.parameters()]


@pytest.mark.parametrize("variant", ["doubly_normalized", "doubly_normalized_learned_mix"])
def test_doubly_normalized_gradients_equal_the_plain_formula(variant):
    """The blocked, recomputed-in-backward implementation has the gradients of the definition."""
    model = small_model(ATTENTION_VARIANTS[variant], "none").double()
    attention = model.blocks[0].attention
    x = torch.randn(2, 9, 32, dtype=torch.float64, requires_grad=True)
    direction = torch.randn(2, 9, 32, dtype=torch.float64)
    fast = _gradients(attention, x, direction, lambda: attention(x))
    reference = _gradients(attention, x, direction, lambda: plain.doubly_normalized(attention, x)[0])
    for got, want in zip(fast, reference):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("position", ["rope", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_sigmoid_hand_written_backward_equals_the_plain_formula(position, n_kv_heads):
    """BlockedSigmoidAttention's gradients (several query blocks) are those of σ(S + b)·V by autograd."""
    model = small_model(ATTENTION_VARIANTS["sigmoid_bias"], position, n_kv_heads)
    attention = model.blocks[1].attention
    x = torch.randn(2, 11, 32, requires_grad=True)
    direction = torch.randn(2, 11, 32)
    fast = _gradients(attention, x, direction, lambda: attention(x))
    reference = _gradients(attention, x, direction, lambda: plain_formula("sigmoid")(attention, x)[0].float())
    assert len(fast) == 5  # x, q, k, v, out
    for got, want in zip(fast, reference):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_column_log_sum_exp_is_exact_on_outlier_scores():
    """Scores hundreds apart take the exact scan; moderate ones the fast path; both match the definition."""
    from diffformer.model.attention.doubly_normalized import MASKED_SCORE, _column_prefix_logsumexp

    for spread in (3.0, 400.0):
        scores = torch.randn(2, 3, 6, 9) * spread
        carry = torch.randn(2, 3, 9) * spread
        future = torch.arange(9)[None, :] > torch.arange(3, 9)[:, None]  # queries 3..8
        masked = scores.masked_fill(future, MASKED_SCORE)
        _, log_running, shift = _column_prefix_logsumexp(masked, carry, first_query=3)
        got = log_running + shift
        expected = torch.logaddexp(carry.unsqueeze(-2).double(), masked.double().logcumsumexp(dim=-2))
        torch.testing.assert_close(got[..., ~future].double(), expected[..., ~future], atol=1e-4, rtol=1e-6)


def test_doubly_normalized_equals_plain_formula_with_outlier_logits():
    model = small_model({"kind": "doubly_normalized", "mix": 0.7}, "none")
    attention = model.blocks[0].attention
    with torch.no_grad():
        attention.q_proj.weight.mul_(60)  # scores spread over hundreds: the exact-scan fallback
        attention.k_proj.weight.mul_(60)
    x = torch.randn(1, 10, 32)
    expected, _ = plain.doubly_normalized(attention, x)
    with torch.no_grad():
        torch.testing.assert_close(attention(x).double(), expected, atol=1e-4, rtol=1e-4)
