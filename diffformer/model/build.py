"""The model a recipe trains: the transformer, or for the focus task the focus lab's model (model/focus.py)."""

from torch import nn

from diffformer.model.config import ModelConfig
from diffformer.model.focus import FocusModel
from diffformer.model.transformer import Transformer


def build_model(config: ModelConfig, data: dict) -> nn.Module:
    """`data`: the recipe's data section as stored (every field present)."""
    if data.get("task") == "focus":
        return FocusModel(config, data["classes"], data["segments"], data["segment_length"])
    return Transformer(config)
