"""Is a comparison fair? What each column was given besides what its recipe names (docs/formulas.md §18).

A comparison is only as fair as its derived settings: a kind or a size changes things the recipe does not
name — ALiBi's slopes, head width, the parameter split — and a run stopped before it converged is not
its kind's verdict. Every comparison gets a fairness section with these, read from each run's model
(model/effective.py) and curve, and a warning line for each of them that differs between columns beyond
the settings the comparison varies on purpose.
"""

import math
import statistics
from dataclasses import dataclass

# The share of the run's total loss decrease that the last tenth of training may still bring (see `converged`).
CONVERGED_FRACTION = 0.01


def converged(curve: list[dict], stopped_early: bool = False) -> bool | None:
    """Whether training had converged, by the rule of docs/formulas.md §18: over the last tenth of the logged
    training losses the mean fell, against the tenth before it, by less than 1% of the loss's fall over the
    whole run, or by no more than twice the standard error of that difference (no detectable decrease).
    A run stopped early at its threshold has converged on what it was asked; None: under 10 losses logged."""
    if stopped_early:
        return True
    losses = [r["loss"] for r in curve if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if len(losses) < 10:
        return None
    tenth = max(2, len(losses) // 10)
    earlier, late = losses[-2 * tenth : -tenth], losses[-tenth:]
    fall = statistics.fmean(earlier) - statistics.fmean(late)
    total_fall = losses[0] - statistics.fmean(late)
    noise = math.sqrt(statistics.variance(earlier) / len(earlier) + statistics.variance(late) / len(late))
    return fall <= max(CONVERGED_FRACTION * max(total_fall, 0.0), 2 * noise)


@dataclass(frozen=True)
class FairnessItem:
    """A setting each column reports, and the recipe keys that, when the comparison varies them, explain it."""

    name: str
    named_by: tuple[str, ...]  # a difference is expected when one of these (or a key below it) is varied


FAIRNESS_ITEMS = {
    "parameters": FairnessItem(
        "parameters", ("model.d_model", "model.n_layers", "model.ffn_hidden", "model.vocab_size", "model.n_heads")
    ),
    "tokens": FairnessItem("tokens seen", ("train.steps", "train.batch_size", "train.grad_accumulation", "data.")),
    "prior": FairnessItem("positional prior", ("model.position", "model.max_seq_len")),
    "layout": FairnessItem("heads × maps × width", ("model.n_heads", "model.d_model", "model.n_kv_heads")),
    "options": FairnessItem("attention options as applied", ("model.attention.",)),
    "lr": FairnessItem("learning rate", ("train.lr", "train.warmup_steps", "train.min_lr_ratio")),
    "precision": FairnessItem("precision", ("train.precision",)),
}


def parameter_part_item(part: str) -> FairnessItem:
    return FairnessItem(f"parameters: {part}", FAIRNESS_ITEMS["parameters"].named_by)


def is_varied(item: FairnessItem, varied_keys) -> bool:
    """The comparison varies a recipe key that accounts for this item's difference."""
    return any(key == named or key.startswith(named) for key in varied_keys for named in item.named_by)


def learning_rate_text(recipe) -> str:
    train = recipe.train
    warmup = train.warmup_steps if train.warmup_steps is not None else min(100, train.steps // 10)
    return f"{train.lr:g} (warm-up {warmup}, cosine to {train.min_lr_ratio:g}×)"


def options_text(options: dict) -> str:
    """The kind's options as applied (its exported options), one line."""

    def short(value):
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, list):
            return "[" + ", ".join(short(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
        return str(value)

    return ", ".join(f"{key}={short(value)}" for key, value in options.items()) or "none"


def warning_line(item: FairnessItem, labels: list[str], values: list) -> str:
    """One line naming a difference the recipes do not name, with each column's value."""
    shown = "; ".join(f"{label}: {value}" for label, value in zip(labels, values))
    counts = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    spread = ""
    if len(counts) == len(values) and min(counts) > 0:
        spread = f" ({(max(counts) - min(counts)) / min(counts):.1%} apart)"
    return f"⚠ {item.name} differs{spread}, and no compared setting says so — {shown}"
