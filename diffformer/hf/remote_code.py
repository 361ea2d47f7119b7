"""Any language-model run as a Hugging Face folder with its own modelling code (trust_remote_code).

The folder gets configuration_diffformer.py and modeling_diffformer.py (diffformer/hf/remote/, copied as
they are: they import only torch and transformers), a config.json whose auto_map points
AutoModelForCausalLM at them, and the weights under diffformer's own names (the body under `model.`).
"""

import shutil
from pathlib import Path

import torch

from diffformer.hf.llama import transformers_shape

REMOTE_FILES = ("configuration_diffformer.py", "modeling_diffformer.py")


def remote_config(config) -> dict:
    """config.json for DiffformerForCausalLM, from a run's ModelConfig: the kind's options as it exports them
    (`AttentionKindConfig.exported_options`), which the modelling code reads without defaults."""
    attention = config.attention
    return {
        "architectures": ["DiffformerForCausalLM"],
        "model_type": "diffformer",
        "auto_map": {
            "AutoConfig": "configuration_diffformer.DiffformerConfig",
            "AutoModelForCausalLM": "modeling_diffformer.DiffformerForCausalLM",
        },
        **transformers_shape(config),
        "position": config.position,
        "attention_kind": attention.kind,
        "attention_options": attention.exported_options(config),
        "alibi_slopes": attention.map_alibi_slopes(config).tolist() if config.position == "alibi" else None,
        "uniform_attention": config.uniform_attention,
        "tie_word_embeddings": False,
        "use_cache": False,
    }


def remote_weights(model) -> dict[str, torch.Tensor]:
    """diffformer's state dict with the body under `model.`; a tied LM head is written out as its own tensor."""
    state = model.state_dict()
    weights = {("" if name == "lm_head.weight" else "model.") + name: tensor for name, tensor in state.items()}
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()}


def copy_remote_code(output: Path) -> list[Path]:
    source = Path(__file__).parent / "remote"
    for name in REMOTE_FILES:
        shutil.copyfile(source / name, output / name)
    return [output / name for name in REMOTE_FILES]
