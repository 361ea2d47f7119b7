"""Checkpoints: safetensors round trips and clear refusals of anything else."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffformer import ModelConfig, Transformer
from diffformer.checkpoint import (
    TrainingProgress,
    load_trained_model,
    named_optimizer_state,
    restore_training,
    save_checkpoint,
)
from diffformer.errors import CheckpointError
from diffformer.recipe import TrainConfig
from diffformer.run_folder import RunFolder
from diffformer.training.optimizer import build_optimizer

CONFIG = {
    "vocab_size": 40,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "tie_embeddings": True,
    "attention": {"kind": "differential"},
}


def _trained_pair():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**CONFIG))
    optimizer = build_optimizer(model, TrainConfig())
    for _ in range(2):
        model(torch.randint(0, 40, (2, 12))).square().mean().backward()
        optimizer.step()
    return model, optimizer


def _save(tmp_path, step=2, keep=3):
    model, optimizer = _trained_pair()
    recipe = {"name": "x", "model": CONFIG}
    state = named_optimizer_state(model, optimizer)
    save_checkpoint(tmp_path, model, state, recipe, TrainingProgress(step, 100 * step, 1.5), keep)
    return model, optimizer


def test_weights_and_optimizer_state_round_trip(tmp_path):
    model, optimizer = _save(tmp_path)
    loaded = load_trained_model(tmp_path)
    assert loaded.step == 2 and loaded.tokens_seen == 200
    for (name, expected), (_, got) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(expected, got), name
    assert loaded.model.lm_head.weight is loaded.model.embed.weight, "the tie survives saving"
    fresh = Transformer(ModelConfig(**CONFIG))
    fresh_optimizer = build_optimizer(fresh, TrainConfig())
    progress = restore_training(RunFolder(tmp_path).complete_checkpoints()[-1], fresh, fresh_optimizer)
    assert progress == TrainingProgress(2, 200, 1.5)
    for p_old, p_new in zip(model.parameters(), fresh.parameters()):
        old, new = optimizer.state[p_old], fresh_optimizer.state[p_new]
        assert torch.equal(old["exp_avg"], new["exp_avg"]) and torch.equal(old["exp_avg_sq"], new["exp_avg_sq"])
        assert float(old["step"]) == float(new["step"])


def test_only_the_latest_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step=step, keep=2)
    assert [p.name for p in RunFolder(tmp_path).complete_checkpoints()] == ["step-00000003", "step-00000004"]
    assert load_trained_model(tmp_path).step == 4


def test_a_safetensors_file_loads_directly(tmp_path):
    _save(tmp_path)
    assert load_trained_model(tmp_path / "checkpoints" / "step-00000002" / "model.safetensors").step == 2


def _corrupt(kind, tmp_path):
    _save(tmp_path)
    path = tmp_path / "model.safetensors"
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 1000])
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all" * 10)
    elif kind == "foreign":
        save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    elif kind == "future":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as file:
            metadata = file.metadata()
        save_file(load_file(str(path)), str(path), metadata={**metadata, "format_version": "99"})
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "is truncated"),
        ("garbage", "is truncated or not a safetensors file"),
        ("foreign", "is a safetensors file but not a diffformer checkpoint"),
        ("future", "has format version 99; this diffformer"),
    ],
)
def test_unreadable_checkpoints_are_refused_clearly(kind, message, tmp_path):
    path = _corrupt(kind, tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_trained_model(path)


def test_missing_checkpoint_and_empty_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_trained_model(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_trained_model(tmp_path)


def test_no_pickle_in_checkpoints(tmp_path):
    _save(tmp_path)
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert file.suffix in (".safetensors",), file
            header_length = int.from_bytes(file.read_bytes()[:8], "little")
            json.loads(file.read_bytes()[8 : 8 + header_length])  # a plain JSON header, no pickle


def test_a_checkpoint_cut_by_one_byte_is_refused(tmp_path):
    _save(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="is truncated or not a safetensors file"):
        load_trained_model(path)
