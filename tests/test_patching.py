"""Activation patching (probes/patching.py, `diffformer patch`): the corruption, the shares, the command."""

import json

import pytest
import torch
from conftest import small_model
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.data import IGNORE
from diffformer.data.mqar import MqarTask
from diffformer.data.needle import NeedleTask
from diffformer.model.hooks import run_with_cache, run_with_hooks
from diffformer.probes.patching import (
    _replace_with,
    _shares,
    corrupted_pairs,
    logit_difference,
    patch_activations,
)

runner = CliRunner()


def _mqar_batch(examples=16, depth=0.5):
    task = MqarTask(task="mqar", vocab_size=37, num_pairs=4, seq_len=32, depth=depth)
    return task.batch(0, "val", 0, examples)


@pytest.mark.parametrize(
    "task",
    [
        MqarTask(task="mqar", vocab_size=37, num_pairs=4, seq_len=32),
        MqarTask(task="mqar", vocab_size=37, num_pairs=4, seq_len=32, depth=0.3),
        NeedleTask(task="needle", vocab_size=37, num_keys=8, num_values=8, seq_len=32),
    ],
)
def test_the_corruption_changes_one_evidence_token_and_the_answer(task):
    batch = task.batch(0, "val", 0, 16)
    pairs = corrupted_pairs(batch)
    assert len(pairs.position) == 16
    for b in range(16):
        changed = (pairs.clean[b] != pairs.corrupted[b]).nonzero().flatten().tolist()
        assert len(changed) == 1
        start, end = batch.evidence[b, pairs.position[b]].tolist()
        assert start <= changed[0] < end  # inside the answer's evidence
        assert pairs.clean[b, changed[0]] == pairs.clean_answer[b] == batch.targets[b, pairs.position[b]]
        assert pairs.corrupted[b, changed[0]] == pairs.corrupted_answer[b] != pairs.clean_answer[b]
        assert batch.targets[b, : pairs.position[b]].eq(IGNORE).all()  # the first scored position


def test_patching_everything_restores_all_and_nothing_restores_none():
    model = small_model({"kind": "vanilla"}).eval()
    pairs = corrupted_pairs(_mqar_batch())
    report = patch_activations(model, pairs, "layers")
    assert report.columns == ["attention", "mlp", "residual"]
    assert report.restored[0][2] == pytest.approx(1.0, abs=1e-5)  # the residual stream before block 0: the clean input
    assert report.low[0][2] == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        _, cache = run_with_cache(model, pairs.clean, names=["blocks.1.hook_attn_out"])
        nothing = (slice(None), slice(0, 0))  # an empty slice: no position
        logits = run_with_hooks(
            model,
            pairs.corrupted,
            [("blocks.1.hook_attn_out", _replace_with(cache["blocks.1.hook_attn_out"], nothing))],
        )
        clean, corrupt = logit_difference(model(pairs.clean), pairs), logit_difference(model(pairs.corrupted), pairs)
    restored, low, high = _shares(clean, corrupt, [logit_difference(logits, pairs)])
    assert restored == [0.0] and low == [0.0] and high == [0.0]
    for row in range(2):
        for share, lo, hi in zip(report.restored[row], report.low[row], report.high[row]):
            assert lo <= share + 1e-9 and share <= hi + 1e-9


def test_shares_are_ratio_of_means():
    clean, corrupt = torch.tensor([4.0, 2.0]), torch.tensor([0.0, 0.0])
    restored, _, _ = _shares(clean, corrupt, [torch.tensor([3.0, 0.0]), torch.tensor([-1.0, -1.0])])
    assert restored == pytest.approx([0.5, -1 / 3])


def test_heads_and_positions_have_the_kinds_heads_and_the_sequence_positions():
    model = small_model({"kind": "differential"}).eval()
    pairs = corrupted_pairs(_mqar_batch(8))
    heads = patch_activations(model, pairs, "heads")
    assert heads.columns == ["head 0", "head 1"]  # 4 sub-heads = 2 differential pairs
    positions = patch_activations(model, pairs, "positions")
    assert positions.columns == [str(t) for t in range(32)] and len(positions.restored) == 2
    # Every position of layer 0's input at once is the clean input; one position at a time is not.
    assert max(positions.restored[0]) < 1.0 - 1e-3 or pairs.position.unique().numel() == 1
    html = heads._repr_html_()
    assert html.startswith("<table>") and "head 1" in html and "8 sequences" in html


def test_a_task_without_evidence_is_refused_in_one_line():
    from diffformer.data.batch import Batch
    from diffformer.errors import RecipeError

    batch = Batch(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(RecipeError, match="marks where each answer comes from"):
        corrupted_pairs(batch)


def test_the_patch_command(tiny_recipe, tmp_path):
    assert runner.invoke(app, ["train", str(tiny_recipe)]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    result = runner.invoke(app, ["patch", str(run), "--by", "layers", "--examples", "16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"] == ["layer 0", "layer 1"] and report["sequences"] >= 2
    assert report["restored"][0][2] == pytest.approx(1.0, abs=1e-4)
    assert (run / "patching-layers.png").stat().st_size > 1000
    table = runner.invoke(app, ["patch", str(run), "--examples", "8", "-o", str(tmp_path / "h.svg")])
    assert table.exit_code == 0 and "head 1" in table.output and (tmp_path / "h.svg").is_file()
    bad = runner.invoke(app, ["patch", str(run), "--by", "neurons"])
    assert bad.exit_code != 0 and bad.output.count("error:") == 1 and "--by must be one of" in bad.output
    assert "Traceback" not in bad.output
