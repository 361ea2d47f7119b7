"""Measurements that need every query row: key coverage (explaining away) and activation outliers.

One capture of all rows on one batch of the training length (T×T per layer, so kept short).
"""

import torch

from diffformer.model.capture import capture_attention
from diffformer.probes import attention_stats as stats
from diffformer.probes.results import KeyCoverage, LayerOutliers, LogitOutliers


@torch.no_grad()
def coverage_and_outliers(model, inputs: torch.Tensor) -> tuple[dict[int, KeyCoverage], dict[int, LayerOutliers]]:
    """Key coverage per layer (all query rows) and |logit| / |hidden state| outliers per layer. inputs: (B, T)."""
    hidden = {}
    hooks = [
        block.register_forward_hook(lambda module, args, output, i=i: hidden.__setitem__(i, output.detach()))
        for i, block in enumerate(model.blocks)
    ]
    try:
        with capture_attention(model) as capture:
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    coverage, outliers = {}, {}
    for layer, maps in capture.maps.items():
        coverage[layer] = stats.key_coverage(maps.weights)
        logits = {name: LogitOutliers.of(values[torch.isfinite(values)].abs()) for name, values in maps.logits.items()}
        states = LogitOutliers.of(hidden[layer].abs().flatten())
        outliers[layer] = LayerOutliers(logits, states.top1, states.median, states.top10, states.ratio)
    return coverage, outliers
