"""Held-out metrics on scored positions: loss, token accuracy, exact match (and for text, ppl and bits/byte).

Pure measurement of a model on data; training calls it for periodic evaluation and
`evaluation.py` calls it for a checkpoint.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffformer.data import IGNORE, TaskData
from diffformer.devices import autocast_for


def scored_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored positions; logits (B, T, V), targets (B, T) with IGNORE elsewhere."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode for the block, then back in the mode it was in (even if the block fails)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion: (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
    Unlike p̂ ± z·s.e., it is not empty at 0 or n successes (0/256 → [0, 0.015])."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def uncertainty_text(metrics: dict, name: str, digits: int = 4) -> str:
    """How sure a metric is, as text: its 95% interval where one is recorded (exact match's Wilson interval,
    honest at 0/n and n/n; perplexity's), else ± its standard error, else nothing."""
    if f"{name}_low" in metrics and f"{name}_high" in metrics:
        return f" (95%: {metrics[name + '_low']:.{digits}f}–{metrics[name + '_high']:.{digits}f})"
    error = metrics.get(f"{name}_se")
    return f" ± {error:.{digits}f}" if isinstance(error, float) and error == error else ""


def _ratio_standard_error(sums: torch.Tensor, counts: torch.Tensor) -> float:
    """Standard error of Σsums/Σcounts when examples (not tokens) are the independent units."""
    n = len(sums)
    if n < 2 or counts.sum() == 0:
        return math.nan
    ratio = sums.sum() / counts.sum()
    residuals = sums - ratio * counts
    return float(torch.sqrt((residuals**2).sum() / (n * (n - 1))) / counts.float().mean())


@dataclass
class SequenceScores:
    """Per held-out sequence (the independent units): summed token loss, correct and scored tokens (each (N,))."""

    loss_sums: torch.Tensor
    correct: torch.Tensor
    scored: torch.Tensor

    @property
    def exact(self) -> torch.Tensor:
        """(N,) whether every scored position of the sequence is right."""
        return (self.correct == self.scored).double()

    def loss(self) -> float:
        return float(self.loss_sums.double().sum() / max(int(self.scored.sum()), 1))

    def exact_match(self) -> float:
        return float(self.exact.mean())

    def metrics(self, bytes_per_token: float | None) -> dict[str, float]:
        """What `evaluate` reports: loss, accuracy and (synthetic tasks) exact match with its Wilson interval, or
        (text) perplexity and bits per byte, each with its standard error over sequences."""
        loss_sum, correct, scored = self.loss_sums, self.correct, self.scored
        examples = len(scored)
        loss = self.loss()
        loss_se = _ratio_standard_error(loss_sum, scored.double())
        metrics = {
            "loss": loss,
            "loss_se": loss_se,
            "accuracy": float(correct.sum() / max(int(scored.sum()), 1)),
            "accuracy_se": _ratio_standard_error(correct.double(), scored.double()),
            "scored_tokens": int(scored.sum()),
            "examples": examples,
        }
        if bytes_per_token is None:
            exact = self.exact_match()
            metrics["exact_match"] = exact
            metrics["exact_match_se"] = math.sqrt(exact * (1 - exact) / examples) if examples > 1 else math.nan
            # The standard error is 0 at 0/n and n/n; the Wilson interval stays honest there.
            metrics["exact_match_low"], metrics["exact_match_high"] = wilson_interval(round(exact * examples), examples)
        else:
            metrics["perplexity"] = math.exp(min(loss, 50.0))
            metrics["perplexity_low"] = math.exp(min(loss - 1.96 * loss_se, 50.0))
            metrics["perplexity_high"] = math.exp(min(loss + 1.96 * loss_se, 50.0))
            metrics["bits_per_byte"] = loss / math.log(2) / bytes_per_token
            metrics["bits_per_byte_se"] = loss_se / math.log(2) / bytes_per_token
        return metrics

    def change_from(self, reference: "SequenceScores") -> dict[str, tuple[float, float]]:
        """(this − reference, its standard error) on the same sequences, paired: loss per token as a ratio of
        the per-sequence loss differences to the scored tokens, exact match as the mean paired difference."""
        n = len(self.scored)
        exact = self.exact - reference.exact
        loss = self.loss_sums.double() - reference.loss_sums.double()  # per sequence
        return {
            "loss": (
                float(loss.sum() / max(int(self.scored.sum()), 1)),
                _ratio_standard_error(loss, self.scored.double()),
            ),
            "exact_match": (float(exact.mean()), float(exact.std() / math.sqrt(n)) if n > 1 else math.nan),
        }


@torch.no_grad()
def score_sequences(
    model,
    data: TaskData,
    seed: int,
    batches: int,
    batch_size: int,
    device,
    precision="fp32",
    split="val",
    on_batch=None,
) -> SequenceScores:
    """The per-sequence scores `evaluate` summarises, over the same held-out batches (on_batch: a progress bar).
    The model's train/eval mode is restored even if a batch fails."""
    with evaluation_mode(model):
        loss_sums, correct, scored = _score_batches(
            model, data, seed, batches, batch_size, device, precision, split, on_batch
        )
    return SequenceScores(torch.cat(loss_sums).double(), torch.cat(correct), torch.cat(scored))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: TaskData,
    seed: int,
    batches: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    split: str = "val",
    on_batch=None,
) -> dict[str, float]:
    """Metrics over `batches` held-out batches (the same ones every call), each with its standard error;
    on_batch(done, total) hears each finished batch (a progress bar).

    loss: nats per scored token; accuracy: greedy next-token accuracy on scored positions;
    exact_match: share of sequences whose scored positions are all right (synthetic tasks);
    text adds perplexity (with a 95% interval) and bits_per_byte of `split`'s own text.
    Sequences are the independent units of the standard errors; scored_tokens and examples
    say what they rest on. The model's train/eval mode is restored even if a batch fails.
    """
    scores = score_sequences(model, data, seed, batches, batch_size, device, precision, split, on_batch)
    return scores.metrics(data.bytes_per_token(split))


def _score_batches(model, data, seed, batches, batch_size, device, precision, split, on_batch=None):
    """Per sequence: summed loss, correct tokens and scored tokens, over `batches` batches of `split`."""
    loss_sums, correct_counts, scored_counts = [], [], []
    for index in range(batches):
        batch = data.batch(seed, split, index, batch_size).to(device)
        with autocast_for(device, precision):
            logits = model(batch.inputs)
        mask = batch.targets != IGNORE
        token_loss = F.cross_entropy(
            logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE, reduction="none"
        ).view_as(batch.targets)
        loss_sums.append((token_loss * mask).sum(dim=1).cpu())
        correct_counts.append(((logits.argmax(-1) == batch.targets) & mask).sum(dim=1).cpu())
        scored_counts.append(mask.sum(dim=1).cpu())
        if on_batch is not None:
            on_batch(index + 1, batches)
    return loss_sums, correct_counts, scored_counts
