"""Issue 12's measurements on hand-built cases: forcing attention, KTIW, the diagonal (source argmax)
accuracy, the uniform-attention control, milestones, the A1/A2 similarity penalty, and compare's dynamics."""

import json

import pytest
import torch
from conftest import ATTENTION_VARIANTS, KINDS, small_model
from test_dynamics import _tiny

from diffformer import ModelConfig, Transformer
from diffformer.data.copying import CopyTask
from diffformer.data.mqar import MqarTask
from diffformer.dynamics.milestones import crossing_steps, learned
from diffformer.dynamics.records import DynamicsRecord
from diffformer.model.attention import AttentionCall
from diffformer.model.capture import AttentionMaps, capture_attention
from diffformer.model.forcing import force_attention
from diffformer.probes.ktiw import ktiw
from diffformer.probes.retrieval import AnswerAttention


@pytest.mark.parametrize(
    "task", [CopyTask(task="copy", length=7, vocab=20), MqarTask(task="mqar", num_pairs=3, seq_len=24)]
)
def test_evidence_points_at_the_token_to_output(task):
    """Copy: position L + k must output x_k, which sits at its evidence, the aligned source position k."""
    batch = task.batch(3, "train", 0, 4)
    scored = (batch.targets >= 0).nonzero().tolist()
    assert scored
    for b, t in scored:
        start, end = batch.evidence[b, t].tolist()
        assert start < batch.question_start[b] <= t
        assert int(batch.targets[b, t]) in batch.inputs[b, start:end].tolist()


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_forcing_replaces_only_the_forced_rows_by_the_value_alone(variant):
    """No forced key: logits unchanged. Forcing row t changes nothing before t, and forcing a row on s in a
    one-layer model gives that row what out_proj(value at s) gives, whatever the kind's map was."""
    model = small_model(ATTENTION_VARIANTS[variant], n_layers=1).eval()
    tokens = torch.randint(0, 37, (2, 12))
    plain = model(tokens)
    with force_attention(model, torch.full_like(tokens, -1)):
        torch.testing.assert_close(model(tokens), plain, rtol=0, atol=0)
    keys = torch.full_like(tokens, -1)
    keys[:, 8] = 3
    with force_attention(model, keys):
        forced = model(tokens)
    torch.testing.assert_close(forced[:, :8], plain[:, :8], rtol=0, atol=0)
    assert (forced[:, 8] - plain[:, 8]).abs().max() > 1e-3
    # At the layer: the forced row is the residual projection of the value at 3 alone (differential V1:
    # of the pair's value of width 2d after its sub-layer norm and (1 − λ_init), as for any row).
    attention, x = model.blocks[0].attention, torch.randn(2, 12, 32)
    out = attention(x, AttentionCall(forced_keys=keys))
    value = attention.v_proj(x)[:, 3]
    if ATTENTION_VARIANTS[variant]["kind"] == "differential":
        value = attention.subln(value.view(2, attention.n_pairs, -1)).flatten(1) * (1 - attention.lambda_init)
    torch.testing.assert_close(out[:, 8], attention.residual_projection(value), rtol=1e-5, atol=1e-6)
    assert model.instruments.forced_keys is None, "released after the block"
    with pytest.raises(ValueError, match="causal"):
        with force_attention(model, torch.full_like(tokens, 11)):
            pass


def _copying_model(vocab: int, value_map: torch.Tensor) -> Transformer:
    """One layer, one head, one dimension per token: the value of token x is value_map[x]'s one-hot, written
    four times louder than the token itself into the residual stream, and read out by an identity LM head.
    Forced on s, a row's largest logit is value_map[token at s]; the MLP is switched off."""
    model = Transformer(ModelConfig(vocab_size=vocab, d_model=vocab, n_layers=1, n_heads=1, max_seq_len=64))
    attention = model.blocks[0].attention
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(vocab))
        attention.v_proj.weight.copy_(torch.eye(vocab)[value_map].T)  # column x holds the one-hot of value_map[x]
        attention.out_proj.weight.copy_(4 * torch.eye(vocab))
        model.blocks[0].mlp.down.weight.zero_()
        model.lm_head.weight.copy_(10 * torch.eye(vocab))
    return model.eval()


def test_ktiw_holds_where_the_aligned_value_gives_the_answer_and_fails_where_it_does_not():
    task = CopyTask(task="copy", distribution="hard", length=10)
    batch = task.batch(0, "probe", 0, 6)
    vocab = task.task_vocab_size
    identity = ktiw(_copying_model(vocab, torch.arange(vocab)), batch)
    assert identity["ktiw"] == 1.0 and identity["ktiw_probability"] > 0.99
    shifted = ktiw(_copying_model(vocab, (torch.arange(vocab) + 1) % vocab), batch)
    # The best source now holds y − 1: never the aligned one (y − 1 is outside the source only when y = 2,
    # where every source is equally wrong and the first wins).
    assert shifted["ktiw"] < 0.2 and shifted["ktiw_probability"] < 0.05


def test_source_argmax_counts_rows_whose_peak_is_on_the_source_and_within_one():
    """Three scored rows with sources at 1, 2, 3; one head peaks on 1 (exact), 3 (one off), 0 (two off)."""
    inputs = torch.zeros(1, 6, dtype=torch.long)
    targets = torch.full((1, 6), -100)
    targets[0, 3:6] = 1
    evidence = torch.full((1, 6, 2), -1)
    evidence[0, 3:6] = torch.tensor([[1, 2], [2, 3], [3, 4]])
    from diffformer.data.batch import Batch

    batch = Batch(inputs, targets, evidence=evidence, question_start=torch.tensor([3]))
    weights = torch.zeros(1, 1, 3, 6)
    weights[0, 0, 0, 1] = weights[0, 0, 1, 3] = weights[0, 0, 2, 0] = 1.0
    attention = AnswerAttention()
    attention.add({0: AttentionMaps(weights, {}, torch.tensor([3, 4, 5]))}, batch, 6)
    layer = attention.summary().layers[0]
    assert layer.source_argmax == pytest.approx(1 / 3)
    assert layer.source_argmax_near == pytest.approx(2 / 3)
    assert layer.needle_mass == pytest.approx(1 / 3)


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_attention_averages_the_values_and_is_what_capture_reports(kind):
    model = small_model({"kind": kind}, n_layers=1, uniform_attention=True).eval()
    tokens = torch.randint(0, 37, (2, 9))
    with capture_attention(model) as capture:
        model(tokens)
    weights = capture.maps[0].weights
    expected = torch.tril(torch.ones(9, 9)) / torch.arange(1, 10)[:, None]
    torch.testing.assert_close(weights, expected.expand_as(weights))
    if kind == "vanilla":  # the layer is out_proj(causal mean of v), queries and keys unused
        attention, x = model.blocks[0].attention, torch.randn(2, 9, 32)
        v = attention.v_proj(x)
        plain = attention.out_proj(v.cumsum(1) / torch.arange(1, 10)[:, None])
        torch.testing.assert_close(attention(x), plain, rtol=1e-5, atol=1e-6)


def test_milestones_are_the_first_tracked_step_at_the_threshold():
    def record(step, accuracy, ktiw_share, heads):
        return DynamicsRecord(step, {"token_accuracy": accuracy, "ktiw": ktiw_share}, heads=heads)

    records = [
        record(0, 0.1, 0.0, {0: {"source_argmax": [0.1, 0.0], "source_argmax_near": [0.2, 0.1]}}),
        record(20, 0.5, 0.95, {0: {"source_argmax": [0.3, 0.5], "source_argmax_near": [0.95, 0.5]}}),
        record(40, 0.92, 0.97, {0: {"source_argmax": [0.2, 0.91], "source_argmax_near": [0.9, 0.95]}}),
    ]
    assert crossing_steps(records) == {"token_accuracy": 40, "ktiw": 20, "diagonal": 40, "diagonal_near": 20}
    assert learned(records) is True and learned(records[:2]) is False and learned([]) is None


def test_the_similarity_penalty_is_the_mean_a1_a2_cosine_and_training_with_it_lowers_it():
    config = dict(vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    penalised = Transformer(ModelConfig(**config, attention={"kind": "differential", "similarity_penalty": 2.0}))
    tokens = torch.randint(0, 37, (3, 16))
    penalised.train()
    penalised(tokens)
    penalty = penalised.attention_penalty()
    penalised.eval()
    with capture_attention(penalised) as capture:
        penalised(tokens)
    cosines = [
        torch.nn.functional.cosine_similarity(m.differential.a1, m.differential.a2, dim=-1).mean()
        for m in capture.maps.values()
    ]
    torch.testing.assert_close(penalty, 2.0 * torch.stack(cosines).mean(), rtol=1e-5, atol=1e-6)
    assert penalised.attention_penalty() is None, "a penalty is used once"
    assert Transformer(ModelConfig(**config, attention={"kind": "differential"})).attention_penalty() is None

    penalised.train()
    optimizer = torch.optim.AdamW(penalised.parameters(), lr=1e-2)
    for _ in range(30):
        penalised(tokens)
        optimizer.zero_grad()
        penalised.attention_penalty().backward()
        optimizer.step()
    penalised(tokens)
    assert penalised.attention_penalty() < 0.5 * penalty, "its gradient pushes the two maps apart"


def test_copy_tracking_records_token_accuracy_and_ktiw_and_compare_reports_milestones(tmp_path):
    from diffformer.comparison import compare_runs

    copy = {"task": "copy", "length": 6, "vocab": 12}
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        records = _tiny(tmp_path / str(seed), "vanilla", copy, track={"every": 3, "batch_size": 4, "ktiw": True})
        assert set(records[-1]["model"]) == {"token_accuracy", "exact_match", "ktiw", "ktiw_probability"}
        assert {"source_argmax", "source_argmax_near", "needle_mass"} <= set(records[-1]["average"])
    (tmp_path / "uniform").mkdir()
    _tiny(tmp_path / "uniform", "vanilla", copy, track={"every": 3, "batch_size": 4}, uniform_attention=True)
    runs = [tmp_path / "1" / "vanilla", tmp_path / "2" / "vanilla", tmp_path / "uniform" / "vanilla"]
    comparison, files = compare_runs(runs, output_dir=tmp_path / "out")
    assert comparison.columns[0].endswith("(2 seeds)") and "uniform_attention=True" in comparison.columns[1]
    rows = {row.name: row for row in comparison.rows if row.section == "dynamics"}
    assert rows["learned (share of seeds)"].values[0] in (0.0, 0.5, 1.0)
    assert "KTIW ≥ 0.9: share of seeds" in rows and rows["KTIW ≥ 0.9: share of seeds"].values[1] is None
    assert (tmp_path / "out" / "dynamics.png").read_bytes().startswith(b"\x89PNG")
    assert "dynamics.png" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["rows"]


def test_ktiw_needs_a_task_that_marks_sources(tmp_path):
    from diffformer.errors import RecipeError
    from diffformer.recipe import validate_recipe

    recipe = {
        "name": "x",
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2},
        "data": {"task": "text", "path": str(tmp_path / "t.txt")},
        "track": {"ktiw": True},
    }
    with pytest.raises(RecipeError, match="track.ktiw"):
        validate_recipe(recipe, "recipe", tmp_path)


def test_the_penalty_gives_the_same_gradients_with_activation_checkpointing():
    config = ModelConfig(
        vocab_size=37, d_model=32, n_layers=2, n_heads=4, attention={"kind": "differential", "similarity_penalty": 1.0}
    )
    model = Transformer(config).train()
    tokens = torch.randint(0, 37, (2, 16))
    gradients = []
    for recompute in (False, True):
        model.zero_grad()
        model.activation_checkpointing = recompute
        (model(tokens).float().logsumexp(-1).mean() + model.attention_penalty()).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-7, msg=name)
    assert gradients[0]["blocks.0.attention.lambda_q1"].abs().sum() > 0
