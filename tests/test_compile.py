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
        "train": {"steps": 8, "batch_size": 4, "lr": 3e-3, "log_every": 1, "compile": compile, "precision": "fp32"},
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


def test_the_doubly_normalized_exactness_check_compiles_into_one_graph():
    """Under torch.compile the fast-path/exact-scan choice is a torch.cond, not a graph break,
    and both branches still match the definition of the column log-sum-exp."""
    from diffformer.model.attention.doubly_normalized import MASKED_SCORE, _column_prefix_logsumexp

    compiled = torch.compile(_column_prefix_logsumexp, fullgraph=True)  # fails on any graph break
    future = torch.arange(9)[None, :] > torch.arange(3, 9)[:, None]  # queries 3..8
    for spread in (3.0, 400.0):  # the fast path, then the exact scan
        masked = (torch.randn(2, 3, 6, 9) * spread).masked_fill(future, MASKED_SCORE)
        carry = torch.randn(2, 3, 9) * spread
        _, log_running, shift = compiled(masked, carry, 3, fused=True)
        expected = torch.logaddexp(carry.unsqueeze(-2).double(), masked.double().logcumsumexp(dim=-2))
        torch.testing.assert_close(
            (log_running + shift)[..., ~future].double(), expected[..., ~future], atol=1e-4, rtol=1e-6
        )


def test_a_compiler_failure_is_one_line_naming_the_way_out(tmp_path, monkeypatch):
    from torch._dynamo.exc import TorchDynamoException
    from typer.testing import CliRunner

    from diffformer.cli import app

    class FailsToCompile(torch.nn.Module):
        def forward(self, tokens):
            raise TorchDynamoException("C++ compile error: no compiler found")

    monkeypatch.setattr(torch, "compile", lambda module: FailsToCompile())
    path = tmp_path / "recipe.yaml"
    recipe = {
        "name": "broken",
        "output": str(tmp_path / "broken"),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 64},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {"steps": 4, "batch_size": 4, "compile": True},
    }
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 1
    assert "torch.compile failed at step 1" in result.output and "--set train.compile=false" in result.output
    assert "Traceback" not in result.output
