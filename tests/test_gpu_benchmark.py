"""benchmarks/gpu.py's logic, on a CPU (issue 28): rows for every kind × precision × compile, MFU only against a
known GPU's datasheet, shapes that do not fit reported and skipped, and the gpt2-small slice's model."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import gpu  # noqa: E402

TINY = ["--device", "cpu", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--steps", "1", "--warmup", "0"]
TINY += ["--tokens-per-step", "64"]  # the default (32k tokens a step, a 50k vocabulary) is sized for a GPU


def test_every_kind_precision_and_length_gets_a_row_with_honest_mfu(capsys):
    gpu.main(
        [
            *TINY,
            "--lengths",
            "16",
            "32",
            "--precisions",
            "fp32",
            "bf16",
            "--no-compile",
            "--no-gpt2-slice",
            "--json",
        ]
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    expected = {(k, t, p) for k in gpu.ATTENTION_KINDS for t in (16, 32) for p in ("fp32", "bf16")}
    assert {(r["kind"], r["length"], r["precision"]) for r in rows} == expected
    for row in rows:
        assert row["tokens_per_second"] > 0 and row["model_flops_per_second"] > 0
        assert row["batch"] == 64 // row["length"] and row["compiled"] is False
        assert row["mfu"] is None and row["peak_memory_bytes"] is None and row["sdpa_backend"] == "n/a (cpu)"


def test_a_shape_that_does_not_fit_is_reported_and_the_rest_go_on(monkeypatch, capsys):
    real = gpu.time_training

    def out_of_memory_at_32(config, batch, length, precision, compiled, args):
        if length == 32:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(config, batch, length, precision, compiled, args)

    monkeypatch.setattr(gpu, "time_training", out_of_memory_at_32)
    gpu.main(
        [
            *TINY,
            "--lengths",
            "16",
            "32",
            "--kinds",
            "vanilla",
            "--precisions",
            "fp32",
            "--no-compile",
            "--no-gpt2-slice",
        ]
    )
    table = capsys.readouterr().out
    assert "out of memory" in table and "tok" in table.splitlines()[1]
    assert sum("vanilla" in line for line in table.splitlines()) == 2


def test_mfu_reads_against_the_datasheet_of_a_known_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    peak, name = gpu.datasheet_peak(torch.device("cuda"))
    assert peak == 989e12 and "H100" in name and "bf16" in name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert gpu.datasheet_peak(torch.device("cuda"))[0] is None
    assert gpu.datasheet_peak(torch.device("cpu")) == (None, "none (not a GPU)")


def test_the_gpt2_slice_is_the_recipes_124m_model():
    import yaml

    from diffformer import ModelConfig, Transformer

    recipe = yaml.safe_load(gpu.GPT2_RECIPE.read_text())
    with torch.device("meta"):
        model = Transformer(ModelConfig(**{**recipe["model"], "vocab_size": 50304}))
    assert model.num_parameters() == pytest.approx(124.0e6, rel=0.01)


def test_asking_for_cuda_without_one_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="has no CUDA device"):
        gpu.main(["--device", "cuda"])
