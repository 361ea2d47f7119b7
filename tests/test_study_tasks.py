"""The tasks the learning-dynamics studies pose (docs/formulas.md §23–25), checked against hand-built cases."""

import json

import numpy as np
import pytest
import torch
import yaml

from diffformer.data import IGNORE
from diffformer.data.lookups import TwoLookupsTask
from diffformer.data.marked import FIRST_VALUE, SEPARATOR, MarkedValuesTask
from diffformer.errors import RecipeError
from diffformer.probes import attention_stats as stats
from diffformer.recipe.loading import validate_recipe


def test_marked_values_are_reported_in_order_each_from_its_own_position():
    task = MarkedValuesTask(task="marked_values", context=10, marked=3, values=5, fillers=4)
    batch = task.batch(7, "train", 0, 16)
    assert batch.inputs.shape == (16, 13) and task.task_vocab_size == 2 + 5 + 4
    for row, targets, evidence in zip(batch.inputs.numpy(), batch.targets.numpy(), batch.evidence.numpy()):
        context = row[:10]
        marked = np.flatnonzero((context >= FIRST_VALUE) & (context < FIRST_VALUE + 5))
        assert len(marked) == 3 and len(set(context[marked])) == 3  # three distinct values, the rest filler
        assert row[10] == SEPARATOR and (row[11:] == context[marked][:2]).all()  # teacher-forced v1, v2
        assert (targets[10:] == context[marked]).all() and (targets[:10] == IGNORE).all()
        assert (evidence[10:, 0] == marked).all() and (evidence[10:, 1] == marked + 1).all()
    again = task.batch(7, "train", 0, 16)
    assert torch.equal(again.inputs, batch.inputs)


def test_marked_values_refuse_what_cannot_be_laid_out():
    with pytest.raises(ValueError, match="distinct values"):
        MarkedValuesTask(task="marked_values", context=10, marked=6, values=5)
    with pytest.raises(ValueError, match="do not fit"):
        MarkedValuesTask(task="marked_values", context=3, marked=4, values=8)


def test_two_lookups_answer_the_difference_of_the_tokens_near_and_far_back():
    task = TwoLookupsTask(task="two_lookups", seq_len=10, values=5, near=1, far=3)
    batch = task.batch(3, "train", 0, 32)
    assert batch.inputs.shape == (32, 10) and batch.evidence is None and task.task_vocab_size == 5
    x, targets = batch.inputs.numpy(), batch.targets.numpy()
    assert (targets[:, :3] == IGNORE).all()
    for i in range(3, 10):
        assert (targets[:, i] == (x[:, i - 1] - x[:, i - 3]) % 5).all()
    swapped = (x[:, 0:7] - x[:, 2:9]) % 5  # far − near instead
    assert (swapped != targets[:, 3:]).any(), "the answer is not symmetric in the two lookups"
    with pytest.raises(ValueError, match="far"):
        TwoLookupsTask(task="two_lookups", near=2, far=2)


def test_source_coverage_of_hand_built_rows():
    """Two scored rows, sources at keys 1 and 3. Head 0: both rows read key 1, so source 3 gets nothing from
    any row (explained away); head 1 reads key 3 at half weight from row 1. Coverage takes the best head."""
    shares = torch.zeros(1, 2, 2, 5)
    shares[0, 0, :, 1] = 1.0
    shares[0, 1, 1, 3] = 0.5
    shares[0, 1, 1, 0] = 0.5
    shares[0, 1, 0, 0] = 1.0
    spans = torch.tensor([[[1, 2], [3, 4]]])
    coverage = stats.source_coverage(shares, spans, torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(coverage, torch.tensor([[2.0, 0.5]]))
    only_first = stats.source_coverage(shares, spans, torch.tensor([[True, False]]))
    torch.testing.assert_close(only_first, torch.tensor([[1.0, 0.0]]))  # unscored rows give nothing


def test_a_task_too_long_for_the_model_names_its_own_length_fields():
    text = (
        "name: x\nmodel: {d_model: 32, n_layers: 1, n_heads: 2, max_seq_len: 16}\n"
        "data: {task: marked_values, context: 20, marked: 4}\ntrain: {steps: 1}\n"
    )
    with pytest.raises(RecipeError, match=r"data.context \+ data.marked gives sequences of 24 tokens"):
        validate_recipe(yaml.safe_load(text), "x.yaml")


def _train(tmp_path, text: str):
    from typer.testing import CliRunner

    from diffformer.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text + f"output: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (tmp_path / "run" / "dynamics.jsonl").read_text().splitlines()]


COMMON = (
    "train: {steps: 6, batch_size: 8, lr: 3.0e-3, warmup_steps: 1, log_every: 3, checkpoint_every: 6}\n"
    "eval: {every: 6, batches: 1}\n"
)


def test_a_tracked_marked_values_run_records_source_coverage_per_layer(tmp_path):
    records = _train(
        tmp_path,
        "name: m\nseed: 1\nmodel: {d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 32, "
        "attention: {kind: doubly_normalized}}\n"
        "data: {task: marked_values, context: 12, marked: 3, values: 6, fillers: 4}\n"
        + COMMON
        + "track: {every: 3, batch_size: 4, key_coverage: true}\n",
    )
    assert [r["step"] for r in records] == [0, 3, 6]
    for layer in ("0", "1"):
        measured = records[-1]["layers"][layer]
        assert 0 <= measured["source_dropped"] <= 1 and measured["source_coverage"] > 0
        assert "key_coverage_min" in measured


def test_identical_heads_on_two_lookups_stay_identical_through_training(tmp_path):
    records = _train(
        tmp_path,
        "name: h\nseed: 1\nmodel: {d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 32, head_init: identical}\n"
        "data: {task: two_lookups, seq_len: 16, values: 4}\n" + COMMON + "track: {every: 3}\n",
    )
    assert all(r["layers"][layer]["head_diversity"] == 0 for r in records for layer in ("0", "1"))
    assert records[-1]["model"]["token_accuracy"] >= 0


def test_the_fall_from_a_peak_is_peak_minus_final():
    from types import SimpleNamespace

    from diffformer.comparison.table import _fall_from_peak
    from diffformer.dynamics.records import DynamicsRecord

    masses = [0.1, 0.7, 0.9, 0.4, 0.5]
    run = SimpleNamespace(dynamics=[DynamicsRecord(step, {"foreground_mass": m}) for step, m in enumerate(masses)])
    assert _fall_from_peak(run, "foreground_mass") == pytest.approx(0.4)
    assert _fall_from_peak(run, "token_accuracy") is None
