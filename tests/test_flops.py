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


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind != "differential"])  # V1: the next test
def test_forward_flops_match_the_counter(kind):
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


def test_training_is_three_forward_passes():
    model = small_model({"kind": "vanilla"})
    assert training_flops_per_token(model, LENGTH) == 3 * forward_flops_per_token(model, LENGTH)
    assert training_flops_per_token(model, LENGTH) == _counted(model, backward=True)


def test_a_cpu_peak_is_measured_and_positive():
    peak = peak_flops(torch.device("cpu"), "fp32")
    assert peak.flops_per_second > 1e8 and peak.source.startswith("measured")
