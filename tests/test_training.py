"""Training end to end: run folder contents, exact resume after SIGKILL and Ctrl-C, divergence, text runs."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.recipe import TrainConfig
from diffformer.run_folder import RunFolder
from diffformer.training.optimizer import learning_rate, parameter_groups

runner = CliRunner()

# Runs the CLI in a subprocess; with PAUSE_AT_STEP set, it stops for good in the middle of
# writing that step's checkpoint (after the weights, before the optimizer state) so the
# test can SIGKILL it there.
PAUSING_TRAINER = """
import os, pathlib, sys, time
import diffformer.checkpoint as checkpoint
from diffformer.cli import app

pause_at = os.environ.get("PAUSE_AT_STEP")
real_fsync = checkpoint.fsync_file

def fsync_then_maybe_pause(path):
    real_fsync(path)
    if pause_at and f"step-{int(pause_at):08d}" in str(path) and path.name == "model.safetensors":
        pathlib.Path(os.environ["PAUSE_MARKER"]).write_text("paused mid-write")
        time.sleep(600)

checkpoint.fsync_file = fsync_then_maybe_pause
sys.argv[0] = "diffformer"
app()
"""


def _start(tmp_path, *args, env_extra=None):
    script = tmp_path / "pausing_trainer.py"
    script.write_text(PAUSING_TRAINER)
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, str(script), "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(tmp_path, *args, env_extra=None):
    process = _start(tmp_path, *args, env_extra=env_extra)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _recipe(tmp_path, name, steps=24, **train):
    text = yaml.safe_dump(
        {
            "name": name,
            "seed": 5,
            "output": str(tmp_path / name),
            "model": {
                "d_model": 32,
                "n_layers": 2,
                "n_heads": 4,
                "max_seq_len": 64,
                "dropout": 0.1,
                "attention": {"kind": "differential"},
            },
            "data": {"task": "mqar", "vocab_size": 32, "num_pairs": [3, 4], "seq_len": [24, 32]},
            "train": {
                "steps": steps,
                "batch_size": 8,
                "lr": 3e-3,
                "log_every": 1,
                "checkpoint_every": 3,
                "keep_checkpoints": 2,
                **train,
            },
            "eval": {"every": 6, "batches": 2},
        }
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _wait_for_first_checkpoint(run_dir, timeout=120):
    deadline = time.time() + timeout
    while not RunFolder(run_dir).complete_checkpoints() and time.time() < deadline:
        time.sleep(0.02)


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def _losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"], m.get("eval_loss")) for m in lines]


def _assert_same_run(run_dir, reference_dir):
    expected, got = _weights(reference_dir), _weights(run_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
    assert _losses(run_dir) == _losses(reference_dir), "the loss curve must be the same"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("reference")
    code, _, err = _run(tmp_path, str(_recipe(tmp_path, "run")))
    assert code == 0, err
    return tmp_path / "run"


def test_run_folder_holds_everything_a_run_needs(uninterrupted):
    run = uninterrupted
    assert {p.name for p in run.iterdir()} >= {
        "recipe.yaml",
        "model.safetensors",
        "metrics.jsonl",
        "summary.json",
        "checkpoints",
    }
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["model"]["vocab_size"] == 32, "the resolved recipe records what the data decided"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 25))
    assert {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu"} <= set(metrics[0])
    assert all(m["mfu"] is None for m in metrics if "mfu" in m), "no honest CPU peak is known: MFU is n/a"
    assert "eval_accuracy" in metrics[5] and "eval_exact_match" in metrics[5]
    assert [p.name for p in RunFolder(run).complete_checkpoints()] == ["step-00000021", "step-00000024"]
    loaded = load_trained_model(run)
    assert loaded.step == 24 and loaded.tokens_seen == metrics[-1]["tokens"]
    assert 24 * 8 * 24 < loaded.tokens_seen < 24 * 8 * 32, "8 sequences of 24 or 32 tokens per step"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 24
    throughput = summary["throughput"]
    assert throughput["tokens_per_sec"] > 0 and throughput["mfu"] is None and throughput["peak_flops"] is None
    assert "DIFFFORMER_PEAK_TFLOPS" in throughput["peak_source"]


def test_sigkill_at_a_random_moment_then_resume_is_exact(uninterrupted, tmp_path):
    recipe = _recipe(tmp_path, "run")
    process = _start(tmp_path, str(recipe))
    _wait_for_first_checkpoint(tmp_path / "run")
    time.sleep(random.uniform(0.0, 0.4))
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, _, err = _run(tmp_path, str(recipe), "--resume")
    assert code == 0, err
    _assert_same_run(tmp_path / "run", uninterrupted)


def test_sigkill_during_a_checkpoint_write_then_resume_is_exact(uninterrupted, tmp_path):
    recipe = _recipe(tmp_path, "run")
    marker = tmp_path / "paused"
    process = _start(tmp_path, str(recipe), env_extra={"PAUSE_AT_STEP": "9", "PAUSE_MARKER": str(marker)})
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the trainer never reached the checkpoint write"
    process.send_signal(signal.SIGKILL)
    process.wait()
    leftovers = list((tmp_path / "run" / "checkpoints").glob(".tmp-step-00000009*"))
    assert leftovers, "the kill landed inside the write of step 9"
    assert load_trained_model(tmp_path / "run").step == 6, "the previous checkpoint is intact"
    code, _, err = _run(tmp_path, str(tmp_path / "run"))  # resuming on the run folder
    assert code == 0, err
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    _assert_same_run(tmp_path / "run", uninterrupted)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(uninterrupted, tmp_path):
    recipe = _recipe(tmp_path, "run")
    process = _start(tmp_path, str(recipe))
    _wait_for_first_checkpoint(tmp_path / "run")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("training finished before the interrupt arrived")
    assert process.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    stopped_at = load_trained_model(tmp_path / "run").step
    assert stopped_at == int(err.split("interrupted at step ")[1].split(";")[0]), "the checkpoint is the last step"
    code, _, err = _run(tmp_path, str(recipe), "--resume")
    assert code == 0, err
    _assert_same_run(tmp_path / "run", uninterrupted)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import diffformer.training.objective as loop

    calls = {"n": 0}
    real_loss = loop.scored_loss

    def loss_that_explodes(logits, targets):
        calls["n"] += 1
        value = real_loss(logits, targets)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(loop, "scored_loss", loss_that_explodes)
    recipe = _recipe(tmp_path, "run", steps=10)
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 1
    assert "loss became nan" in result.stderr and "at step 5" in result.stderr
    assert "last good checkpoint (step-00000003) is kept" in result.stderr
    assert load_trained_model(tmp_path / "run").step == 3


def test_resuming_a_finished_run_trains_nothing_and_reports_it(tmp_path):
    recipe = _recipe(tmp_path, "run", steps=3)
    first = runner.invoke(app, ["train", str(recipe), "--resume", "--json"])  # --resume on nothing starts fresh
    assert first.exit_code == 0, first.output
    before = _weights(tmp_path / "run")
    again = runner.invoke(app, ["train", str(recipe), "--resume", "--json"])
    assert again.exit_code == 0 and "already finished at step 3" in again.stderr
    assert json.loads(again.stdout)["final_loss"] == json.loads(first.stdout)["final_loss"]
    assert all(torch.equal(before[k], v) for k, v in _weights(tmp_path / "run").items())


def test_existing_run_folder_is_not_overwritten_and_resume_checks_the_recipe(tmp_path):
    recipe = _recipe(tmp_path, "run", steps=3)
    assert runner.invoke(app, ["train", str(recipe)]).exit_code == 0
    before = _weights(tmp_path / "run")
    again = runner.invoke(app, ["train", str(recipe)])
    assert again.exit_code == 2 and "already exists; add --resume" in again.stderr
    changed = runner.invoke(app, ["train", str(recipe), "--resume", "--set", "model.d_model=64"])
    assert changed.exit_code == 2 and "settings differ from the recipe's (model.d_model: 32 → 64)" in changed.stderr
    after = _weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_text_run_end_to_end(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over {i % 7} lazy dogs.\n" for i in range(300)))
    recipe = tmp_path / "text.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "text",
                "output": str(tmp_path / "text-run"),
                "model": {
                    "d_model": 32,
                    "n_layers": 1,
                    "n_heads": 4,
                    "max_seq_len": 32,
                    "attention": {"kind": "doubly_normalized"},
                },
                "data": {
                    "task": "text",
                    "path": "corpus.txt",
                    "tokenizer": {"kind": "bpe", "vocab_size": 320},
                    "seq_len": 32,
                },
                "train": {"steps": 6, "batch_size": 4, "precision": "bf16", "log_every": 2, "checkpoint_every": 3},
                "eval": {"every": 3, "batches": 2},
            }
        )
    )
    result = runner.invoke(app, ["train", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 6 and summary["eval"]["bits_per_byte"] > 0
    assert summary["eval"]["perplexity"] == pytest.approx(torch.tensor(summary["eval"]["loss"]).exp().item(), rel=1e-4)
    run = tmp_path / "text-run"
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(run / "tokenizer.json")).get_vocab_size() == 320
    assert load_trained_model(run).model.config.vocab_size == 320


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(55, config) == pytest.approx(0.55)
    assert learning_rate(100, config) == pytest.approx(0.1)
    assert TrainConfig(steps=50).warmup == 5


def test_weight_decay_skips_norms_lambdas_and_embeddings():
    from diffformer import ModelConfig, Transformer

    model = Transformer(
        ModelConfig(
            vocab_size=20, d_model=32, n_heads=4, n_layers=1, position="learned", attention={"kind": "differential"}
        )
    )
    decayed, kept = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    kept_names = {names[id(p)] for p in kept["params"]}
    assert "blocks.0.attention.q_proj.weight" in decayed_names and "blocks.0.mlp.down.weight" in decayed_names
    assert {
        "embed.weight",
        "position_embedding.weight",
        "blocks.0.attention.lambda_q1",
        "blocks.0.attention.subln.weight",
        "final_norm.weight",
    } <= kept_names
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tmp_path):
    recipe = _recipe(tmp_path, "run", steps=6)
    assert runner.invoke(app, ["train", str(recipe)]).exit_code == 0
    run = tmp_path / "run"
    (run / "summary.json").unlink()  # as if killed before finishing...
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 7, "tokens": 12')  # ...in the middle of writing a line
    result = runner.invoke(app, ["train", str(recipe), "--resume", "--set", "train.steps=9"])
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


def test_a_corrupt_line_inside_metrics_is_a_clear_error(tmp_path):
    from diffformer.errors import CheckpointError

    folder = RunFolder(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2: not a JSON record"):
        folder.read_log()


def test_the_loop_is_headless_and_reports_to_listeners(tmp_path):
    from diffformer.recipe import load_recipe
    from diffformer.training.listeners import TrainingListener
    from diffformer.training.loop import train

    class Recorder(TrainingListener):
        def __init__(self):
            self.events = []

        def on_start(self, name, step, total_steps, resumed_from):
            self.events.append(("start", step, total_steps, resumed_from))

        def on_step(self, report):
            self.events.append(("step", report.step))

        def on_record(self, record):
            self.events.append(("record", record["step"], "eval_loss" in record))

        def on_end(self):
            self.events.append(("end",))

    listener = Recorder()
    result = train(load_recipe(_recipe(tmp_path, "run", steps=6, log_every=3)), listeners=[listener])
    assert result.steps == 6 and not result.already_finished
    assert listener.events[0] == ("start", 0, 6, None) and listener.events[-1] == ("end",)
    assert [e[1] for e in listener.events if e[0] == "step"] == [1, 2, 3, 4, 5, 6]
    assert [e[1:] for e in listener.events if e[0] == "record"] == [(3, False), (6, True)]
    again = train(load_recipe(_recipe(tmp_path, "run", steps=6)), resume=True, listeners=[listener])
    assert again.already_finished and again.final_loss == result.final_loss


def test_evaluate_restores_training_mode_when_a_batch_fails():
    from diffformer import ModelConfig, Transformer
    from diffformer.metrics import evaluate

    class BrokenData:
        def batch(self, seed, split, index, batch_size):
            raise RuntimeError("disk gone")

    model = Transformer(ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2)).train()
    with pytest.raises(RuntimeError, match="disk gone"):
        evaluate(model, BrokenData(), 0, 2, 4, torch.device("cpu"))
    assert model.training, "evaluate must hand the model back in training mode"


@pytest.mark.parametrize(("bf16_rate", "expected"), [(800e9, "bf16"), (150e9, "fp32")])
def test_auto_precision_is_bf16_only_where_bf16_matmuls_are_twice_as_fast(monkeypatch, bf16_rate, expected):
    import diffformer.devices as devices

    rates = {"fp32": 200e9, "bf16": bf16_rate}
    measured = lambda device_type, index, precision: devices.PeakFlops(rates[precision], "test")  # noqa: E731
    monkeypatch.setattr(devices, "_measured_peak", measured)
    assert devices.resolve_precision("auto", torch.device("cpu")) == expected
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_auto_precision_is_recorded_and_a_resume_keeps_it(tmp_path, monkeypatch):
    import diffformer.training.loop as loop

    recipe = _recipe(tmp_path, "run", steps=3, precision="auto")
    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "fp32")
    assert runner.invoke(app, ["train", str(recipe)]).exit_code == 0
    run = RunFolder(tmp_path / "run")
    assert yaml.safe_load(run.recipe_file.read_text())["train"]["precision"] == "fp32"
    assert run.read_manifest()["settings"]["train.precision"] == "fp32"
    # On a machine where auto would pick bf16, continuing the run keeps the float32 it was trained in.
    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "bf16")
    longer = _recipe(tmp_path, "run", steps=5, precision="auto")
    result = runner.invoke(app, ["train", str(longer), "--resume"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(run.recipe_file.read_text())["train"]["precision"] == "fp32"
    assert load_trained_model(run.path).step == 5
    # ... and says so in one line: the kept setting is not what auto would choose on this machine.
    kept = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(kept) == 1 and "keeps train.precision=fp32" in kept[0] and "auto would choose bf16" in kept[0]
