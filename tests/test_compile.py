"""train.compile: a compiled run gives the results of an eager one, within float tolerance, for every kind.

Compilation on CPU takes ~20–35 s per kind (inductor writes and builds C++), so the models
are tiny and the runs short. Dropout is off: inductor draws its own random numbers, so a
compiled run's dropout masks differ from eager ones (they are still a pure function of the seed).
"""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from diffformer.launch import train_from_path
from diffformer.model.attention import ATTENTION_KINDS


def _train(tmp_path, kind: str, compile: bool) -> tuple[list[float], dict]:
    name = f"{kind}-{'compiled' if compile else 'eager'}"
    recipe = {
        "name": name,
        "seed": 2,
        "output": str(tmp_path / name),
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64, "attention": {"kind": kind}},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {"steps": 8, "batch_size": 4, "lr": 3e-3, "log_every": 1, "compile": compile},
        "eval": {"every": 100, "batches": 2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train_from_path(path)
    run = tmp_path / name
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return losses, load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("kind", list(ATTENTION_KINDS))
def test_a_compiled_run_matches_an_eager_one(tmp_path, kind):
    eager_losses, eager_weights = _train(tmp_path, kind, compile=False)
    torch._dynamo.reset()
    counters.clear()
    compiled_losses, compiled_weights = _train(tmp_path, kind, compile=True)
    assert counters["stats"]["unique_graphs"] > 0, "the compiled run must actually have compiled graphs"
    assert len(compiled_losses) == 8
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert compiled_weights.keys() == eager_weights.keys()
    for name in eager_weights:
        torch.testing.assert_close(compiled_weights[name], eager_weights[name], rtol=1e-3, atol=1e-4, msg=name)
