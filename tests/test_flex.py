"""FlexAttention (model/flex.py): the softmax kinds with ALiBi or an attention layout give the SDPA path's
outputs through it — eagerly (FlexAttention's unfused reference on CPU) and compiled."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, small_model

from diffformer.errors import RecipeError
from diffformer.model.decoding import DecodingCache
from diffformer.model.flex import flex_causal_attention, flex_wanted
from diffformer.model.position import alibi_bias_for_range, alibi_slopes

pytest.importorskip("torch.nn.attention.flex_attention")
# The kinds whose maps are softmaxes of their own scores reach causal_attention, hence FlexAttention.
SOFTMAX_KINDS = ("vanilla", "differential", "differential_v2")
SOFTMAX_VARIANTS = [name for name, attention in ATTENTION_VARIANTS.items() if attention["kind"] in SOFTMAX_KINDS]


def _layout(length: int) -> torch.Tensor:
    hidden = torch.zeros(length, length, dtype=torch.bool)
    hidden[6:, 2:5] = True  # later positions may not see keys 2–4
    return hidden


def _outputs(model, tokens, flex: str, monkeypatch):
    monkeypatch.setenv("DIFFFORMER_FLEX", flex)
    with torch.no_grad():
        return model(tokens)


@pytest.mark.parametrize("variant", SOFTMAX_VARIANTS)
@pytest.mark.parametrize("setting", ["alibi", "layout", "alibi+layout"])
def test_flex_attention_equals_the_sdpa_path(variant, setting, monkeypatch):
    position = "alibi" if "alibi" in setting else "rope"
    model = small_model(ATTENTION_VARIANTS[variant], position).eval()
    if "layout" in setting:
        model.mask_keys(_layout(12))
    tokens = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(0))
    sdpa, flex = _outputs(model, tokens, "off", monkeypatch), _outputs(model, tokens, "on", monkeypatch)
    torch.testing.assert_close(flex, sdpa, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", SOFTMAX_VARIANTS)
def test_a_full_pass_through_flex_attention_equals_cached_decoding(variant, monkeypatch):
    monkeypatch.setenv("DIFFFORMER_FLEX", "on")
    model = small_model(ATTENTION_VARIANTS[variant], "alibi").eval()
    tokens = torch.randint(0, 37, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        cache = DecodingCache()
        model(tokens[:, :7], cache=cache)
        step = model(tokens[:, 7:], cache=cache)
    torch.testing.assert_close(step, full[:, 7:], atol=2e-5, rtol=1e-5)


def test_compiled_flex_attention_equals_the_alibi_mask():
    q, k, v = (torch.randn(2, 4, 40, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    slopes = alibi_slopes(4)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=alibi_bias_for_range(slopes, 0, 40, 40, causal_mask=True)
    )
    compiled = torch.compile(lambda q, k, v: flex_causal_attention(q, k, v, slopes, 0, None), fullgraph=False)
    torch.testing.assert_close(compiled(q, k, v), expected, atol=2e-5, rtol=1e-5)


def test_the_setting_is_read_and_checked(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("DIFFFORMER_FLEX", "auto")
    assert not flex_wanted(cpu)  # auto: CUDA only
    monkeypatch.setenv("DIFFFORMER_FLEX", "on")
    with torch.no_grad():
        assert flex_wanted(cpu)
    assert not flex_wanted(cpu)  # FlexAttention has no CPU backward: training keeps SDPA there
    monkeypatch.setenv("DIFFFORMER_FLEX", "yes")
    with pytest.raises(RecipeError, match="DIFFFORMER_FLEX must be one of auto, on, off"):
        flex_wanted(cpu)


def test_training_on_cpu_with_flex_on_keeps_the_sdpa_path(monkeypatch):
    model = small_model({"kind": "vanilla"}, "alibi")
    tokens = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(0))
    monkeypatch.setenv("DIFFFORMER_FLEX", "on")
    model(tokens).sum().backward()  # no NotImplementedError from FlexAttention's missing CPU backward
    assert model.blocks[0].attention.q_proj.weight.grad is not None
