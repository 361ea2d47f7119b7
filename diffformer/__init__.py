"""diffformer: train, evaluate, probe and compare small decoder-only transformers
whose attention is pluggable (vanilla, differential V1/V2, doubly normalized)."""

__version__ = "0.1.0"

import os  # noqa: E402

# Exact resume compares weights bit for bit, and MKL (torch's CPU BLAS here) may order a product's sums by the
# operands' memory alignment and, under load, change its thread count (Intel's "reproducibility conditions").
# Set before torch loads MKL; a user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

from diffformer.model.capture import AttentionCapture, AttentionMaps, capture_attention  # noqa: E402
from diffformer.model.config import ModelConfig  # noqa: E402
from diffformer.model.transformer import Transformer  # noqa: E402

__all__ = [
    "AttentionCapture",
    "AttentionMaps",
    "ModelConfig",
    "Transformer",
    "__version__",
    "capture_attention",
]
