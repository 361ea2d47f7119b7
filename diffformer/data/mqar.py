"""Multi-query associative recall (MQAR), the zoology layout and the retrieval-probe layout."""

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SeqLen, SyntheticTask, check_lengths, lengths_of
from diffformer.sections import MAX_TOKENS


class MqarTask(SyntheticTask):
    """Multi-query associative recall (Arora et al. 2023). Keys in [1, V/2), values in [V/2, V), 0 is filler.

    The sequence lists `num_pairs` key–value pairs, then every key is asked again in a
    random order at positions drawn from a power law (p ∝ gap^(power_a − 1)); the
    position holding a queried key must predict its value. As in zoology, the value is
    not written after the query and every other position holds a random token, so
    neither earlier answers nor filler give an answer away (with answers in the input,
    models settle on eliminating values already answered instead of recalling).

    With a `depth` the pairs sit inside filler and all keys are asked at the end; there the
    filler holds value-range tokens only, so the only keys before the queries are the pairs
    (and `distractors`, pairs of keys never asked).
    """

    task: Literal["mqar"]
    vocab_size: int = Field(
        128, ge=8, le=MAX_TOKENS, description="Token ids: keys take the lower half, values the upper."
    )
    num_pairs: int | list[int] = Field(8, description="Key–value pairs per sequence (a list mixes them).")
    seq_len: SeqLen = Field(128, description="Sequence length, or a list to mix lengths.")
    power_a: float = Field(0.01, gt=0.0, le=1.0, description="Power-law exponent of query gaps.")
    depth: float | Literal["random"] | None = Field(
        None,
        description="null: pairs first (zoology). A number in [0, 1]: the pairs sit after that fraction of "
        "random filler and all keys are asked at the end (the retrieval probe's layout). random: that layout "
        "with a uniformly random depth per sequence, to teach retrieval wherever the pairs sit.",
    )
    distractors: int = Field(
        0,
        ge=0,
        le=MAX_TOKENS,
        description="Extra key–value pairs of keys that are never asked, scattered through the filler "
        "(needs a depth: the end-query layout).",
    )

    _seq_len_ok = field_validator("seq_len")(check_lengths)

    @field_validator("depth")
    @classmethod
    def _depth_in_range(cls, depth):
        if isinstance(depth, float) and not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth must lie in [0, 1], or be random or null (got {depth})")
        return depth

    @model_validator(mode="after")
    def _fits(self) -> "MqarTask":
        pairs = lengths_of(self.num_pairs)
        if any(k <= 0 for k in pairs):
            raise ValueError("num_pairs must be positive")
        if max(pairs) > self.vocab_size // 2 - 1:
            raise ValueError(f"num_pairs {max(pairs)} needs more distinct keys than vocab_size {self.vocab_size} has")
        if 4 * max(pairs) + 2 * self.distractors > min(lengths_of(self.seq_len)):
            extra = f" and {self.distractors} distractors (2 each)" if self.distractors else ""
            raise ValueError(
                f"seq_len {min(lengths_of(self.seq_len))} is too short for {max(pairs)} pairs (needs 4 per pair){extra}"
            )
        if self.distractors and self.depth is None:
            raise ValueError("distractors need the end-query layout: set depth to a number or random")
        if max(pairs) + self.distractors > self.vocab_size // 2 - 1:
            raise ValueError(
                f"{max(pairs)} pairs and {self.distractors} distractors need more keys than vocab_size has"
            )
        return self

    @property
    def task_vocab_size(self) -> int:
        return self.vocab_size

    def _generate(self, rng, batch_size, length):
        half = self.vocab_size // 2
        inputs = rng.integers(0, self.vocab_size, size=(batch_size, length))
        targets = np.full((batch_size, length), IGNORE, dtype=np.int64)
        evidence = np.full((batch_size, length, 2), -1, dtype=np.int64)
        question_start = np.zeros(batch_size, dtype=np.int64)
        for b in range(batch_size):
            pairs = int(rng.choice(lengths_of(self.num_pairs)))
            keys = rng.choice(np.arange(1, half), size=pairs, replace=False)
            values = rng.integers(half, self.vocab_size, size=pairs)
            if self.depth is None:
                block_start = 0
                slots = (length - 2 * pairs) // 2
                gap_weights = np.arange(1, slots + 1, dtype=np.float64) ** (self.power_a - 1)
                chosen = np.sort(rng.choice(slots, size=pairs, replace=False, p=gap_weights / gap_weights.sum()))
                positions = 2 * pairs + 2 * chosen
            else:
                # Filler without key tokens: a key seen before the queries is then always a real pair
                # (or a distractor's), never a chance copy followed by a random token.
                inputs[b] = rng.integers(half, self.vocab_size, size=length)
                block_start = self._place_in_filler(rng, inputs[b], keys, length - 2 * pairs, pairs)
                positions = length - 2 * pairs + 2 * np.arange(pairs)
            order = rng.permutation(pairs)
            inputs[b, block_start : block_start + 2 * pairs : 2] = keys
            inputs[b, block_start + 1 : block_start + 2 * pairs : 2] = values
            inputs[b, positions] = keys[order]
            targets[b, positions] = values[order]
            evidence[b, positions, 0] = block_start + 2 * order
            evidence[b, positions, 1] = block_start + 2 * order + 2
            question_start[b] = positions[0]
        return batch_from_arrays(inputs, targets, evidence=evidence, question_start=question_start)

    def _place_in_filler(self, rng, row: np.ndarray, asked_keys: np.ndarray, context: int, pairs: int) -> int:
        """Lay out row[:context] as filler with the pair block at the depth and distractor pairs at random
        places around it (never inside it); returns where the block starts."""
        filler = context - 2 * pairs - 2 * self.distractors
        depth = rng.random() if self.depth == "random" else self.depth
        block_gap = int(round(depth * filler))
        if not self.distractors:
            return block_gap  # the filler already fills the row; the block goes in at its gap
        half = self.vocab_size // 2
        unasked = np.setdiff1d(np.arange(1, half), asked_keys)
        distractor_keys = rng.choice(unasked, size=self.distractors, replace=False)
        distractor_values = rng.integers(half, self.vocab_size, size=self.distractors)
        gaps = np.sort(rng.integers(0, filler + 1, size=self.distractors))
        # Units in order: filler tokens, with distractor pairs and the block inserted at their gaps.
        inserts = sorted([(int(g), 1, i) for i, g in enumerate(gaps)] + [(block_gap, 0, -1)])
        tokens, consumed, block_start = [], 0, 0
        noise = row[:filler].copy()
        for gap, is_distractor, index in inserts:
            tokens.extend(noise[consumed:gap])
            consumed = gap
            if is_distractor:
                tokens.extend([distractor_keys[index], distractor_values[index]])
            else:
                block_start = len(tokens)
                tokens.extend([0] * (2 * pairs))  # the caller writes the pairs here
        tokens.extend(noise[consumed:])
        row[:context] = tokens
        return block_start
