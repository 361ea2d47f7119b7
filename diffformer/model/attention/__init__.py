"""Attention kinds: one file each, declared in `registry.py`."""

from diffformer.model.attention.base import Attention, AttentionCall
from diffformer.model.attention.registry import ATTENTION_KINDS, AttentionConfig, AttentionKind, kind_entry

__all__ = ["ATTENTION_KINDS", "Attention", "AttentionCall", "AttentionConfig", "AttentionKind", "kind_entry"]
