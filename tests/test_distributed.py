"""Training under torchrun with 2 CPU processes (gloo): DDP and FSDP2 match one process, their
checkpoints load anywhere, and a rank killed mid-run resumes exactly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.launch import train_from_path
from diffformer.run_folder import RunFolder

runner = CliRunner()
STEPS = 40


def _recipe(folder: Path, name: str, parallel: str = "ddp", grad_accumulation: int = 1, **extra) -> Path:
    text = yaml.safe_dump(
        {
            **extra,
            "name": name,
            "seed": 3,
            "output": str(folder / name),
            "model": {
                "d_model": 32,
                "n_layers": 2,
                "n_heads": 4,
                "max_seq_len": 64,
                "dropout": 0.1,  # dropout too must match: its masks follow the global batch index
                "tie_embeddings": True,  # the tie must survive gathering FSDP's shards
                "attention": {"kind": "differential"},
            },
            "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
            "train": {
                "steps": STEPS,
                "batch_size": 4,
                "grad_accumulation": grad_accumulation,
                "lr": 3e-3,
                "log_every": 1,
                "checkpoint_every": 4,
                "keep_checkpoints": 2,
                "parallel": parallel,
                "precision": "fp32",  # compared within float32 tolerance
                "activation_checkpointing": parallel == "fsdp",  # FSDP2 with recomputed blocks
            },
            "eval": {"every": 20, "batches": 2},
        }
    )
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def _torchrun(*args: str) -> subprocess.Popen:
    # OMP_NUM_THREADS=1 as torchrun would set it, so reruns compute with the same thread count.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*command, "-m", "diffformer", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process accumulating 2 micro-batches of 4, and 2 ranks × 4 under DDP and under FSDP."""
    folder = tmp_path_factory.mktemp("distributed")
    train_from_path(_recipe(folder, "single", grad_accumulation=2))
    for parallel in ("ddp", "fsdp"):
        trackers = {"trackers": {"tensorboard": True}} if parallel == "ddp" else {}
        _finish(_torchrun(str(_recipe(folder, parallel, parallel, **trackers))))
    return folder


def test_under_torchrun_rank_0_alone_writes_the_tracker(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = list((runs / "ddp" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1, "one writer: rank 0"
    events = EventAccumulator(str(runs / "ddp" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(_losses(runs / "ddp"))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_give_the_losses_and_weights_of_one_process_with_the_same_global_batch(runs, parallel):
    single, spread = runs / "single", runs / parallel
    assert len(_losses(spread)) == STEPS
    assert _losses(spread) == pytest.approx(_losses(single), rel=1e-4, abs=1e-5)
    expected, got = load_file(str(single / "model.safetensors")), load_file(str(spread / "model.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-4, msg=name)
    summary = json.loads((spread / "summary.json").read_text())
    assert summary["tokens_seen"] == json.loads((single / "summary.json").read_text())["tokens_seen"]


def test_an_fsdp_checkpoint_loads_in_one_process_and_in_eval_probe_and_compare(runs, tmp_path):
    loaded = load_trained_model(runs / "fsdp")
    assert loaded.step == STEPS
    assert loaded.model.lm_head.weight is loaded.model.embed.weight
    evaluated = runner.invoke(app, ["eval", str(runs / "fsdp"), "--json", "--batches", "2"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["metrics"]["loss"] > 0
    probed = runner.invoke(app, ["probe", str(runs / "fsdp"), "--json", "--samples", "4"])
    assert probed.exit_code == 0, probed.output
    compared = runner.invoke(
        app, ["compare", str(runs / "single"), str(runs / "fsdp"), "--json", "--output", str(tmp_path / "compared")]
    )
    assert compared.exit_code == 0, compared.output
    # And a run trained sharded continues in one process: the checkpoint is the full state.
    shutil.copytree(runs / "fsdp", tmp_path / "fsdp")
    more = yaml.safe_load((runs / "fsdp.yaml").read_text())
    more["train"]["steps"], more["output"] = STEPS + 4, str(tmp_path / "fsdp")
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(more))
    result = train_from_path(tmp_path / "longer.yaml", resume=True).result
    assert result.steps == STEPS + 4 and result.resumed_from == STEPS


def _worker_of_rank(agent: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=`rank` (workers are the agent's children)."""
    children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def test_sigkill_of_one_rank_then_resume_under_torchrun_is_exact(runs, tmp_path):
    recipe = _recipe(tmp_path, "fsdp", "fsdp")
    agent = _torchrun(str(recipe))
    run = RunFolder(tmp_path / "fsdp")
    deadline = time.time() + 120
    while not run.complete_checkpoints() and time.time() < deadline and agent.poll() is None:
        time.sleep(0.01)
    victim = _worker_of_rank(agent, 1)
    assert victim is not None and agent.poll() is None, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    agent.communicate(timeout=120)
    assert agent.returncode != 0
    assert not run.summary_file.exists(), "the killed run must not have finished"
    _finish(_torchrun(str(recipe), "--resume"))
    expected, got = load_file(str(runs / "fsdp" / "model.safetensors")), load_file(str(run.model_file))
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after the resume"
    assert _losses(run.path) == _losses(runs / "fsdp")
