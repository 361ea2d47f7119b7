"""Trackers (issue 15): TensorBoard mirrors metrics.jsonl and dynamics, continues on --resume without the
steps an interrupted run logged after its checkpoint; W&B (faked: an optional extra) gets the same numbers
and resumes the same run id; a tracker whose package is missing is one line, before anything is written."""

import json
import sys
import types

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app

runner = CliRunner()


def _recipe(tmp_path, trackers, steps=6):
    recipe = {
        "name": "tracked",
        "output": str(tmp_path / "tracked"),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 3, "precision": "fp32"},
        "eval": {"every": 3, "batches": 1},
        "track": {"every": 3, "batch_size": 4},
        "trackers": trackers,
    }
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_mirrors_metrics_and_dynamics_and_continues_on_resume(tmp_path):
    path = _recipe(tmp_path, {"tensorboard": True}, steps=3)
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    longer = _recipe(tmp_path, {"tensorboard": True}, steps=6)
    resumed = runner.invoke(app, ["train", str(longer), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    scalars = _scalars(tmp_path / "tracked" / "tensorboard")
    metrics = [json.loads(line) for line in (tmp_path / "tracked" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in scalars["train/loss"]] == [
        float(__import__("numpy").float32(m["loss"])) for m in metrics
    ]
    assert [step for step, _ in scalars["eval/loss"]] == [3, 6]
    assert [step for step, _ in scalars["dynamics/entropy"]] == [0, 3, 6]
    assert "dynamics/token_accuracy" in scalars
    # Intervals are margins of their measurement, not tags of their own; counters are left out.
    assert not any(tag.endswith(("_se", "_low", "_high")) for tag in scalars), sorted(scalars)
    assert not {"train/tokens", "eval/examples", "eval/scored_tokens"} & set(scalars)
    for (step, loss), (_, low), (_, high) in zip(
        scalars["eval/loss"], scalars["eval/loss/low"], scalars["eval/loss/high"]
    ):
        (metric,) = [m for m in metrics if m["step"] == step]
        assert low == pytest.approx(loss - 1.96 * metric["eval_loss_se"]) and high > loss
    assert scalars["eval/exact_match/low"][-1][1] == pytest.approx(metrics[-1]["eval_exact_match_low"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main = EventAccumulator(str(tmp_path / "tracked" / "tensorboard"))
    main.Reload()
    assert main.PluginTagToContent("custom_scalars"), "one margin chart per measured interval"
    hparams = EventAccumulator(str(tmp_path / "tracked" / "tensorboard" / "hparams"))
    hparams.Reload()
    assert hparams.PluginTagToContent("hparams"), "the HPARAMS tab has the run's settings"


def test_wandb_gets_the_same_numbers_and_resumes_its_run(tmp_path, monkeypatch):
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **settings: calls["init"].append(settings) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    path = _recipe(tmp_path, {"wandb": {"project": "attention", "mode": "offline"}})
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    assert (
        runner.invoke(
            app, ["train", str(_recipe(tmp_path, {"wandb": {"project": "attention"}}, 8)), "--resume"]
        ).exit_code
        == 0
    )
    first, second = calls["init"]
    assert first["id"] == second["id"] and first["resume"] == "allow" and first["project"] == "attention"
    assert first["config"]["model"]["d_model"] == 32 and calls["finish"] == 2
    losses = [step for step, values in calls["log"] if "train/loss" in values]
    assert losses == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_missing_tracker_package_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = runner.invoke(app, ["train", str(_recipe(tmp_path, {"wandb": {"project": "x"}}))])
    assert result.exit_code != 0 and "pip install 'diffformer[wandb]'" in result.output
    assert not (tmp_path / "tracked").exists()


def test_probing_the_latest_weights_adds_the_probe_summary_to_the_trackers(tmp_path, monkeypatch):
    summaries = []

    class Run:
        summary = types.SimpleNamespace(update=summaries.append)

        def log(self, values, step):
            pass

        def finish(self):
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **settings: Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    path = _recipe(tmp_path, {"tensorboard": True, "wandb": {"project": "attention", "mode": "offline"}}, steps=3)
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    probed = runner.invoke(app, ["probe", str(tmp_path / "tracked"), "--lengths", "24,48", "--samples", "4", "--json"])
    assert probed.exit_code == 0, probed.output
    report = json.loads(probed.stdout)
    grid = report["retrieval"]["mqar"]
    expected = sum(grid["accuracy"][1]) / len(grid["accuracy"][1])  # length 48, mean over depths
    entropy = report["attention"]["average"]["entropy"]
    scalars = _scalars(tmp_path / "tracked" / "tensorboard")
    assert scalars["probe/mqar/accuracy_at_48"] == [(3, pytest.approx(expected))]
    assert scalars["probe/attention/entropy"] == [(3, pytest.approx(entropy))] and entropy > 0
    assert summaries[0]["probe/mqar/accuracy_at_48"] == pytest.approx(expected)
    assert summaries[0]["probe/attention/entropy"] == pytest.approx(entropy)
