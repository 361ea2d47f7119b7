"""eval and probe: end to end through the CLI, prompt construction, and clear errors."""

import json

import pytest
import torch
import yaml
from conftest import KINDS
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.data.mqar import MqarTask
from diffformer.model.attention import kind_entry
from diffformer.model.capture import Rows
from diffformer.probes.runner import ProbeSettings, run_probes

runner = CliRunner()


def _train(tmp_path, name, **model):
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "output": str(tmp_path / name),
                "model": {
                    "d_model": 32,
                    "n_layers": 2,
                    "n_heads": 4,
                    "max_seq_len": 48,
                    "attention": {"kind": "differential"},
                    **model,
                },
                "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
                "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 4},
                "eval": {"every": 4, "batches": 1},
            }
        )
    )
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("probe"), "tiny")


def test_eval_json_reports_metrics_with_uncertainty(trained):
    result = runner.invoke(app, ["eval", str(trained), "--json", "--batches", "3", "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics = report["metrics"]
    assert report["step"] == 4 and report["task"] == "mqar"
    assert metrics["examples"] == 15 and metrics["scored_tokens"] == 45
    assert 0 <= metrics["accuracy"] <= 1 and metrics["accuracy_se"] > 0
    assert metrics["exact_match_se"] >= 0 and metrics["loss_se"] > 0
    longer = json.loads(runner.invoke(app, ["eval", str(trained), "--json", "--set", "data.seq_len=40"]).stdout)
    assert longer["seq_len"] == 40


def test_eval_refuses_non_data_overrides_and_missing_runs(trained, tmp_path):
    bad = runner.invoke(app, ["eval", str(trained), "--set", "train.steps=3"])
    assert bad.exit_code == 2 and "only data.* keys" in bad.stderr
    missing = runner.invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_probe_cli_end_to_end(trained, tmp_path):
    out = tmp_path / "probe-out"
    result = runner.invoke(
        app,
        [
            "probe",
            str(trained),
            "--json",
            "-P",
            "retrieval",
            "--probes",
            "attention",
            "-P",
            "outliers",
            "--lengths",
            "16,24,48",
            "--depths",
            "0,0.5,1",
            "--samples",
            "6",
            "--batch-size",
            "3",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    grid = report["retrieval"]["mqar"]
    assert grid["lengths"] == [16, 24, 48] and grid["depths"] == [0.0, 0.5, 1.0]
    assert [len(row) for row in grid["accuracy"]] == [3, 3, 3]
    assert all(n == 6 for row in grid["samples"] for n in row)
    layers = report["attention"]["layers"]
    assert set(layers) == {"0", "1"}
    assert {
        "needle_mass",
        "noise",
        "entropy",
        "head_diversity",
        "lambda_value",
        "a1_a2_cosine",
        "negative_share",
        "key_coverage",
    } <= set(layers["0"])
    layer_outliers = report["outliers"]["1"]
    assert set(layer_outliers["logits"]) == {"logits1", "logits2"}
    assert layer_outliers["logits"]["logits1"]["top1"] >= layer_outliers["logits"]["logits1"]["median"] > 0
    assert layer_outliers["hidden_top1"] >= layer_outliers["hidden_median"] > 0
    assert {p.name for p in out.iterdir()} == {"probe.json", "retrieval_mqar.png", "attention.png"}


def test_same_seed_gives_every_checkpoint_the_same_prompts_and_results(trained):
    settings = ProbeSettings(probes=["retrieval"], lengths=[24], depths=[0.5], samples=4, batch_size=4)
    first = run_probes(trained, settings).to_dict()
    again = run_probes(trained, settings).to_dict()
    assert first == again


def test_probe_errors(trained, tmp_path):
    unknown = runner.invoke(app, ["probe", str(trained), "-P", "telepathy"])
    assert unknown.exit_code == 2 and "unknown probe 'telepathy'" in unknown.stderr
    missing = runner.invoke(app, ["probe", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    learned = _train(tmp_path, "learned", position="learned")
    too_long = runner.invoke(app, ["probe", str(learned), "--lengths", "24,96"])
    assert too_long.exit_code == 2
    assert "length 96 is beyond this model's learned positions (max_seq_len 48)" in too_long.stderr


def test_mqar_probe_layout_puts_the_pairs_at_the_depth_and_asks_at_the_end():
    for depth in (0.0, 0.5, 1.0):
        task = MqarTask(task="mqar", vocab_size=32, num_pairs=3, seq_len=40, depth=depth)
        batch = task.batch(0, "probe", 0, 4)
        scored = (batch.targets[0] != -100).nonzero().flatten().tolist()
        assert scored == [34, 36, 38], "queries fill the end"
        filler = 40 - 12
        for b in range(4):
            for t in scored:
                start, end = batch.evidence[b, t].tolist()
                block_start = round(depth * filler)
                assert end - start == 2 and block_start <= start < block_start + 6, "inside the pair block"
                assert batch.inputs[b, start] == batch.inputs[b, t], "the evidence holds the asked key"
                assert batch.inputs[b, start + 1] == batch.targets[b, t], "followed by its value"
            first_pair = min(batch.evidence[b, t, 0].item() for t in scored)
            assert first_pair == round(depth * filler)


def test_text_needle_prompts_have_exact_length_and_the_needle_at_its_depth(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from diffformer.probes.text_needle import TextNeedle

    text = " ".join(f"Sentence number {i} is about attention." for i in range(400))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [text],
        trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    needle = TextNeedle(tokenizer, torch.tensor(tokenizer.encode(text).ids).numpy())
    for depth in (0.0, 0.5, 1.0):
        batch, truths, candidates = needle.prompts(0, 1, 3, 96, depth)
        assert batch.inputs.shape == (3, 96)
        for b in range(3):
            start, end = batch.evidence[b, -1].tolist()
            assert "The secret number of" in tokenizer.decode(batch.inputs[b, start:end].tolist())
            assert truths[b] in tokenizer.decode(batch.inputs[b, start:end].tolist())
            assert tokenizer.decode(batch.inputs[b].tolist()).rstrip().endswith(" is")
            haystack = 96 - (end - start) - (96 - batch.question_start[b].item())
            assert abs(start / max(haystack, 1) - depth) < 0.1
            assert truths[b] == candidates[b][0] and len(set(candidates[b])) == 10


def test_answer_attention_measures_each_row_at_its_own_answer_positions():
    """Rows of one batch may be scored at different positions (e.g. a list of num_pairs)."""
    from diffformer.data import Batch
    from diffformer.model.capture import AttentionMaps
    from diffformer.probes.retrieval import AnswerAttention

    length = 8
    targets = torch.full((2, length), -100)
    targets[0, 6] = 5  # row 0 is asked at position 6, its evidence is keys [1, 3)
    targets[1, 4] = 5  # row 1 is asked at position 4, its evidence is keys [0, 2)
    evidence = torch.full((2, length, 2), -1)
    evidence[0, 6] = torch.tensor([1, 3])
    evidence[1, 4] = torch.tensor([0, 2])
    batch = Batch(
        torch.zeros(2, length, dtype=torch.long), targets, evidence=evidence, question_start=torch.tensor([6, 4])
    )
    positions = torch.tensor([4, 6])  # the union of the rows' answer positions
    weights = torch.zeros(2, 1, 2, length)  # (B, H, P, T)
    weights[0, 0, 1, 1] = 1.0  # row 0 at position 6: all on its needle
    weights[0, 0, 0, 0] = 1.0  # row 0 at position 4: not scored, must not count
    weights[1, 0, 0, 0] = 1.0  # row 1 at position 4: all on its needle
    weights[1, 0, 1, 5] = 1.0  # row 1 at position 6: not scored, must not count
    accumulator = AnswerAttention()
    accumulator.add({0: AttentionMaps(weights, {}, positions)}, batch, length)
    assert len(torch.cat(accumulator.values[0]["needle_mass"])) == 2, "one value per scored (row, position)"
    summary = accumulator.summary()
    assert summary.layers[0].needle_mass == 1.0 and summary.layers[0].noise == 0.0


def test_a_cell_gets_the_same_prompts_whatever_else_is_probed():
    """Prompts depend on a cell's values (variant, length, depth), not on its place in the grid."""
    from diffformer import ModelConfig, Transformer
    from diffformer.probes.prompts import SyntheticPrompts
    from diffformer.probes.retrieval import retrieval_grid

    class RecordingPrompts(SyntheticPrompts):
        def __init__(self, *args):
            super().__init__(*args)
            self.seen = {}

        def cell(self, variant, length, depth, key, count):
            cell = super().cell(variant, length, depth, key, count)
            self.seen.setdefault((length, depth), []).append(cell.batch.inputs)
            return cell

    model = Transformer(ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2)).eval()
    task = MqarTask(task="mqar", vocab_size=32, num_pairs=3, seq_len=24)

    def prompts(lengths, depths):
        source = RecordingPrompts(task, ["mqar"], 1234)
        retrieval_grid(model, source, lengths, depths, 8, 4, "cpu", 0.856, with_attention=False, notes=[])
        return source.seen

    alone, together = prompts([24], [0.5]), prompts([16, 24, 48], [0.0, 0.5])
    assert len(alone[(24, 0.5)]) == 2, "two batches of 4 for 8 samples"
    for first, second in zip(alone[(24, 0.5)], together[(24, 0.5)]):
        assert torch.equal(first, second)
    assert not torch.equal(alone[(24, 0.5)][0], alone[(24, 0.5)][1]), "batches within a cell differ"


def test_lengths_where_no_prompt_fits_are_reported_not_a_crash(trained):
    result = runner.invoke(app, ["probe", str(trained), "--json", "--lengths", "4,24", "--samples", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    grid = report["retrieval"]["mqar"]
    assert grid["accuracy"][0] == [None] * 5 and None not in grid["accuracy"][1]
    assert any("do not fit in 4 tokens" in note for note in report["notes"])
    if all(a >= grid["threshold"] for a in grid["accuracy"][1]):
        assert grid["effective_length"] == 24, "a length without prompts does not end the effective length"
    only_short = runner.invoke(app, ["probe", str(trained), "--json", "--lengths", "4", "-P", "attention"])
    assert only_short.exit_code == 0, only_short.output
    layers = json.loads(only_short.stdout)["attention"]["layers"]
    assert layers["0"]["needle_mass"] is None and layers["0"]["key_coverage"]["min"] >= 0


@pytest.mark.parametrize("kind", KINDS)
def test_probe_attention_shares_mean_the_same_for_every_kind(tmp_path, kind):
    """Masses are shares of each row's |weight| whatever the kind's rows are, so they lie in [0, 1] and the
    needle and the rest of the context never hold more than the whole row; rows that are not distributions
    also get their signed sums, and the table says which rows it shows."""
    run = _train(tmp_path, kind, attention={"kind": kind})
    result = runner.invoke(app, ["probe", str(run), "--samples", "4", "--lengths", "24", "--json"])
    assert result.exit_code == 0, result.output
    attention = json.loads(result.stdout)["attention"]
    rows = kind_entry(kind).rows
    assert attention["rows"] == rows.value
    for layer in attention["layers"].values():
        assert 0.0 <= layer["needle_mass"] <= 1.0 and 0.0 <= layer["noise"] <= 1.0
        assert layer["needle_mass"] + layer["noise"] <= 1.0 + 1e-6
        assert (layer["row_sum"] is not None) == (rows != Rows.DISTRIBUTION)
        assert (layer["needle_net_mass"] is not None) == (rows != Rows.DISTRIBUTION)
    table = runner.invoke(app, ["probe", str(run), "--samples", "4", "--lengths", "24"])
    assert f"rows: {rows.value}" in " ".join(table.output.split())
