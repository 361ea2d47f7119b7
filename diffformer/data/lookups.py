"""Two lookups whose answers combine: a task that needs heads that differ (docs/formulas.md §25).

The context lists key–value pairs; each query names two keys a and b and must answer (v_a − v_b) mod V.
A head's output is a weighted sum of the values it attends to, so one attention pattern that covers both
pairs mixes v_a and v_b symmetrically up to its weights, while the answer is not symmetric in them: two
heads that look up a and b separately is the direct solution. Heads that start identical (model.head_init)
compute the same pattern for as long as they stay identical.
"""

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SyntheticTask
from diffformer.sections import MAX_TOKENS

FIRST_KEY = 1


class TwoLookupsTask(SyntheticTask):
    """`pairs` pairs "k v" (distinct keys from ids 1 … keys, values from the next `values` ids), then
    `queries` triples "k_a k_b r" with a ≠ b among the listed keys; the position of k_b predicts
    r = (v_a − v_b) mod values (as a value token), which the triple then holds. Sequence length:
    2·pairs + 3·queries."""

    # An answer has two sources, and the batch's evidence marks one span per answer: none is marked.
    marks_sources: ClassVar[bool] = False

    task: Literal["two_lookups"]
    length_fields: ClassVar[str] = "2 · data.pairs + 3 · data.queries"
    pairs: int = Field(6, gt=1, le=MAX_TOKENS, description="Key–value pairs listed first.")
    queries: int = Field(4, gt=0, le=MAX_TOKENS, description="Queries (two keys each) after the pairs.")
    keys: int = Field(16, gt=0, le=MAX_TOKENS, description="Key tokens a sequence draws its keys from.")
    values: int = Field(8, gt=1, le=MAX_TOKENS, description="Value tokens; answers are differences mod this.")

    @model_validator(mode="after")
    def _fits(self) -> "TwoLookupsTask":
        if self.pairs > self.keys:
            raise ValueError(f"{self.pairs} pairs need at least as many distinct key tokens (keys {self.keys})")
        return self

    @property
    def seq_len(self) -> int:
        return 2 * self.pairs + 3 * self.queries

    @property
    def task_vocab_size(self) -> int:
        return FIRST_KEY + self.keys + self.values

    def _generate(self, rng, batch_size, length):
        first_value = FIRST_KEY + self.keys
        inputs = np.zeros((batch_size, self.seq_len), dtype=np.int64)
        targets = np.full_like(inputs, IGNORE)
        queried = 2 * self.pairs + 3 * np.arange(self.queries)  # where each triple starts
        for b in range(batch_size):
            keys = FIRST_KEY + rng.choice(self.keys, size=self.pairs, replace=False)
            values = rng.integers(0, self.values, size=self.pairs)
            inputs[b, 0 : 2 * self.pairs : 2] = keys
            inputs[b, 1 : 2 * self.pairs : 2] = first_value + values
            for start in queried:
                a, other = rng.choice(self.pairs, size=2, replace=False)
                answer = first_value + (values[a] - values[other]) % self.values
                inputs[b, start : start + 3] = keys[a], keys[other], answer
                targets[b, start + 1] = answer
        return batch_from_arrays(inputs, targets)
