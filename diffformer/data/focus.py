"""The focus task (Vashisht & Ramaswamy 2023): which of m segments carries the label? (docs/formulas.md §14)"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import batch_from_arrays
from diffformer.data.synthetic import SyntheticTask
from diffformer.sections import MAX_COUNT, MAX_TOKENS


class FocusTask(SyntheticTask):
    """m segments of `segment_length` tokens; exactly one, at a uniformly random index, is the foreground.

    The foreground's tokens are drawn from the pool of its class y (the label); every other segment is
    background, its tokens drawn from the pool of one distractor class. Each pool holds
    `tokens_per_class` ids: class c owns [c·k, (c+1)·k), distractor d owns [(classes + d)·k, …).
    `background_informative` ρ is how much the background says about the label: each background
    segment takes distractor y mod distractors with probability ρ, a uniformly random one otherwise
    (ρ = 0: backgrounds carry nothing; ρ = 1: a classifier can read the label off any segment).
    A batch's targets are (B, 1) labels, and `foreground` the (B,) foreground index.
    """

    task: Literal["focus"]
    marks_sources: ClassVar[bool] = False  # a label per example, no answer positions
    segments: int = Field(5, ge=2, le=MAX_COUNT, description="m: segments per example.")
    classes: int = Field(3, ge=2, le=MAX_COUNT, description="Labels, each with its own token pool.")
    distractors: int = Field(3, ge=1, le=MAX_COUNT, description="Distractor classes the background is drawn from.")
    segment_length: int = Field(4, ge=1, le=MAX_COUNT, description="Tokens per segment.")
    tokens_per_class: int = Field(4, ge=1, le=MAX_COUNT, description="Token ids in each class's pool.")
    background_informative: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability a background segment's distractor is tied to the label."
    )

    @model_validator(mode="after")
    def _fits(self) -> "FocusTask":
        if self.task_vocab_size > MAX_TOKENS or self.seq_len > MAX_TOKENS:
            raise ValueError("the focus task's vocabulary or length is too large")
        return self

    @property
    def seq_len(self) -> int:
        return self.segments * self.segment_length

    @property
    def task_vocab_size(self) -> int:
        return (self.classes + self.distractors) * self.tokens_per_class

    def _generate(self, rng, batch_size, length):
        m, k = self.segments, self.tokens_per_class
        labels = rng.integers(self.classes, size=batch_size)
        foreground = rng.integers(m, size=batch_size)
        tied = rng.random((batch_size, m)) < self.background_informative
        distractor = np.where(
            tied, labels[:, None] % self.distractors, rng.integers(self.distractors, size=(batch_size, m))
        )
        pool = np.where(np.arange(m)[None, :] == foreground[:, None], labels[:, None], self.classes + distractor)
        offsets = rng.integers(k, size=(batch_size, m, self.segment_length))
        inputs = (pool[..., None] * k + offsets).reshape(batch_size, self.seq_len)
        return batch_from_arrays(inputs, labels[:, None], foreground=foreground)
