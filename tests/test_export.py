"""`diffformer export`: every language-model run loads in transformers' AutoModelForCausalLM with the logits
diffformer computes, tokenizer included — vanilla + rope as a Llama model, every other kind and position
through the exported modelling file (trust_remote_code); lm-evaluation-harness scores an exported run on a
local task with diffformer's own log-likelihoods."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ATTENTION_VARIANTS, KINDS, small_model
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.hf.llama import interleaved_to_half
from diffformer.hf.remote_code import remote_config, remote_weights
from diffformer.model.attention import kind_entry

transformers = pytest.importorskip("transformers")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _hugging_face_home(tmp_path, monkeypatch):
    # Remote code is copied into HF_HOME's module cache; keep it in the test's folder.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-home" / "modules"))


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
    assert "trust_remote_code" not in (tmp_path / "hf" / "README.md").read_text(), "a Llama folder needs no custom code"
    again = runner.invoke(app, ["export", str(run), str(tmp_path / "hf")])
    assert again.exit_code != 0 and "not empty" in again.output
    (tmp_path / "a-file").write_text("kept")
    onto_a_file = runner.invoke(app, ["export", str(run), str(tmp_path / "a-file")])
    assert onto_a_file.exit_code != 0 and "is a file" in onto_a_file.output
    assert (tmp_path / "a-file").read_text() == "kept"


@pytest.mark.parametrize("position", ["rope", "alibi", "learned", "none"])
@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_the_exported_modelling_code_gives_diffformers_logits(variant, position):
    from diffformer.hf.remote.modeling_diffformer import DiffformerConfig, DiffformerForCausalLM

    ours = small_model(ATTENTION_VARIANTS[variant], position=position, n_kv_heads=2).eval()
    theirs = DiffformerForCausalLM(DiffformerConfig(**remote_config(ours.config))).eval()
    theirs.load_state_dict(remote_weights(ours), strict=True)
    tokens = torch.randint(0, 37, (2, 19))
    with torch.no_grad():
        torch.testing.assert_close(theirs(tokens).logits, ours(tokens), rtol=1e-4, atol=1e-5)


# Every kind the registry says exports; the ones a Llama folder expresses go through the remote code too here.
EXPORTED_KINDS = [kind for kind in KINDS if kind_entry(kind).exports]
REMOTE_CODE_KINDS = [kind for kind in EXPORTED_KINDS if not kind_entry(kind).llama_layout]


@pytest.mark.parametrize("overrides", [{"uniform_attention": True}, {"tie_embeddings": True}, {"n_layers": 4}])
@pytest.mark.parametrize("kind", EXPORTED_KINDS)
def test_the_exported_modelling_code_covers_the_control_tied_heads_and_the_lambda_schedule(kind, overrides):
    from diffformer.hf.remote.modeling_diffformer import DiffformerConfig, DiffformerForCausalLM

    ours = small_model(ATTENTION_VARIANTS[kind], **overrides).eval()
    theirs = DiffformerForCausalLM(DiffformerConfig(**remote_config(ours.config))).eval()
    theirs.load_state_dict(remote_weights(ours), strict=True)
    tokens = torch.randint(0, 37, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(theirs(tokens).logits, ours(tokens), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", REMOTE_CODE_KINDS)
def test_an_exported_run_of_another_kind_loads_with_trust_remote_code(tmp_path, kind):
    run = _train(tmp_path, kind)
    result = runner.invoke(app, ["export", str(run), str(tmp_path / "hf"), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)
    assert written["layout"] == "remote code" and any(f.endswith("modeling_diffformer.py") for f in written["files"])
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "trust_remote_code=True" in card and f"{kind} attention" in card and "- loss: " in card
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    assert tokenizer.eos_token == "<|endoftext|>" and model.config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer("the keys and the values", return_tensors="pt").input_ids
    ours = load_trained_model(run).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
        greedy = model.generate(ids, max_new_tokens=4, do_sample=False)
        expected = ids
        for _ in range(4):  # diffformer's own greedy continuation
            expected = torch.cat([expected, ours(expected)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(greedy, expected)


def test_the_exported_code_refuses_a_kind_it_was_not_written_for():
    """No silent fallback: a kind the modelling file does not implement is an error, not softmax."""
    from diffformer.hf.remote.modeling_diffformer import DiffformerConfig, DiffformerForCausalLM

    config = remote_config(small_model({"kind": "vanilla"}).config)
    with pytest.raises(ValueError, match="this modelling code implements .* not 'linear'"):
        DiffformerForCausalLM(DiffformerConfig(**{**config, "attention_kind": "linear"}))


def test_a_kind_the_registry_does_not_export_is_refused_in_one_line(tmp_path, monkeypatch):
    from dataclasses import replace

    from diffformer.model.attention import registry

    run = _train(tmp_path, "sigmoid")
    monkeypatch.setitem(registry.ATTENTION_KINDS, "sigmoid", replace(kind_entry("sigmoid"), exports=False))
    result = runner.invoke(app, ["export", str(run), str(tmp_path / "hf")])
    assert (
        result.exit_code == 2
        and "the exported modelling code knows" in result.output
        and "not sigmoid" in result.output
    )
    assert "Traceback" not in result.output and not (tmp_path / "hf").exists()


def test_left_padding_is_refused_by_the_exported_model():
    from diffformer.hf.remote.modeling_diffformer import DiffformerConfig, DiffformerForCausalLM

    model = DiffformerForCausalLM(DiffformerConfig(**remote_config(small_model({"kind": "vanilla"}).config)))
    tokens = torch.randint(0, 37, (2, 5))
    model(tokens, attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))  # right padding is fine
    with pytest.raises(ValueError, match="right padding only"):
        model(tokens, attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))


def test_focus_runs_are_refused_in_one_line(tmp_path):
    recipe = {
        "name": "focus",
        "output": str(tmp_path / "focus"),
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "data": {"task": "focus", "segments": 4, "classes": 2},
        "train": {"steps": 2, "batch_size": 4},
    }
    (tmp_path / "focus.yaml").write_text(yaml.safe_dump(recipe))
    assert runner.invoke(app, ["train", str(tmp_path / "focus.yaml")]).exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "focus"), str(tmp_path / "hf")])
    assert result.exit_code != 0 and "focus-lab run" in result.output and "only language models export" in result.output
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


LOCAL_TASK_DIR = Path(__file__).parent.parent / "docs" / "lm-eval"  # shipped, used by the README's command


def test_lm_evaluation_harness_scores_an_export_with_diffformers_log_likelihoods(tmp_path):
    """The README's command, on a local task (no download): lm-eval's log-likelihood of each continuation
    equals the one diffformer computes from its own logits."""
    import glob
    import os
    import shutil
    import subprocess
    import sys

    pytest.importorskip("lm_eval")
    run = _train(tmp_path, "differential")
    assert runner.invoke(app, ["export", str(run), str(tmp_path / "hf")]).exit_code == 0
    data = LOCAL_TASK_DIR / "diffformer_local.jsonl"
    documents = [(d["context"], d["continuation"]) for d in map(json.loads, data.read_text().splitlines())]
    command = [shutil.which("lm_eval", path=os.path.dirname(sys.executable)) or "lm_eval", "--model", "hf"]
    command += ["--model_args", f"pretrained={tmp_path / 'hf'},trust_remote_code=True", "--tasks", "diffformer_local"]
    command += ["--include_path", "docs/lm-eval", "--device", "cpu", "--batch_size", "1"]
    command += ["--output_path", str(tmp_path / "results"), "--log_samples"]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ.copy(), cwd=LOCAL_TASK_DIR.parent.parent
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    (samples,) = glob.glob(str(tmp_path / "results" / "**" / "samples_diffformer_local_*.jsonl"), recursive=True)
    lines = [json.loads(line) for line in open(samples)]
    scored = {line["doc"]["context"]: float(line["resps"][0][0][0]) for line in lines}  # stored as text

    ours = load_trained_model(run).model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    for context, continuation in documents:
        whole = tokenizer(context + continuation).input_ids
        start = len(tokenizer(context).input_ids)
        with torch.no_grad():
            log_probs = ours(torch.tensor([whole])).log_softmax(-1)[0]
        expected = sum(log_probs[t - 1, whole[t]].item() for t in range(start, len(whole)))
        assert scored[context] == pytest.approx(expected, abs=1e-4)
