"""Head ablation and low-bit evaluation on hand-built cases (docs/formulas.md §20, §21)."""

import json

import pytest
import torch
from conftest import KINDS, small_model
from test_probe import _train
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.data import prepare_data
from diffformer.data.mqar import MqarTask
from diffformer.model.editing import edit_heads
from diffformer.probes.ablation import ablate_heads
from diffformer.quantization import QuantizationScheme, fake_quantize, quantized

runner = CliRunner()


def _zeroing(layer: int, head: int):
    def edit(at, heads):
        if at == layer:
            heads = heads.clone()
            heads[:, head] = 0
        return heads

    return edit


@pytest.mark.parametrize("kind", KINDS)
def test_zeroing_a_heads_output_is_zeroing_its_columns_of_the_residual_projection(kind):
    """The edit sees each output head (a V1 pair is one) just before the residual projection, for every kind."""
    model = small_model({"kind": kind}).eval()
    tokens = torch.randint(0, 37, (2, 11))
    with torch.no_grad(), edit_heads(model, _zeroing(1, 1)):
        ablated = model(tokens)
    attention = model.blocks[1].attention
    projection = attention.residual_projection.weight
    width = projection.shape[1] // attention.output_heads
    with torch.no_grad():
        projection[:, width : 2 * width] = 0
        expected = model(tokens)
    torch.testing.assert_close(ablated, expected, rtol=1e-5, atol=1e-6)
    assert model.instruments.head_edit is None, "released after the block"


def test_removing_a_head_the_model_does_not_use_changes_nothing_and_a_used_one_is_found():
    torch.manual_seed(0)
    task = MqarTask(task="mqar", vocab_size=32, num_pairs=3, seq_len=24)
    model = small_model({"kind": "vanilla"}, vocab_size=32).eval()
    attention = model.blocks[0].attention
    with torch.no_grad():
        attention.out_proj.weight[:, 16:24] = 0  # head 2 of layer 0 writes nothing
        model.lm_head.weight.mul_(5)
    data = prepare_data(task)
    report = ablate_heads(model, data, seed=1, batches=4, batch_size=16, device="cpu", precision="fp32")
    assert report.sequences == 64 and len(report.cells) == 2 * 4 * 2
    for cell in report.cells:
        if (cell.layer, cell.head) == (0, 2):
            assert cell.loss_change == 0.0 and cell.exact_match_change == 0.0 and not cell.hurts
    unused = [c for c in report.cells if (c.layer, c.head) == (0, 2)]
    assert {c.mode for c in unused} == {"zero", "mean"}
    assert 2 not in report.retrieval_heads.get(0, [])
    moved = max(report.cells, key=lambda c: abs(c.loss_change))
    assert moved.loss_change != 0 and moved.loss_change_se > 0


TINY_MQAR = """
name: learns
seed: 0
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 32}
data: {task: mqar, vocab_size: 32, num_pairs: 2, seq_len: 16}
train: {steps: 300, batch_size: 32, lr: 1.0e-2, warmup_steps: 20, log_every: 50, checkpoint_every: 300, precision: fp32}
eval: {every: 300, batches: 2}
"""


def test_a_trained_models_retrieval_heads_are_named_and_their_removal_breaks_the_task(tmp_path):
    """MQAR learnt in 300 steps (~0.95 exact match): the heads it needs are listed, each with a drop whose
    interval lies below zero, and the heads it does not list change exact match by less than their interval."""
    (tmp_path / "learns.yaml").write_text(TINY_MQAR + f"output: {tmp_path / 'learns'}\n")
    assert runner.invoke(app, ["train", str(tmp_path / "learns.yaml")]).exit_code == 0
    result = runner.invoke(app, ["probe", str(tmp_path / "learns"), "-P", "ablation", "-P", "attention", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ablation = report["ablation"]
    assert ablation["exact_match"] > 0.8, "the model learnt the task"
    needed = {(int(layer), head) for layer, heads in ablation["retrieval_heads"].items() for head in heads}
    assert needed, "some head carries the retrieval"
    for cell in ablation["cells"]:
        drop_interval_top = cell["exact_match_change"] + 1.96 * cell["exact_match_change_se"]
        if (cell["layer"], cell["head"]) not in needed:
            assert drop_interval_top >= 0, "an unlisted head's removal is not detectably harmful"
    worst = min(ablation["cells"], key=lambda c: c["exact_match_change"])
    assert (worst["layer"], worst["head"]) in needed and worst["exact_match_change"] < -0.1
    at_heads = report["attention"]["at_retrieval_heads"]
    assert at_heads and all(str(layer) in next(iter(at_heads.values())) for layer, _ in needed)


def test_four_bit_rounding_of_a_known_tensor_is_the_formula():
    x = torch.tensor([[-1.0, -0.5, 0.1, 0.3], [0.75, 1.0, -0.02, 0.0]])
    scale = 1.0 / 7  # absmax 1, 2^(4−1) − 1 = 7 levels each side
    expected = torch.round(x / scale).clamp(-7, 7) * scale
    torch.testing.assert_close(fake_quantize(x, 4), expected)
    assert fake_quantize(x, 4).unique().numel() <= 15
    rows = fake_quantize(x, 4, channel_dim=0)  # per row: row 0's absmax 1, row 1's 1 → same here, but …
    torch.testing.assert_close(rows, expected)
    y = torch.tensor([[0.7, -0.35], [0.02, 0.01]])
    per_row = fake_quantize(y, 4, channel_dim=0)
    torch.testing.assert_close(per_row[1], torch.round(y[1] / (0.02 / 7)).clamp(-7, 7) * (0.02 / 7))
    torch.testing.assert_close(fake_quantize(y, 4)[1], torch.zeros(2), msg="one scale: the small row rounds to 0")
    error = (fake_quantize(x, 8) - x).abs().max()
    assert 0 < error <= 0.5 / 127 + 1e-7, "8 bits: within half a level"


def test_quantized_rounds_every_linear_and_restores_the_model():
    model = small_model({"kind": "differential"}).eval()
    tokens = torch.randint(0, 37, (2, 9))
    before = {name: p.clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        plain = model(tokens)
        with quantized(model, QuantizationScheme(4, 4)):
            weight = model.blocks[0].attention.q_proj.weight
            assert weight.unique().numel() <= 15, "4-bit weights: at most 15 levels"
            rounded = model(tokens)
        with quantized(model, QuantizationScheme.parse("w16a16")):
            identity = model(tokens)
    assert (rounded - plain).abs().max() > 1e-3
    torch.testing.assert_close(identity, plain, rtol=0, atol=0)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_eval_quantize_reports_each_scheme_with_its_paired_change(tmp_path):
    run = _train(tmp_path, "q", attention={"kind": "vanilla"})
    result = runner.invoke(app, ["eval", str(run), "--quantize", "w8a8", "--quantize", "w2a16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [q["scheme"] for q in report["quantized"]] == ["w8a8 (tensor)", "w2a16 (tensor)"]
    for q in report["quantized"]:
        change = q["change"]["exact_match"]
        assert change["delta"] == pytest.approx(q["metrics"]["exact_match"] - report["metrics"]["exact_match"])
        assert change["low"] <= change["delta"] <= change["high"]
        assert q["change"]["loss"]["delta"] == pytest.approx(q["metrics"]["loss"] - report["metrics"]["loss"], abs=1e-9)
    bad = runner.invoke(app, ["eval", str(run), "--quantize", "int4"])
    assert bad.exit_code == 2 and "expected wBITSaBITS" in bad.output and "Traceback" not in bad.output


def test_probe_ablation_writes_every_cell_and_its_picture(tmp_path):
    run = _train(tmp_path, "a", attention={"kind": "differential"})
    result = runner.invoke(app, ["probe", str(run), "-P", "ablation", "--held-out-sequences", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cells = report["ablation"]["cells"]
    assert len(cells) == 2 * 2 * 2, "2 layers × 2 differential pairs × zero and mean"
    assert all(0 <= c["exact_match"] <= 1 and c["exact_match_low"] <= c["exact_match"] for c in cells)
    assert any(name.endswith("ablation.png") for name in report["files"])
