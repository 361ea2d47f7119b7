"""Model FLOPs per token (docs/formulas.md §11) against PyTorch's FLOP counter on the plain (math) SDPA path."""

import pytest
import torch
from conftest import KINDS, small_model
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from diffformer.devices import peak_flops
from diffformer.model.flops import forward_flops_per_token, training_flops_per_token

LENGTH, BATCH = 24, 2


def _counted(model, backward: bool = False) -> float:
    """FLOPs per token that torch's counter sees in one forward (and backward) pass."""
    tokens = torch.randint(0, 37, (BATCH, LENGTH))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(backward):
            logits = model(tokens)
            if backward:
                logits.float().logsumexp(-1).mean().backward()
    return counter.get_total_flops() / (BATCH * LENGTH)


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind not in ("differential", "doubly_normalized")])
def test_forward_flops_match_the_counter(kind):  # V1 and doubly normalized: the next tests
    model = small_model({"kind": kind})
    for block in model.blocks:
        if hasattr(block.attention, "query_block"):
            block.attention.query_block = LENGTH  # one block: every query against all T keys, as counted
    assert forward_flops_per_token(model, LENGTH) == _counted(model)


def test_differential_counts_its_formula_not_the_zero_padding_of_its_kernel_layout():
    """The implementation pads q and k to V's width 2·d_head for fused kernels: 2·T·d extra per layer."""
    model = small_model({"kind": "differential"})
    padding = 2 * LENGTH * model.config.d_model * model.config.n_layers
    assert forward_flops_per_token(model, LENGTH) == _counted(model) - padding


def test_doubly_normalized_counts_its_formula_not_the_matmul_that_sums_its_columns():
    """The column running sum is a product with a lower-triangular (b × b) matrix per block: with one block of
    T rows, 2·T·T per query per head, which the formula leaves out as the log-sum-exp's elementwise work."""
    model = small_model({"kind": "doubly_normalized"})
    for block in model.blocks:
        block.attention.query_block = LENGTH
    running_sum = 2 * LENGTH * LENGTH * model.config.n_heads * model.config.n_layers
    assert forward_flops_per_token(model, LENGTH) == _counted(model) - running_sum


def test_training_is_three_forward_passes():
    model = small_model({"kind": "vanilla"})
    assert training_flops_per_token(model, LENGTH) == 3 * forward_flops_per_token(model, LENGTH)
    assert training_flops_per_token(model, LENGTH) == _counted(model, backward=True)


def test_a_cpu_has_no_peak_unless_one_is_given_and_mfu_is_never_shown_above_100_percent(monkeypatch):
    from diffformer.devices import _measured_peak, mfu_text
    from diffformer.errors import RecipeError

    monkeypatch.delenv("DIFFFORMER_PEAK_TFLOPS", raising=False)
    assert peak_flops(torch.device("cpu"), "fp32") is None  # a start-up measurement depends on the load
    monkeypatch.setenv("DIFFFORMER_PEAK_TFLOPS", "1.5")
    given = peak_flops(torch.device("cpu"), "fp32")
    assert given.flops_per_second == 1.5e12 and "given" in given.source
    monkeypatch.setenv("DIFFFORMER_PEAK_TFLOPS", "fast")
    with pytest.raises(RecipeError, match="DIFFFORMER_PEAK_TFLOPS='fast': expected a positive number"):
        peak_flops(torch.device("cpu"), "fp32")
    assert [mfu_text(m) for m in (0.123, None, 4.8, float("nan"))] == [
        "MFU 12.3%",
        "MFU n/a",
        "MFU n/a (above the DIFFFORMER_PEAK_TFLOPS peak)",
        "MFU n/a",
    ]
    assert _measured_peak("cpu", None, "fp32").flops_per_second > 1e8  # what precision: auto decides by
