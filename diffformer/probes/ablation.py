"""Head ablation: the task metric with each head removed in turn (docs/formulas.md §20).

For every layer and every output head (a differential V1 pair is one head), the head's output — what it
writes into its layer's residual projection — is replaced, on held-out sequences of the run's own task:
- zero ablation: by 0;
- mean ablation: by its mean over every sequence and position of the same held-out batches (the head
  then carries no information about the input, but its average contribution stays).
Each cell is the metric with that head removed, with its 95% interval, and the change against the
unablated model on the same sequences (paired). A head whose zero or mean ablation lowers exact match
with an interval above zero (or, on text, raises the loss) is one the run *retrieves with*: measurements
of attention noise can then be read at those heads rather than averaged over all.
"""

import math
from dataclasses import dataclass, field

import torch

from diffformer.metrics import SequenceScores, score_sequences, wilson_interval
from diffformer.model.editing import edit_heads

MODES = ("zero", "mean")
Z_95 = 1.96


@dataclass
class HeadAblation:
    layer: int
    head: int
    mode: str  # zero or mean
    exact_match: float | None  # synthetic tasks; None on text
    exact_match_low: float | None
    exact_match_high: float | None
    exact_match_change: float | None  # ablated − unablated, paired over the same sequences
    exact_match_change_se: float | None
    loss: float
    loss_change: float
    loss_change_se: float

    @property
    def hurts(self) -> bool:
        """Removing the head makes the task detectably worse (95%, paired): lower exact match, or higher loss."""
        if self.exact_match_change is not None and self.exact_match_change_se is not None:
            return self.exact_match_change + Z_95 * self.exact_match_change_se < 0
        return self.loss_change - Z_95 * self.loss_change_se > 0


@dataclass
class AblationReport:
    sequences: int
    exact_match: float | None  # unablated
    loss: float
    cells: list[HeadAblation] = field(default_factory=list)
    retrieval_heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> heads the task needs


def ablate_heads(model, data, seed: int, batches: int, batch_size: int, device, precision: str, on_cell=None):
    """Every head of every layer, zero- and mean-ablated in turn, on `batches` held-out batches."""
    synthetic = data.bytes_per_token("val") is None

    def scores(edit=None) -> SequenceScores:
        if edit is None:
            return score_sequences(model, data, seed, batches, batch_size, device, precision)
        with edit_heads(model, edit):
            return score_sequences(model, data, seed, batches, batch_size, device, precision)

    reference = scores()
    means = _head_means(model, scores)
    report = AblationReport(len(reference.scored), reference.exact_match() if synthetic else None, reference.loss())
    total, done = sum(len(m) for m in means.values()) * len(MODES), 0
    for layer, layer_means in means.items():
        for head in range(len(layer_means)):
            for mode in MODES:
                replacement = torch.zeros_like(layer_means[head]) if mode == "zero" else layer_means[head]
                ablated = scores(_replacing(layer, head, replacement))
                report.cells.append(_cell(layer, head, mode, ablated, reference, synthetic))
                done += 1
                if on_cell is not None:
                    on_cell(done, total)
    for cell in report.cells:
        if cell.hurts and cell.head not in report.retrieval_heads.setdefault(cell.layer, []):
            report.retrieval_heads[cell.layer].append(cell.head)
    report.retrieval_heads = {layer: sorted(heads) for layer, heads in report.retrieval_heads.items() if heads}
    return report


def _head_means(model, scores) -> dict[int, torch.Tensor]:
    """Per layer, each head's output averaged over every held-out sequence and position: (heads, w)."""
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def record(layer: int, heads: torch.Tensor) -> torch.Tensor:
        flat = heads.detach().float().transpose(1, 2).flatten(0, 1)  # (B·T, heads, w)
        sums[layer] = sums.get(layer, 0) + flat.sum(0)
        counts[layer] = counts.get(layer, 0) + flat.shape[0]
        return heads

    scores(record)
    return {layer: sums[layer] / counts[layer] for layer in sorted(sums)}


def _replacing(layer: int, head: int, value: torch.Tensor):
    def edit(at_layer: int, heads: torch.Tensor) -> torch.Tensor:
        if at_layer != layer:
            return heads
        heads = heads.clone()
        heads[:, head] = value.to(heads.dtype)
        return heads

    return edit


def _cell(layer, head, mode, ablated: SequenceScores, reference: SequenceScores, synthetic: bool) -> HeadAblation:
    change = ablated.change_from(reference)
    exact = low = high = exact_change = exact_se = None
    if synthetic:
        exact, n = ablated.exact_match(), len(ablated.scored)
        low, high = wilson_interval(round(exact * n), n)
        exact_change, exact_se = change["exact_match"]
    loss_change, loss_se = change["loss"]
    loss_se = 0.0 if math.isnan(loss_se) else loss_se
    return HeadAblation(
        layer, head, mode, exact, low, high, exact_change, exact_se, ablated.loss(), loss_change, loss_se
    )
