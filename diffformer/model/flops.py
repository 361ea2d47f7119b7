"""Model FLOPs per token: what model FLOPs utilisation (MFU) divides by (docs/formulas.md §11).

Counted: the matmuls a training step needs — every linear layer (2 FLOPs per weight per
token forward, the LM head included) and each attention kind's maps (`map_flops_per_token`),
times 3 for forward plus backward (backward costs two forwards). Not counted: elementwise work
(norms, softmax, the doubly-normalized column log-sum-exp), activation recomputation and the
zero-padding some kernels need — so MFU measures useful work, comparable across kinds.
Context: every query counts all T keys of its sequence (PaLM's convention, also nanoGPT's),
though a causal query reads on average (T+1)/2 of them.
"""

from torch import nn

from diffformer.model.attention.base import Attention

TRAINING_MULTIPLIER = 3  # forward + backward (≈ 2 × forward)


def forward_flops_per_token(model: nn.Module, context: int) -> int:
    """Matmul FLOPs of one forward pass per token at sequence length `context`."""
    linear = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    maps = sum(m.map_flops_per_token(context) for m in model.modules() if isinstance(m, Attention))
    return linear + maps


def training_flops_per_token(model: nn.Module, context: int) -> int:
    """Matmul FLOPs of one training step (forward and backward) per token at sequence length `context`."""
    return TRAINING_MULTIPLIER * forward_flops_per_token(model, context)
