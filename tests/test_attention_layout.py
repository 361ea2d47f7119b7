"""Attention layouts (docs/formulas.md §23): keys a task masks beyond causality, honoured by every kind.

The masked copy task (data.output_attention: source) hides earlier copy positions from each copy position.
Every kind must leave masked keys out exactly as its plain formula does (rows, and for doubly normalized
attention the column normalisers too), in its fast path, its captured maps, its decoding cache and the
uniform control; and then no logit at a copy position can depend on an earlier copied token.
"""

import numpy as np
import pytest
import torch
from conftest import ATTENTION_VARIANTS, KINDS, small_model
from plain_formulas import plain_formula

from diffformer.cli import app
from diffformer.data.copying import CopyTask
from diffformer.experiments import LANGUAGE_MODEL
from diffformer.model.attention import AttentionCall
from diffformer.model.capture import AttentionCapture, capture_attention
from diffformer.model.decoding import DecodingCache

SOURCE_ONLY = {"task": "copy", "distribution": "hard", "length": 5, "vocab": 8, "output_attention": "source"}


def masked_copy_keys(length: int = 5) -> torch.Tensor:
    return torch.from_numpy(CopyTask.model_validate(SOURCE_ONLY | {"length": length}).masked_keys())


def test_the_masked_copy_layout_hides_exactly_the_earlier_copy_positions():
    masked = masked_copy_keys(3).numpy()  # x1 x2 x3 | sep | y1 y2 y3 at positions 0..6
    expected = np.zeros((7, 7), dtype=bool)
    expected[5, 4] = True
    expected[6, 4] = expected[6, 5] = True
    assert (masked == expected).all()
    assert CopyTask.model_validate(SOURCE_ONLY | {"output_attention": "causal"}).masked_keys() is None


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_every_kind_with_a_layout_equals_its_plain_formula_with_the_mask(variant, position):
    model = small_model(ATTENTION_VARIANTS[variant], position, n_kv_heads=2)
    attention = model.blocks[1].attention
    masked = masked_copy_keys()
    x = torch.randn(2, 11, 32)
    expected, plain_maps = plain_formula(model.config.attention.kind)(attention, x, masked)
    unmasked, _ = plain_formula(model.config.attention.kind)(attention, x)
    assert not torch.allclose(expected, unmasked, atol=1e-3), "the mask must change something for this test to mean it"
    rows = [10, 7, 3]
    capture = AttentionCapture(rows)
    with torch.no_grad():
        actual = attention(x, AttentionCall(capture=capture, masked_keys=masked))
    torch.testing.assert_close(actual.double(), expected, atol=2e-5, rtol=1e-4)
    maps = capture.maps[1]
    for b in range(2):
        for h, head_maps in enumerate(plain_maps[b]):
            if isinstance(head_maps, tuple):
                a1, a2, lam = head_maps
                expected_rows = a1[rows] - (lam[rows] if lam.dim() else lam) * a2[rows]
                assert (maps.differential.a1[b, h][masked[rows]] == 0).all()
                assert (maps.differential.a2[b, h][masked[rows]] == 0).all()
            else:
                expected_rows = head_maps[rows]
            torch.testing.assert_close(maps.weights[b, h].double(), expected_rows, atol=1e-5, rtol=1e-4)
            assert (maps.weights[b, h][masked[rows]] == 0).all()


def masked_copy_model(attention: dict, **overrides):
    model = small_model(attention, max_seq_len=11, **overrides)
    model.mask_keys(masked_copy_keys())
    return model.eval()


@pytest.mark.parametrize("variant", [*ATTENTION_VARIANTS, "uniform_control"])
def test_no_copy_logit_depends_on_an_earlier_copied_token(variant):
    """Changing the copied token at position 7 changes no logit at 8, 9, 10 (any depth), while changing a
    source token does — so the check can fail; without the layout the copied token is seen."""
    attention, overrides = (
        ({"kind": "vanilla"}, {"uniform_attention": True})
        if variant == "uniform_control"
        else (
            ATTENTION_VARIANTS[variant],
            {},
        )
    )
    model = masked_copy_model(attention, **overrides)
    tokens = torch.randint(2, 37, (2, 11))
    earlier_copy, source = tokens.clone(), tokens.clone()
    earlier_copy[:, 7] = (tokens[:, 7] + 5) % 35 + 2
    source[:, 2] = (tokens[:, 2] + 5) % 35 + 2
    with torch.no_grad():
        base, after_copy, after_source = model(tokens), model(earlier_copy), model(source)
        model.masked_keys = None
        causal_base, causal_copy = model(tokens), model(earlier_copy)
    torch.testing.assert_close(after_copy[:, 8:], base[:, 8:], atol=1e-6, rtol=0)
    assert not torch.allclose(after_copy[:, 7], base[:, 7]), "a position still sees its own token"
    assert not torch.allclose(after_source[:, 8:], base[:, 8:], atol=1e-4)
    assert not torch.allclose(causal_copy[:, 8:], causal_base[:, 8:], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_a_layout_decodes_with_the_cache_as_in_one_pass_or_refuses_in_one_line(kind):
    """Doubly normalized attention refuses: under a layout a row's column normalisers need the scores of
    every query it sees, which its cache (one running log-sum-exp per key) does not keep."""
    model = masked_copy_model({"kind": kind})
    tokens = torch.randint(2, 37, (2, 11))
    with torch.no_grad():
        full = model(tokens)
        cache = DecodingCache()
        try:
            steps = [model(tokens[:, :4], cache)] + [model(tokens[:, t : t + 1], cache) for t in range(4, 11)]
        except ValueError as refusal:
            assert kind == "doubly_normalized" and "does not decode with a cache" in str(refusal)
            return
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=1e-4)


def test_a_sequence_longer_than_the_layout_is_refused():
    model = masked_copy_model({"kind": "vanilla"})
    with pytest.raises(ValueError, match="exceeds the 11 positions of this run's attention layout"):
        model(torch.randint(2, 37, (1, 12)))


def test_a_layout_must_leave_each_position_its_own_key():
    model = small_model({"kind": "vanilla"})
    with pytest.raises(ValueError, match="its own key"):
        model.mask_keys(torch.eye(5, dtype=torch.bool))


def test_a_masked_copy_run_keeps_its_layout_when_loaded_and_refuses_export(tmp_path, cli_runner=None):
    from typer.testing import CliRunner

    from diffformer.checkpoint import load_trained_model

    recipe = tmp_path / "copy.yaml"
    recipe.write_text(
        "name: masked-copy\nseed: 1\nmodel: {d_model: 32, n_layers: 1, n_heads: 2, max_seq_len: 16}\n"
        "data: {task: copy, distribution: hard, length: 6, output_attention: source}\n"
        "train: {steps: 4, batch_size: 4, lr: 3.0e-3, warmup_steps: 1, log_every: 2, checkpoint_every: 4}\n"
        f"eval: {{every: 4, batches: 1}}\noutput: {tmp_path / 'run'}\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["train", str(recipe)]).exit_code == 0
    loaded = load_trained_model(tmp_path / "run")
    assert torch.equal(loaded.model.masked_keys, masked_copy_keys(6))
    tokens = torch.randint(2, 8, (1, 13))
    with torch.no_grad(), capture_attention(loaded.model) as capture:
        loaded.model(tokens)
    assert (capture.maps[0].weights[0, :, 9, 8] == 0).all() and (capture.maps[0].weights[0, :, 9, 2] > 0).all()
    result = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "hf")])
    assert result.exit_code != 0 and "masks keys beyond causality" in result.output
    assert not (tmp_path / "hf").exists()
    assert LANGUAGE_MODEL.build_model(loaded.model.config, {}).masked_keys is None


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_under_a_layout_gives_what_full_passes_give(kind):
    """generate uses the cache where it reproduces full passes, and recomputes where a kind cannot cache."""
    from diffformer.generation import SamplingSettings, generate

    model = masked_copy_model({"kind": kind})
    prompt = torch.randint(2, 37, (2, 6))
    cached = generate(model, prompt, 5, SamplingSettings(temperature=0))
    recomputed = generate(model, prompt, 5, SamplingSettings(temperature=0, use_cache=False))
    assert torch.equal(cached, recomputed)
    assert model.decodes_with_cache() == (kind != "doubly_normalized")
