"""`diffformer import` and `init_from`: pretrained Llama and GPT-2 folders (built by transformers from configs,
random weights, offline) give transformers' logits exactly; conversions to differential attention start where
docs/formulas.md §27 says; a converted model trains from the CLI."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.hf.importing import Conversion, import_pretrained
from diffformer.model.hooks import run_with_cache

transformers = pytest.importorskip("transformers")
runner = CliRunner()
VOCAB = 300


@pytest.fixture(autouse=True)
def _hugging_face_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _perturbed(model):
    """Norm gains and biases start at 1 and 0 in transformers: vary them so no mapping passes by luck."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def _tokenizer_file(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<|endoftext|>"])
    tokenizer.train_from_iterator(["the keys and the values of attention, queried again"] * 50, trainer)
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


def _llama(folder, tie=False, theta=10000.0, kv_heads=2):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        rope_theta=theta,
    )
    model = _perturbed(transformers.LlamaForCausalLM(config))
    model.save_pretrained(str(folder), safe_serialization=True)
    _tokenizer_file(folder / "tokenizer.json")
    return model


def _gpt2(folder):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    model = _perturbed(transformers.GPT2LMHeadModel(config))
    model.save_pretrained(str(folder), safe_serialization=True)
    return model


def _tokens(length=24, vocab=VOCAB):
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(3))


def _import(tmp_path, source, conversion=Conversion(), name="imported"):
    files, record = import_pretrained(source, tmp_path / name, conversion)
    return load_trained_model(tmp_path / name).model.eval(), record


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_a_vanilla_llama_import_gives_transformers_logits(tmp_path, tie, theta):
    original = _llama(tmp_path / "llama", tie, theta)
    model, record = _import(tmp_path, tmp_path / "llama")
    with torch.no_grad():
        torch.testing.assert_close(model(_tokens()), original(_tokens()).logits, atol=1e-5, rtol=1e-5)
    assert record["distance_at_step_0"]["max_abs_logit_difference"] == 0.0
    assert model.config.rope_theta == theta and model.config.n_kv_heads == 2


def test_a_gpt2_import_gives_transformers_logits(tmp_path):
    original = _gpt2(tmp_path / "gpt2")
    model, _ = _import(tmp_path, tmp_path / "gpt2")
    assert (model.config.norm, model.config.mlp, model.config.bias, model.config.position) == (
        "layernorm",
        "gelu",
        True,
        "learned",
    )
    with torch.no_grad():
        torch.testing.assert_close(model(_tokens()), original(_tokens()).logits, atol=1e-5, rtol=1e-5)


def test_export_then_import_is_the_same_model(tmp_path):
    from test_export import _train

    run = _train(tmp_path)
    assert runner.invoke(app, ["export", str(run), str(tmp_path / "hf")]).exit_code == 0
    trained = load_trained_model(run).model.eval()
    model, _ = _import(tmp_path, tmp_path / "hf")
    tokens = _tokens(vocab=trained.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), trained(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("second_map", ["zero", "mirror"])
def test_a_v2_conversion_with_lambda_warmup_starts_as_the_pretrained_model(tmp_path, second_map):
    _llama(tmp_path / "llama")
    conversion = Conversion("differential_v2", second_map, lambda_warmup_steps=10)
    model, record = _import(tmp_path, tmp_path / "llama", conversion)
    vanilla, _ = _import(tmp_path, tmp_path / "llama", name="vanilla")
    assert record["distance_at_step_0"]["max_abs_logit_difference"] < 1e-4
    with torch.no_grad():
        _, cache = run_with_cache(model, _tokens(), names=lambda n: "hook_pattern" in n)
        _, reference = run_with_cache(vanilla, _tokens(), names=lambda n: "hook_pattern" in n)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern_1"], reference["blocks.1.attn.hook_pattern"])
    if second_map == "mirror":
        torch.testing.assert_close(cache["blocks.1.attn.hook_pattern_2"], cache["blocks.1.attn.hook_pattern_1"])
    else:  # zero queries: uniform over the visible keys
        uniform = torch.tril(torch.ones(24, 24)) / torch.arange(1, 25)[:, None]
        torch.testing.assert_close(cache["blocks.1.attn.hook_pattern_2"][0, 0], uniform)
    model.at_step(10)  # warm-up over: λ = sigmoid(0) = 1/2 subtracts, the model moves away
    with torch.no_grad():
        assert (model(_tokens()) - vanilla(_tokens())).abs().max() > 1e-3


@pytest.mark.parametrize("second_map", ["zero", "mirror"])
@pytest.mark.parametrize("sublayer_norm", [False, True])
def test_a_v1_conversion_reads_pretrained_head_2p_with_both_values(tmp_path, second_map, sublayer_norm):
    _llama(tmp_path / "llama", kv_heads=4)
    conversion = Conversion("differential", second_map, sublayer_norm, lambda_warmup_steps=5)
    model, record = _import(tmp_path, tmp_path / "llama", conversion)
    vanilla, _ = _import(tmp_path, tmp_path / "llama", name="vanilla")
    with torch.no_grad():
        _, cache = run_with_cache(model, _tokens(), names=lambda n: "hook_" in n)
        _, reference = run_with_cache(vanilla, _tokens(), names=lambda n: "blocks.0" in n)
    # Layer 0 sees the same input in both models: pair p's first map is pretrained head 2p.
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern_1"], reference["blocks.0.attn.hook_pattern"][:, 0::2])
    assert float(cache["blocks.0.attn.hook_lambda"]) == 0.0  # warm-up: λ starts at 0
    if not sublayer_norm:  # the pair's output is A1 · [V_2p, V_2p+1]: pretrained head 2p exactly, head 2p+1 not
        z, ref_z = cache["blocks.0.attn.hook_z"], reference["blocks.0.attn.hook_z"]  # (B, T, heads, w)
        torch.testing.assert_close(z[:, :, :, :8], ref_z[:, :, 0::2], atol=1e-5, rtol=1e-5)
    distance = record["distance_at_step_0"]
    assert 0 < distance["max_abs_logit_difference"] and 0 <= distance["top1_agreement"] <= 1
    assert model.config.attention.sublayer_norm is sublayer_norm


def test_a_grouped_query_model_converts_to_v2_not_v1(tmp_path):
    _llama(tmp_path / "llama", kv_heads=2)
    result = runner.invoke(
        app, ["import", str(tmp_path / "llama"), str(tmp_path / "v1"), "--attention", "differential"]
    )
    assert result.exit_code != 0 and "use differential_v2" in result.output and result.output.count("error:") == 1
    assert not (tmp_path / "v1").exists()


def test_a_converted_model_trains_from_the_cli_with_its_tokenizer(tmp_path):
    original = _llama(tmp_path / "llama")
    result = runner.invoke(
        app,
        ["import", str(tmp_path / "llama"), str(tmp_path / "diff"), "--attention", "differential_v2"]
        + ["--lambda-warmup", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["distance_at_step_0"]["max_abs_logit_difference"] < 1e-4
    recipe = yaml.safe_load((tmp_path / "diff" / "finetune.yaml").read_text())
    assert recipe["init_from"] == "." and recipe["data"]["tokenizer"] == {"kind": "file", "path": "tokenizer.json"}
    recipe["train"] |= {"steps": 2, "batch_size": 2, "lr": 1e-7, "warmup_steps": 0, "precision": "fp32"}
    recipe["data"]["seq_len"] = 32
    recipe["eval"] = {"every": 2, "batches": 1}
    recipe["track"] = {"every": 1, "batch_size": 2}
    (tmp_path / "diff" / "finetune.yaml").write_text(yaml.safe_dump(recipe))
    trained = runner.invoke(app, ["train", str(tmp_path / "diff" / "finetune.yaml")])
    assert trained.exit_code == 0, trained.output
    loaded = load_trained_model(tmp_path / "diff" / "finetuned")
    assert loaded.step == 2 and loaded.model.blocks[0].attention.lambda_ramp == 0.5  # 2 of 4 warm-up steps
    dynamics = [json.loads(line) for line in (tmp_path / "diff" / "finetuned" / "dynamics.jsonl").open()]
    lam = [record["average"]["lambda_value"] for record in dynamics]
    assert lam[0] == 0.0 and lam[1] == pytest.approx(0.25 * 0.5, rel=1e-3)  # λ = r(s)·sigmoid(≈0) as measured
    loaded.model.at_step(0)
    with torch.no_grad():  # lr 1e-7: still the pretrained model, so the weights did come from init_from
        torch.testing.assert_close(loaded.model.eval()(_tokens()), original(_tokens()).logits, atol=1e-3, rtol=1e-3)
    from tokenizers import Tokenizer

    kept = Tokenizer.from_file(str(tmp_path / "diff" / "finetuned" / "tokenizer.json")).get_vocab()
    assert kept == Tokenizer.from_file(str(tmp_path / "llama" / "tokenizer.json")).get_vocab()


def test_init_from_a_different_model_is_one_line(tmp_path):
    _llama(tmp_path / "llama")
    import_pretrained(tmp_path / "llama", tmp_path / "imported", Conversion())
    recipe = yaml.safe_load((tmp_path / "imported" / "finetune.yaml").read_text())
    recipe["model"]["n_layers"] = 3
    (tmp_path / "imported" / "finetune.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", str(tmp_path / "imported" / "finetune.yaml")])
    assert result.exit_code != 0 and result.output.count("error:") == 1
    assert "n_layers: 2 → 3" in result.output and "Traceback" not in result.output


def test_bad_sources_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    _gpt2(tmp_path / "gpt2")
    cases = [
        (["import", str(tmp_path / "empty"), str(tmp_path / "a")], "no config.json"),
        (["import", str(tmp_path / "pickled"), str(tmp_path / "b")], "pickled weights"),
        (["import", str(tmp_path / "gpt2"), str(tmp_path / "c"), "--attention", "sigmoid"], "--attention must be"),
        (["import", str(tmp_path / "gpt2"), str(tmp_path / "d"), "--second-map", "half"], "--second-map must be"),
        (["import", str(tmp_path / "gpt2"), str(tmp_path / "empty")], None),  # an empty folder is fine
        (["import", str(tmp_path / "gpt2"), str(tmp_path / "gpt2")], "not an empty folder"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, arguments)
        if message is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code != 0 and result.output.count("error:") == 1, (arguments, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert (tmp_path / "gpt2" / "model.safetensors").is_file()  # the refused target was left as it was
    exported = runner.invoke(app, ["export", str(tmp_path / "empty"), str(tmp_path / "hf-out")])
    assert exported.exit_code != 0 and "layernorm, gelu and biases" in exported.output
