"""Named hook points (model/hooks.py): names, run with cache, run with hooks, for every kind and option variant."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, small_model

from diffformer.model.capture import capture_attention
from diffformer.model.decoding import DecodingCache
from diffformer.model.editing import edit_heads
from diffformer.model.hooks import hook_points, hooks, run_with_cache, run_with_hooks

VARIANTS = list(ATTENTION_VARIANTS)
DIFFERENTIAL = [name for name, attention in ATTENTION_VARIANTS.items() if attention["kind"].startswith("differential")]


def _model(variant: str, position: str = "rope"):
    model = small_model(ATTENTION_VARIANTS[variant], position=position)
    return model.eval()


def _tokens(length: int = 12, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 37, (batch, length), generator=torch.Generator().manual_seed(1))


def test_names_follow_transformer_lens():
    names = list(hook_points(_model("differential")))
    assert names[0] == "hook_embed"
    for block in range(2):
        for part in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
            assert f"blocks.{block}.{part}" in names
        for part in ("hook_q", "hook_k", "hook_v", "hook_pattern", "hook_pattern_1", "hook_pattern_2", "hook_lambda"):
            assert f"blocks.{block}.attn.{part}" in names
        assert f"blocks.{block}.attn.hook_z" in names
    assert "blocks.0.attn.hook_lambda" not in hook_points(_model("vanilla"))


@pytest.mark.parametrize("position", ["rope", "alibi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_hooks_that_return_their_input_change_no_logit(variant, position):
    model, tokens = _model(variant, position), _tokens()
    with torch.no_grad():
        plain = model(tokens)
        identity = run_with_hooks(model, tokens, [(lambda name: True, lambda activation, hook: activation)])
        kept = run_with_hooks(model, tokens, [(lambda name: True, lambda activation, hook: None)])
    # Pattern hooks switch the layer to explicit maps: equal to the fused path up to rounding.
    torch.testing.assert_close(identity, plain, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(kept, plain, atol=2e-5, rtol=1e-5)
    assert not any(point.functions for point in hook_points(model).values())  # all removed afterwards


@pytest.mark.parametrize("variant", VARIANTS)
def test_zeroing_a_heads_pattern_equals_ablating_that_head(variant):
    model, tokens = _model(variant), _tokens()
    heads = model.blocks[1].attention.output_heads

    def zero_pattern(pattern, hook):
        pattern = pattern.clone()
        pattern[:, heads - 1] = 0
        return pattern

    def zero_output(layer, outputs):
        if layer != 1:
            return outputs
        outputs = outputs.clone()
        outputs[:, heads - 1] = 0
        return outputs

    with torch.no_grad():
        hooked = run_with_hooks(model, tokens, [("blocks.1.attn.hook_pattern", zero_pattern)])
        with edit_heads(model, zero_output):
            ablated = model(tokens)
        plain = model(tokens)
    torch.testing.assert_close(hooked, ablated, atol=2e-5, rtol=1e-5)
    assert (hooked - plain).abs().max() > 1e-3  # the head mattered, so the test can fail


@pytest.mark.parametrize("variant", DIFFERENTIAL)
def test_the_effective_map_is_first_minus_lambda_times_second(variant):
    model, tokens = _model(variant), _tokens()
    with torch.no_grad():
        _, cache = run_with_cache(model, tokens, names=lambda name: "attn.hook_" in name and "hook_z" not in name)
    for layer in range(2):
        parts = [cache[f"blocks.{layer}.attn.hook_{part}"] for part in ("pattern_1", "pattern_2", "lambda", "pattern")]
        first, second, lam, effective = parts  # λ: a scalar (V1) or (B, heads, T, 1) (V2)
        torch.testing.assert_close(first - lam * second, effective)
        assert first.shape == (2, model.blocks[layer].attention.output_heads, 12, 12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_patterns_are_the_captured_maps(variant):
    model, tokens = _model(variant), _tokens()
    with torch.no_grad():
        _, cache = run_with_cache(model, tokens, names=["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"])
        with capture_attention(model) as capture:
            model(tokens)
    for layer in range(2):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], capture.maps[layer].weights.float())


def test_editing_a_pattern_changes_the_output_and_lambda_hooks_reach_the_fast_path():
    model, tokens = _model("differential"), _tokens()
    with torch.no_grad():
        plain = model(tokens)
        no_subtraction = run_with_hooks(
            model, tokens, [("blocks.0.attn.hook_lambda", lambda lam, hook: torch.zeros_like(lam))]
        )
        with hooks(model, [("blocks.0.attn.hook_lambda", lambda lam, hook: torch.zeros_like(lam))]):
            _, cache = run_with_cache(
                model, tokens, names=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_pattern_1"]
            )
    assert (no_subtraction - plain).abs().max() > 1e-3
    # λ = 0: the effective map is A1 alone.
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], cache["blocks.0.attn.hook_pattern_1"])


def test_patching_the_residual_stream_at_every_position_gives_the_other_runs_logits():
    model = _model("vanilla")
    clean, corrupt = _tokens(), _tokens()
    corrupt[:, 3] = (corrupt[:, 3] + 1) % 37
    with torch.no_grad():
        clean_logits, cache = run_with_cache(model, clean, names=["blocks.1.hook_resid_pre"])
        patched = run_with_hooks(
            model, corrupt, [("blocks.1.hook_resid_pre", lambda x, hook: cache["blocks.1.hook_resid_pre"])]
        )
        corrupt_logits = model(corrupt)
    torch.testing.assert_close(patched, clean_logits)
    assert (corrupt_logits - clean_logits).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["vanilla", "differential", "differential_v2", "doubly_normalized"])
def test_hooks_during_cached_decoding_see_the_new_positions(variant):
    model, tokens = _model(variant), _tokens(length=10, batch=1)
    with torch.no_grad():
        _, full = run_with_cache(model, tokens, names=["blocks.1.hook_resid_post", "blocks.1.attn.hook_q"])
        cache = DecodingCache()
        model(tokens[:, :9], cache=cache)
        _, step = run_with_cache_step(model, tokens[:, 9:], cache)
    torch.testing.assert_close(
        step["blocks.1.hook_resid_post"], full["blocks.1.hook_resid_post"][:, 9:], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(step["blocks.1.attn.hook_q"], full["blocks.1.attn.hook_q"][:, 9:], atol=1e-5, rtol=1e-5)


def run_with_cache_step(model, tokens, decoding_cache):
    recorded = {}

    def record(activation, hook):
        recorded[hook.name] = activation

    with hooks(model, [("blocks.1.hook_resid_post", record), ("blocks.1.attn.hook_q", record)]):
        logits = model(tokens, cache=decoding_cache)
    return logits, recorded


def test_pattern_hooks_refuse_a_decoding_cache_in_one_line():
    model, tokens = _model("vanilla"), _tokens(batch=1)
    with torch.no_grad(), hooks(model, [("blocks.0.attn.hook_pattern", lambda p, hook: p)]):
        with pytest.raises(ValueError, match="decoding cache"):
            model(tokens, cache=DecodingCache())


def test_bad_names_and_bad_returns_are_one_line_errors():
    model, tokens = _model("vanilla"), _tokens()
    with pytest.raises(ValueError, match="no hook point 'blocks.0.attn.hook_patern'.*hook_"):
        run_with_hooks(model, tokens, [("blocks.0.attn.hook_patern", lambda p, hook: p)])
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        run_with_hooks(model, tokens, [("blocks.0.hook_resid_pre", lambda x, hook: x[:, :2])])
    assert not any(point.functions for point in hook_points(model).values())


def test_attention_renders_in_a_notebook():
    from diffformer.probes.head_maps import attention_view

    view = attention_view(_model("differential"), _tokens(batch=1))
    page = view._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "A2" in page and "&lt;canvas" in page
    assert len(view.layers) == 2 and view.labels == [str(t) for t in _tokens(batch=1)[0].tolist()]
