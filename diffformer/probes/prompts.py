"""Where probe prompts come from: one interface, one source per kind of training data.

A prompt source makes the prompts of one retrieval-grid cell (variant, context length,
needle depth) as a pure function of (probe seed, prompt key), so every checkpoint probed
with the same seed sees the same prompts; `plain_batch` is ordinary data of the training
length for the measurements that look at every query (key coverage, outliers).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from pydantic import ValidationError

from diffformer.data import Batch
from diffformer.data.mqar import MqarTask
from diffformer.data.needle import NeedleTask

NEEDLE_VARIANTS = ("single", "multi_key", "multi_value", "multi_query")
MQAR_VARIANTS = ("mqar", "mqar_distractors")
PROBE_DISTRACTORS = 4  # distractor pairs in mqar_distractors prompts when the model trained without any


@dataclass
class Cell:
    """The prompts of one grid cell; `scorer`, when set, replaces greedy argmax: batch -> (exact, rank) per prompt."""

    batch: Batch
    scorer: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]] | None = None


class PromptSource(Protocol):
    variants: list[str]
    trained_length: int
    candidates: int | None  # sources that rank the truth among candidates say how many

    def cell(self, variant: str, length: int, depth: float, key: int, count: int) -> Cell | None:
        """`count` prompts of `length` tokens with the needle at `depth`, or None if they cannot fit."""

    def plain_batch(self, count: int) -> Batch:
        """Held-out data of the training length."""


class SyntheticPrompts:
    """MQAR (the key–value block placed at the depth, all keys asked at the end) and needle tasks."""

    candidates = None

    def __init__(self, task: MqarTask | NeedleTask, variants: list[str], seed: int):
        self.task, self.variants, self.seed = task, variants, seed
        self.trained_length = task.max_length

    def cell(self, variant: str, length: int, depth: float, key: int, count: int) -> Cell | None:
        update = {"seq_len": length, "depth": depth}
        if isinstance(self.task, NeedleTask):
            update["variant"] = variant
        else:
            update["distractors"] = 0 if variant == "mqar" else (self.task.distractors or PROBE_DISTRACTORS)
        try:
            task = type(self.task).model_validate({**self.task.model_dump(), **update})
        except ValidationError:
            return None
        return Cell(task.batch(self.seed, "probe", key, count))

    def plain_batch(self, count: int) -> Batch:
        return self.cell(self.variants[0], self.trained_length, 0.5, 999_999, count).batch


def synthetic_variants(task: MqarTask | NeedleTask, requested) -> list[str]:
    """The prompt variants to probe: by default what the model trained on, every one with 'all'.

    MQAR: mqar (the pairs and the queries alone in filler) and mqar_distractors (plus pairs of
    keys that are never asked), by default the second only for models trained with distractors.
    Needle: single, multi_key, multi_value, multi_query; by default the trained variant.
    """
    from diffformer.errors import RecipeError

    if isinstance(task, MqarTask):
        available, trained = MQAR_VARIANTS, ["mqar", "mqar_distractors"] if task.distractors else ["mqar"]
    else:
        available, trained = NEEDLE_VARIANTS, [task.variant]
    if not requested:
        return trained
    if list(requested) == ["all"]:
        return list(available)
    bad = [v for v in requested if v not in available]
    if bad:
        raise RecipeError(f"unknown variant {bad[0]!r} for this model; available: {', '.join(available)} or all")
    return list(requested)
