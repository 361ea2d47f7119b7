"""What a run's model is trained and scored on: next-token prediction, or the focus task's objective.

Both give the trainer the same three things: loss(model, outputs, batch, step), evaluate(...) for the
eval cadence and `diffformer eval`, and tracker(...) for a recipe's `track:` section. Which one a run
uses is its experiment's (experiments.py).
"""

from diffformer.dynamics.tracker import AttentionTracker
from diffformer.metrics import evaluate, scored_loss


class LanguageModelling:
    """Mean cross-entropy over the scored positions; held-out metrics from metrics.py; attention tracking."""

    distributed = True

    def loss(self, model, outputs, batch, step: int):
        return scored_loss(outputs, batch.targets)

    def evaluate(
        self, model, data, seed, batches, batch_size, device, precision="fp32", split="val", on_batch=None
    ) -> dict:
        return evaluate(model, data, seed, batches, batch_size, device, precision, split, on_batch)

    def tracker(self, settings, model, data, device, precision) -> AttentionTracker:
        return AttentionTracker(settings, model, data, device, precision)
