"""What the built-in synthetic tasks share (mqar.py, needle.py, copying.py; docs/formulas.md §5, §7).

Every batch is a pure function of (seed, split, batch index), so resuming a run needs
only the number of batches already drawn, and two checkpoints probed with the same
seed see the same prompts. Sequences follow next-token prediction: targets[t] is the
token position t must predict, IGNORE where the position is not scored.
"""

from typing import ClassVar

import numpy as np

from diffformer.data.batch import Batch, example_rng
from diffformer.sections import MAX_TOKENS, Section

SeqLen = int | list[int]


def lengths_of(value: SeqLen) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


class SyntheticTask(Section):
    """Shared fields: `seq_len` is one length or a list; with a list each batch draws one (mixed lengths)."""

    # Batches mark each answer's source (Batch.evidence): what KTIW and the source measurements need.
    marks_sources: ClassVar[bool] = True
    # The recipe fields that set the sequence length (named when it exceeds model.max_seq_len).
    length_fields: ClassVar[str] = "data.seq_len"

    @property
    def max_length(self) -> int:
        return max(lengths_of(self.seq_len))

    def batch(self, seed: int, split: str, index: int, batch_size: int) -> Batch:
        rng = example_rng(seed, split, index)
        length = int(rng.choice(lengths_of(self.seq_len)))
        return self._generate(rng, batch_size, length)

    def _generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        raise NotImplementedError

    def masked_keys(self) -> np.ndarray | None:
        """The attention layout the task asks of the model: (L, L) bool, True where query i may not see key
        j ≤ i (docs/formulas.md §23), or None — causal attention only (every task but the masked copy)."""
        return None


def check_lengths(value: SeqLen) -> SeqLen:
    """seq_len is validated the same way by every synthetic task."""
    lengths = lengths_of(value)
    if not lengths or any(isinstance(n, bool) or n <= 0 or n > MAX_TOKENS for n in lengths):
        raise ValueError(f"seq_len must be a positive integer up to {MAX_TOKENS} or a non-empty list of them")
    return value
