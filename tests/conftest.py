import os

# Nothing may download at test time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

# diffformer sets MKL's reproducibility conditions on import, so it comes before this process loads torch.
import diffformer  # noqa: E402, F401, I001

import pytest  # noqa: E402
import torch  # noqa: E402

from diffformer import ModelConfig, Transformer  # noqa: E402
from diffformer.model.attention import ATTENTION_KINDS  # noqa: E402

# Every registered kind with its default options, so a kind added to the registry runs through every
# per-kind test (formulas, causality, capture, cache, forcing, export) without being listed here.
KINDS = list(ATTENTION_KINDS)
# Options beyond a kind's defaults that the same tests cover as well.
OPTION_VARIANTS = {
    "differential_constant": {"kind": "differential", "lambda_init": {"schedule": "constant", "value": 0.5}},
    "differential_pair_on_head": {"kind": "differential", "alibi_layout": "pair_on_head"},
    "differential_pair_count": {"kind": "differential", "alibi_layout": "pair_count"},
    "doubly_normalized_no_sink": {"kind": "doubly_normalized", "sink": False},
    "doubly_normalized_mix": {"kind": "doubly_normalized", "mix": 0.3},
    "doubly_normalized_learned_mix": {"kind": "doubly_normalized", "mix": "learned", "sink": False},
    "sigmoid_bias": {"kind": "sigmoid", "bias": 1.5},
}
ATTENTION_VARIANTS = {kind: {"kind": kind} for kind in KINDS} | OPTION_VARIANTS


def small_model(attention: dict, position: str = "rope", n_kv_heads: int | None = None, **overrides) -> Transformer:
    """A tiny model with randomised kind-specific parameters, so no test passes by a lucky zero."""
    settings = dict(
        vocab_size=37,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        max_seq_len=64,
        position=position,
        attention=attention,
    )
    settings.update(overrides)
    model = Transformer(ModelConfig(**settings))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and bool((parameter == parameter.flatten()[0]).all()):
                parameter.add_(torch.randn_like(parameter))  # constant inits (sinks, mixes, norm gains) vary
        for block in model.blocks:
            if hasattr(block.attention, "query_block"):
                block.attention.query_block = 4  # several blocks even in short test sequences
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a per-session folder, never the user's home."""
    monkeypatch.setenv("DIFFFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))


TINY_RECIPE = """
name: tiny
seed: 3
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 64, attention: {kind: differential}}
data: {task: mqar, vocab_size: 32, num_pairs: 4, seq_len: [24, 32]}
train: {steps: 8, batch_size: 4, lr: 3.0e-3, warmup_steps: 2, log_every: 1, checkpoint_every: 2}
eval: {every: 4, batches: 2}
"""


@pytest.fixture
def tiny_recipe(tmp_path):
    """A recipe file for a model that trains in about a second, writing into tmp_path/runs/tiny."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE + f"output: {tmp_path / 'runs' / 'tiny'}\n")
    return path
