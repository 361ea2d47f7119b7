"""Two lookups whose answers combine: a task that needs heads that differ (docs/formulas.md §25).

Every token is drawn uniformly from `values` tokens; from position `far` on, position i must predict
(x_{i−near} − x_{i−far}) mod V, as a token. Its own token says nothing, so the answer needs two
lookups — `near` and `far` positions back — and is not symmetric in what they find (swapping the two
turns r into −r mod V). A head's output is a weighted sum of the values it attends to: one pattern that
covers both positions mixes them with its two weights, and must make those weights unequal for the MLP
to tell the two apart; two heads that each find one position answer directly. Heads that start
identical (model.head_init) compute the same pattern for as long as they stay identical.
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SeqLen, SyntheticTask, check_lengths, lengths_of
from diffformer.sections import MAX_TOKENS


class TwoLookupsTask(SyntheticTask):
    """Tokens 0 … values−1; targets (x_{i−near} − x_{i−far}) mod values at positions i ≥ far."""

    # An answer has two sources, and the batch's evidence marks one span per answer: none is marked.
    marks_sources: ClassVar[bool] = False

    task: Literal["two_lookups"]
    seq_len: SeqLen = Field(32, description="Sequence length, or a list to mix lengths.")
    values: int = Field(8, gt=1, le=MAX_TOKENS, description="Tokens; answers are differences mod this.")
    near: int = Field(1, gt=0, le=MAX_TOKENS, description="How far back the first lookup goes.")
    far: int = Field(2, gt=0, le=MAX_TOKENS, description="How far back the second goes (more than near).")

    _seq_len_ok = field_validator("seq_len")(check_lengths)

    @model_validator(mode="after")
    def _fits(self) -> "TwoLookupsTask":
        if self.far <= self.near:
            raise ValueError(f"far ({self.far}) must be more positions back than near ({self.near})")
        if min(lengths_of(self.seq_len)) <= self.far:
            raise ValueError(f"seq_len must exceed far ({self.far}) for any position to be scored")
        return self

    @property
    def task_vocab_size(self) -> int:
        return self.values

    def _generate(self, rng, batch_size, length):
        inputs = rng.integers(0, self.values, size=(batch_size, length))
        targets = np.full_like(inputs, IGNORE)
        scored = np.arange(self.far, length)
        targets[:, scored] = (inputs[:, scored - self.near] - inputs[:, scored - self.far]) % self.values
        return batch_from_arrays(inputs, targets)
