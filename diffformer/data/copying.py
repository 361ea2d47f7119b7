"""Sequence copying (Snell et al. 2021), the learning-dynamics task."""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SyntheticTask
from diffformer.sections import MAX_TOKENS


class CopyTask(SyntheticTask):
    """Sequence copying (Snell et al. 2021): x₁…x_L, separator, x₁…x_L; the copy is scored.

    easy: L distinct tokens drawn from `vocab` tokens; hard: every input is a permutation
    of the same L tokens, so co-occurrence carries no signal and only attention can solve it.
    Token 1 is the separator; the sequence length is 2·L + 1. Position L + k (the separator for
    k = 0) predicts x_{k+1}, which sits at position k: its evidence is [k, k + 1), the aligned
    source position, and the question (the copy) starts at the separator.

    output_attention: `causal` lets each copy position see everything before it, the copied prefix too — in
    a decoder-only model the hard case is then solvable by elimination (a permutation's remaining tokens
    are those not yet copied). `source` is the setting of Snell et al.'s encoder–decoder: a copy position
    sees the source, the separator and itself only, never earlier copy positions, so the copy must go
    through the aligned source (docs/formulas.md §23). Every attention kind honours the mask.
    """

    task: Literal["copy"]
    length_fields: ClassVar[str] = "data.length"
    distribution: Literal["easy", "hard"] = "easy"
    length: int = Field(40, gt=0, le=MAX_TOKENS, description="Tokens to copy.")
    vocab: int = Field(60, gt=0, le=MAX_TOKENS, description="easy: tokens to draw from (hard uses `length` tokens).")
    output_attention: Literal["causal", "source"] = Field(
        "causal", description="source: copy positions see only the source, the separator and themselves."
    )

    @model_validator(mode="after")
    def _fits(self) -> "CopyTask":
        if self.distribution == "easy" and self.vocab < self.length:
            raise ValueError(f"vocab {self.vocab} must be at least length {self.length} to draw distinct tokens")
        return self

    @property
    def seq_len(self) -> int:
        return 2 * self.length + 1

    @property
    def task_vocab_size(self) -> int:
        return 2 + (self.vocab if self.distribution == "easy" else self.length)

    def masked_keys(self) -> np.ndarray | None:
        if self.output_attention == "causal":
            return None
        length = self.seq_len
        first_copy = self.length + 1  # position L is the separator; L+1 … 2L hold the copied tokens
        query, key = np.arange(length)[:, None], np.arange(length)[None, :]
        return (query > key) & (key >= first_copy)

    def _generate(self, rng, batch_size, length):
        pool = self.vocab if self.distribution == "easy" else self.length
        source = np.stack([2 + rng.choice(pool, size=self.length, replace=False) for _ in range(batch_size)])
        inputs = np.concatenate([source, np.ones((batch_size, 1), dtype=np.int64), source], axis=1)
        targets = np.full_like(inputs, IGNORE)
        targets[:, self.length : 2 * self.length] = source
        evidence = np.full((*inputs.shape, 2), -1, dtype=np.int64)
        aligned = np.arange(self.length)
        evidence[:, self.length : 2 * self.length, 0] = aligned
        evidence[:, self.length : 2 * self.length, 1] = aligned + 1
        question_start = np.full(batch_size, self.length, dtype=np.int64)
        return batch_from_arrays(inputs, targets, evidence=evidence, question_start=question_start)
