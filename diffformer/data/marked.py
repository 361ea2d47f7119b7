"""Report every marked value in order: a task on which every key must be used (Ding et al.'s explaining away).

The context holds `marked` distinct value tokens at random positions among filler; after a separator the
model reports them in the order they appeared, one per position (teacher-forced: the position after the
separator holds v₁, and so on). Each answer has exactly one source, and every source answers exactly one
query, so a model that lets some keys be "explained away" by others — receiving no attention from any
query — must get those answers wrong. Source coverage (docs/formulas.md §24), tracked and probed, measures it.
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SyntheticTask
from diffformer.sections import MAX_TOKENS

SEPARATOR = 1
FIRST_VALUE = 2


class MarkedValuesTask(SyntheticTask):
    """x: `context` tokens, `marked` of them distinct values (ids 2 … 2+values−1), the rest fillers
    (ids after the values, drawn with replacement); then the separator and v₁ … v_{K−1}. The separator's
    position predicts v₁, the position holding v_k predicts v_{k+1}; the evidence of v_k is its position.
    Sequence length: context + marked."""

    task: Literal["marked_values"]
    length_fields: ClassVar[str] = "data.context + data.marked"
    context: int = Field(24, gt=0, le=MAX_TOKENS, description="Tokens before the separator (marked values included).")
    marked: int = Field(4, gt=0, le=MAX_TOKENS, description="Values to report, each once, in order.")
    values: int = Field(16, gt=0, le=MAX_TOKENS, description="Distinct value tokens a sequence draws from.")
    fillers: int = Field(16, gt=0, le=MAX_TOKENS, description="Filler tokens (never reported).")

    @model_validator(mode="after")
    def _fits(self) -> "MarkedValuesTask":
        if self.marked > self.context:
            raise ValueError(f"marked {self.marked} values do not fit a context of {self.context} tokens")
        if self.marked > self.values:
            raise ValueError(f"marked {self.marked} distinct values need at least as many value tokens (values)")
        return self

    @property
    def seq_len(self) -> int:
        return self.context + self.marked

    @property
    def task_vocab_size(self) -> int:
        return FIRST_VALUE + self.values + self.fillers

    def _generate(self, rng, batch_size, length):
        first_filler = FIRST_VALUE + self.values
        inputs = rng.integers(first_filler, first_filler + self.fillers, size=(batch_size, self.seq_len))
        targets = np.full_like(inputs, IGNORE)
        evidence = np.full((*inputs.shape, 2), -1, dtype=np.int64)
        answers = np.arange(self.context, self.seq_len)  # the separator's position, then v₁ … v_{K−1}'s
        for b in range(batch_size):
            where = np.sort(rng.choice(self.context, size=self.marked, replace=False))
            values = FIRST_VALUE + rng.choice(self.values, size=self.marked, replace=False)
            inputs[b, where] = values
            inputs[b, self.context] = SEPARATOR
            inputs[b, self.context + 1 :] = values[:-1]
            targets[b, answers] = values
            evidence[b, answers, 0] = where
            evidence[b, answers, 1] = where + 1
        question_start = np.full(batch_size, self.context, dtype=np.int64)
        return batch_from_arrays(inputs, targets, evidence=evidence, question_start=question_start)
