"""`diffformer export`: a vanilla run loads in transformers' AutoModelForCausalLM with the logits diffformer
computes, tokenizer included; kinds without a standard layout are refused in one line."""

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.export import interleaved_to_half

transformers = pytest.importorskip("transformers")
runner = CliRunner()


def _train(tmp_path, kind="vanilla", **model):
    (tmp_path / "text.txt").write_text("the keys and the values of attention\n" * 200)
    recipe = {
        "name": kind,
        "output": str(tmp_path / kind),
        "model": {
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 4,
            "n_kv_heads": 2,
            "max_seq_len": 64,
            "attention": {"kind": kind},
            **model,
        },
        "data": {
            "task": "text",
            "path": str(tmp_path / "text.txt"),
            "tokenizer": {"kind": "bpe", "vocab_size": 300},
            "seq_len": 32,
        },
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "precision": "fp32"},
        "eval": {"every": 3, "batches": 1},
    }
    (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(recipe))
    assert runner.invoke(app, ["train", str(tmp_path / f"{kind}.yaml")]).exit_code == 0
    return tmp_path / kind


@pytest.mark.parametrize("tie", [False, True])
def test_an_exported_vanilla_run_gives_diffformers_logits_in_transformers(tmp_path, tie):
    run = _train(tmp_path, tie_embeddings=tie)
    result = runner.invoke(app, ["export", str(run), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ids = tokenizer("the keys and the values", return_tensors="pt").input_ids
    ours = load_trained_model(run).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
    again = runner.invoke(app, ["export", str(run), str(tmp_path / "hf")])
    assert again.exit_code != 0 and "not empty" in again.output


def test_other_kinds_and_positions_are_refused_in_one_line(tmp_path):
    run = _train(tmp_path, "differential")
    result = runner.invoke(app, ["export", str(run), str(tmp_path / "hf")])
    assert result.exit_code != 0 and "differential attention has no standard Hugging Face layout" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "hf").exists()


def test_the_rotary_permutation_keeps_every_query_key_product():
    from diffformer.model.position import RotaryEmbedding

    torch.manual_seed(0)
    heads, d = 2, 8
    q_weight, k_weight, x = torch.randn(heads * d, 16), torch.randn(heads * d, 16), torch.randn(5, 16)
    rotary = RotaryEmbedding(d, 16)
    ours_q = rotary((x @ q_weight.T).view(5, heads, d).transpose(0, 1)[None])
    ours_k = rotary((x @ k_weight.T).view(5, heads, d).transpose(0, 1)[None])

    def half_rotary(t):  # Llama's rotate_half layout
        angles = torch.outer(torch.arange(5).float(), rotary.inverse_frequency)
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        first, second = t[..., : d // 2], t[..., d // 2 :]
        return t * cos + torch.cat([-second, first], -1) * sin

    theirs_q = half_rotary((x @ interleaved_to_half(q_weight, heads).T).view(5, heads, d).transpose(0, 1)[None])
    theirs_k = half_rotary((x @ interleaved_to_half(k_weight, heads).T).view(5, heads, d).transpose(0, 1)[None])
    torch.testing.assert_close(
        theirs_q @ theirs_k.transpose(-1, -2), ours_q @ ours_k.transpose(-1, -2), rtol=1e-5, atol=1e-5
    )
