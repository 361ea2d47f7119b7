"""The focus lab (issue 13): the task, each objective against its formula, gradients, the four-way split,
fixed focus, and the hybrid's switch through training and a SIGKILL."""

import json
import signal

import pytest
import torch
import yaml
from test_training import _assert_same_run, _losses, _run, _start, _wait_for_first_checkpoint

from diffformer import ModelConfig
from diffformer.data.focus import FocusTask
from diffformer.focus.measures import readouts
from diffformer.focus.objectives import FocusSettings, fixed_focus, focus_loss
from diffformer.model.focus import FocusModel, FocusOutputs

TASK = FocusTask(task="focus", segments=4, classes=3, distractors=2, segment_length=2, tokens_per_class=3)


def _model(kind="vanilla", **attention):
    config = ModelConfig(vocab_size=TASK.task_vocab_size, d_model=8, n_heads=2, attention={"kind": kind, **attention})
    torch.manual_seed(0)
    return FocusModel(config, TASK.classes, TASK.segments, TASK.segment_length)


def test_the_task_puts_one_labelled_segment_among_distractors():
    batch = TASK.batch(0, "train", 0, 64)
    k = TASK.tokens_per_class
    segments = batch.inputs.view(64, TASK.segments, TASK.segment_length) // k  # the pool of every token
    for b in range(64):
        label, foreground = int(batch.targets[b, 0]), int(batch.foreground[b])
        assert (segments[b, foreground] == label).all()
        others = [j for j in range(TASK.segments) if j != foreground]
        assert (segments[b, others] >= TASK.classes).all(), "backgrounds come from distractor pools"
    assert len(set(batch.foreground.tolist())) == TASK.segments
    tied = TASK.model_copy(update={"background_informative": 1.0}).batch(0, "train", 0, 16)
    pools = tied.inputs.view(16, TASK.segments, TASK.segment_length) // k
    for b in range(16):
        others = [j for j in range(TASK.segments) if j != int(tied.foreground[b])]
        assert (pools[b, others] == TASK.classes + int(tied.targets[b, 0]) % TASK.distractors).all()


def _plain(objective, alpha, features, segment_logits, classify, labels):
    """Each loss written out example by example."""
    total = 0.0
    for b, y in enumerate(labels.tolist()):
        p = [segment_logits[b, j].softmax(-1)[y] for j in range(alpha.shape[1])]
        if objective == "soft":
            mixed = sum(alpha[b, j] * features[b, j] for j in range(alpha.shape[1]))
            total = total - classify(mixed).log_softmax(-1)[y]
        elif objective == "hard":
            total = total + sum(-alpha[b, j] * torch.log(p[j]) for j in range(alpha.shape[1]))
        else:
            total = total - torch.log(sum(alpha[b, j] * p[j] for j in range(alpha.shape[1])))
    return total / len(labels)


@pytest.mark.parametrize("objective", ["soft", "hard", "lvml"])
def test_each_objective_equals_its_formula_and_one_hot_focus_makes_them_coincide(objective):
    model = _model()
    batch = TASK.batch(1, "train", 0, 6)
    outputs = model(batch.inputs)
    labels = batch.targets[:, 0]
    alpha = torch.rand(6, TASK.segments).softmax(-1)
    got = focus_loss(objective, model, outputs, labels, alpha)
    expected = _plain(objective, alpha, outputs.features, outputs.segment_logits, model.classify, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    one_hot = torch.nn.functional.one_hot(batch.foreground, TASK.segments).float()
    at_foreground = torch.nn.functional.cross_entropy(outputs.segment_logits[torch.arange(6), batch.foreground], labels)
    torch.testing.assert_close(focus_loss(objective, model, outputs, labels, one_hot), at_foreground)
    # Without an override each objective reads the focus model's own weights.
    own = focus_loss(objective, model, outputs, labels)
    torch.testing.assert_close(own, focus_loss(objective, model, outputs, labels, outputs.weights))


@pytest.mark.parametrize("objective", ["hard", "lvml"])
def test_gradients_of_hard_and_lvml_are_those_of_the_written_formula(objective):
    torch.manual_seed(3)
    labels = torch.tensor([0, 2, 1])
    scores = torch.randn(3, TASK.segments, requires_grad=True)
    logits = torch.randn(3, TASK.segments, TASK.classes, requires_grad=True)
    model = _model()
    outputs = FocusOutputs(scores.softmax(-1), torch.zeros(3, TASK.segments, 8), logits)
    focus_loss(objective, model, outputs, labels).backward()
    got = scores.grad.clone(), logits.grad.clone()
    scores.grad = logits.grad = None
    _plain(objective, scores.softmax(-1), None, logits, None, labels).backward()
    torch.testing.assert_close(got[0], scores.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got[1], logits.grad, rtol=1e-5, atol=1e-7)


def test_the_four_way_split_and_the_read_outs_on_known_cases():
    """Rows: focus on the foreground, right class; on the foreground, wrong class; elsewhere but right; elsewhere
    and wrong. The classifier is hand-set: segment logits say class 1 for segments 0 and 2, class 0 otherwise."""
    model = _model()
    labels = torch.tensor([1, 0, 1, 0])
    foreground = torch.tensor([0, 2, 1, 3])
    alpha = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]])
    says_one = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    outputs = FocusOutputs(alpha, torch.zeros(4, 4, 8), says_one.expand(4, 4, 3))
    batch = TASK.batch(0, "val", 0, 4)
    batch.targets, batch.foreground = labels[:, None], foreground
    measured = readouts(model, outputs, batch, alpha)
    assert measured["ftpt"].tolist() == [1, 0, 0, 0]
    assert measured["ftpf"].tolist() == [0, 1, 0, 0]
    assert measured["ffpt"].tolist() == [0, 0, 1, 0]
    assert measured["ffpf"].tolist() == [0, 0, 0, 1]
    assert sum(measured[k] for k in ("ftpt", "ffpt", "ftpf", "ffpf")).tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(measured["foreground_mass"], torch.tensor([0.7, 0.7, 0.1, 0.1]))
    # The mixture sums α-weighted class probabilities: segments 0 and 2 (class 1) carry 0.8 of every row's
    # weight, so it says class 1 everywhere: right where the label is 1.
    assert measured["accuracy_mixture"].tolist() == [1, 0, 1, 0]
    assert measured["accuracy_hard"].tolist() == [1, 0, 1, 0]


def test_fixed_focus_puts_its_weight_on_the_foreground():
    alpha = fixed_focus(torch.tensor([2, 0]), 5, 0.6)
    torch.testing.assert_close(alpha, torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.1], [0.6, 0.1, 0.1, 0.1, 0.1]]))


@pytest.mark.parametrize(("kind", "attention"), [("differential", {}), ("doubly_normalized", {"mix": 0.5})])
def test_focus_from_other_attention_kinds_follows_their_formula(kind, attention):
    model = _model(kind, **attention)
    features = torch.randn(2, TASK.segments, 8)
    weights = model.scorer(features)
    scorer = model.scorer
    scores = scorer.scores(features)  # (B, queries, m)
    if kind == "differential":
        q1, k1, q2, k2 = scorer.lambda_vectors
        lam = torch.exp(q1 @ k1) - torch.exp(q2 @ k2) + scorer.lambda_init
        expected = scores[:, 0].softmax(-1) - lam * scores[:, 1].softmax(-1)
        outputs = FocusOutputs(weights, features, None, scores)
        positive = expected.clamp_min(0)
        torch.testing.assert_close(model.focus_distribution(outputs), positive / positive.sum(-1, keepdim=True))
        absolute = expected.abs() / expected.abs().sum(-1, keepdim=True)
        torch.testing.assert_close(model.focus_distribution(outputs, "absolute"), absolute)
        softmax = (scores[:, 0] - lam * scores[:, 1]).softmax(-1)
        torch.testing.assert_close(model.focus_distribution(outputs, "softmax"), softmax)
    else:
        columns = torch.sigmoid(scores[:, 0] - scorer.sink)
        expected = 0.5 * columns / columns.sum(-1, keepdim=True) + 0.5 * scores[:, 0].softmax(-1)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)


def test_hybrid_uses_soft_up_to_its_switch_step_and_hard_after():
    settings = FocusSettings(objective="hybrid", switch_step=3)
    assert [settings.objective_at(step) for step in range(6)] == ["soft"] * 3 + ["hard"] * 3
    with pytest.raises(ValueError, match="switch_step"):
        FocusSettings(objective="hybrid")
    with pytest.raises(ValueError, match="switch_step"):
        FocusSettings(objective="soft", switch_step=3)


def _focus_recipe(tmp_path, name, focus, steps=8):
    recipe = {
        "name": name,
        "seed": 2,
        "output": str(tmp_path / name),
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 1},
        "data": {"task": "focus", "segments": 4, "classes": 3, "distractors": 2, "segment_length": 2},
        "focus": focus,
        "train": {"steps": steps, "batch_size": 16, "lr": 3e-3, "log_every": 1, "checkpoint_every": 2},
        "eval": {"every": 4, "batches": 2},
        "track": {"every": 2, "batch_size": 32},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_hybrid_trains_as_soft_up_to_its_switch_then_differs_and_resumes_exactly_after_sigkill(tmp_path):
    for name, focus in (("soft", {"objective": "soft"}), ("hybrid", {"objective": "hybrid", "switch_step": 3})):
        code, _, err = _run(tmp_path, str(_focus_recipe(tmp_path, name, focus)))
        assert code == 0, err
    soft, hybrid = _losses(tmp_path / "soft"), _losses(tmp_path / "hybrid")
    assert [loss for _, loss, _ in hybrid[:3]] == [loss for _, loss, _ in soft[:3]], "steps 1–3 are soft"
    assert hybrid[3][1] != soft[3][1], "step 4 is hard"

    (tmp_path / "killed").mkdir()
    recipe = _focus_recipe(tmp_path / "killed", "hybrid", {"objective": "hybrid", "switch_step": 3})
    process = _start(tmp_path / "killed", str(recipe))
    _wait_for_first_checkpoint(tmp_path / "killed" / "hybrid")  # step 2: before the switch
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, _, err = _run(tmp_path / "killed", str(recipe), "--resume")
    assert code == 0, err
    _assert_same_run(tmp_path / "killed" / "hybrid", tmp_path / "hybrid")
    records = [json.loads(line) for line in (tmp_path / "hybrid" / "dynamics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4, 6, 8]
    assert {"ftpt", "ffpt", "ftpf", "ffpf", "foreground_mass", "accuracy_soft"} <= set(records[-1]["model"])


def test_fixed_focus_trains_the_classifier_alone_and_records_the_incentive(tmp_path):
    code, _, err = _run(tmp_path, str(_focus_recipe(tmp_path, "fixed", {"objective": "hard", "fixed_foreground": 0.5})))
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "fixed" / "dynamics.jsonl").read_text().splitlines()]
    assert all(r["model"]["foreground_mass"] == pytest.approx(0.5) for r in records)
    assert all("incentive" in r["model"] and "loss_at_alpha" in r["model"] for r in records)
    assert records[-1]["model"]["loss_at_alpha"] == pytest.approx(records[-1]["model"]["loss"], rel=1e-5)
    summary = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    assert {"accuracy", "ftpt", "foreground_mass"} <= set(summary["eval"])


def test_focus_runs_evaluate_compare_and_refuse_probes_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from diffformer.cli import app

    for name, objective in (("soft", "soft"), ("lvml", "lvml")):
        code, _, err = _run(tmp_path, str(_focus_recipe(tmp_path, name, {"objective": objective})))
        assert code == 0, err
    runner = CliRunner()
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "soft"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy_hard" in json.loads(evaluated.stdout)["metrics"]
    table = runner.invoke(app, ["eval", str(tmp_path / "soft")])
    assert table.exit_code == 0 and "ftpt" in table.stdout and "foreground mass" in table.stdout, table.output
    compared = runner.invoke(
        app, ["compare", str(tmp_path / "soft"), str(tmp_path / "lvml"), "-o", str(tmp_path / "c")]
    )
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "c" / "dynamics.png").is_file()
    probed = runner.invoke(app, ["probe", str(tmp_path / "soft")])
    assert probed.exit_code != 0 and "focus-lab run" in probed.output and "Traceback" not in probed.output
    bad = _focus_recipe(tmp_path, "v2", {"objective": "soft"})
    recipe = yaml.safe_load(bad.read_text())
    recipe["model"]["attention"] = {"kind": "differential_v2"}
    bad.write_text(yaml.safe_dump(recipe))
    code, _, err = _run(tmp_path, str(bad))
    assert code != 0 and "focus task scores segments" in err and "Traceback" not in err


def test_the_three_signed_maps_of_a_hand_built_differential_focus():
    """w = A1 − λ·A2 with A1 = (0.7, 0.2, 0.1), A2 = (0.1, 0.6, 0.3), λ = 0.5: w = (0.65, −0.1, −0.05).
    positive part: (1, 0, 0) — no gradient reaches segments 2 and 3; |w|: (0.65, 0.1, 0.05)/0.8;
    softmax of log A1 − λ·log A2 (= s₁ − λ·s₂ up to constants)."""
    model = _model("differential")
    scorer = model.scorer
    with torch.no_grad():
        scorer.lambda_vectors.zero_()  # λ = exp(0) − exp(0) + λ_init
    scorer.lambda_init = 0.5
    a1, a2 = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.1, 0.6, 0.3]])
    scores = torch.stack([a1.log(), a2.log()], dim=1).requires_grad_()  # softmax(log A) = A
    weights = scores.softmax(-1)[:, 0] - 0.5 * scores.softmax(-1)[:, 1]
    torch.testing.assert_close(weights, torch.tensor([[0.65, -0.1, -0.05]]))
    outputs = FocusOutputs(weights, None, None, scores)
    positive = model.focus_distribution(outputs, "positive_part")
    torch.testing.assert_close(positive, torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(model.focus_distribution(outputs, "absolute"), torch.tensor([[0.65, 0.1, 0.05]]) / 0.8)
    expected = (a1.log() - 0.5 * a2.log()).softmax(-1)
    torch.testing.assert_close(model.focus_distribution(outputs, "softmax"), expected)
    (gradient,) = torch.autograd.grad(positive[0, 0], scores)
    assert torch.allclose(gradient, torch.zeros_like(gradient), atol=1e-7), "renormalised positive part of one segment"
    (gradient,) = torch.autograd.grad(model.focus_distribution(outputs, "softmax")[0, 1], scores)
    assert (gradient[0, 0].abs() > 1e-3).all() and (gradient[0, 1].abs() > 1e-3).all()
