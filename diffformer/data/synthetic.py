"""Built-in synthetic tasks, generated on the fly (docs/formulas.md §5, §7).

Every batch is a pure function of (seed, split, batch index), so resuming a run needs
only the number of batches already drawn, and two checkpoints probed with the same
seed see the same prompts. Sequences follow next-token prediction: targets[t] is the
token position t must predict, IGNORE where the position is not scored.
"""

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from diffformer.data.batch import IGNORE, Batch, batch_from_arrays, example_rng
from diffformer.sections import MAX_TOKENS, Section

SeqLen = int | list[int]


def _lengths(value: SeqLen) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


class SyntheticTask(Section):
    """Shared fields: `seq_len` is one length or a list; with a list each batch draws one (mixed lengths)."""

    @property
    def max_length(self) -> int:
        return max(_lengths(self.seq_len))

    def batch(self, seed: int, split: str, index: int, batch_size: int) -> Batch:
        rng = example_rng(seed, split, index)
        length = int(rng.choice(_lengths(self.seq_len)))
        return self._generate(rng, batch_size, length)

    def _generate(self, rng: np.random.Generator, batch_size: int, length: int) -> Batch:
        raise NotImplementedError


def _check_lengths(value: SeqLen) -> SeqLen:
    lengths = _lengths(value)
    if not lengths or any(isinstance(n, bool) or n <= 0 or n > MAX_TOKENS for n in lengths):
        raise ValueError(f"seq_len must be a positive integer up to {MAX_TOKENS} or a non-empty list of them")
    return value


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

    _seq_len_ok = field_validator("seq_len")(_check_lengths)

    @field_validator("depth")
    @classmethod
    def _depth_in_range(cls, depth):
        if isinstance(depth, float) and not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth must lie in [0, 1], or be random or null (got {depth})")
        return depth

    @model_validator(mode="after")
    def _fits(self) -> "MqarTask":
        pairs = _lengths(self.num_pairs)
        if any(k <= 0 for k in pairs):
            raise ValueError("num_pairs must be positive")
        if max(pairs) > self.vocab_size // 2 - 1:
            raise ValueError(f"num_pairs {max(pairs)} needs more distinct keys than vocab_size {self.vocab_size} has")
        if 4 * max(pairs) + 2 * self.distractors > min(_lengths(self.seq_len)):
            extra = f" and {self.distractors} distractors (2 each)" if self.distractors else ""
            raise ValueError(
                f"seq_len {min(_lengths(self.seq_len))} is too short for {max(pairs)} pairs (needs 4 per pair){extra}"
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
            pairs = int(rng.choice(_lengths(self.num_pairs)))
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


NEEDLE_MARK, QUERY_MARK, FIRST_FREE_TOKEN = 1, 2, 3


class NeedleTask(SyntheticTask):
    """Needle in a haystack (RULER-style, token level).

    Tokens: 1 marks a needle, 2 a query; then `num_keys` keys, `num_values` values, and
    the remaining ids are noise. A needle is [1, key, value]; the query at the end is
    [2, key] and the key's position must predict the value (then the next value, for
    multi_value). `depth` places the (first) true needle after that fraction of the
    haystack; null draws it uniformly per example.

    variants: single; multi_key (plus `num_distractors` needles with other keys);
    multi_value (one key, `num_needle_values` values, all must be returned in order);
    multi_query (`num_queries` keys, each asked).
    haystack: noise (random noise tokens) or distractors (key–value pairs of keys never asked).
    """

    task: Literal["needle"]
    variant: Literal["single", "multi_key", "multi_value", "multi_query"] = "single"
    haystack: Literal["noise", "distractors"] = "noise"
    vocab_size: int = Field(256, le=MAX_TOKENS, description="All token ids: markers, keys, values, noise.")
    num_keys: int = Field(64, gt=0, le=MAX_TOKENS)
    num_values: int = Field(64, gt=0, le=MAX_TOKENS)
    seq_len: SeqLen = 256
    depth: float | None = Field(None, ge=0.0, le=1.0, description="Where the needle sits, 0 = start, 1 = end.")
    num_distractors: int = Field(3, ge=0, description="multi_key: needles with other keys.")
    num_needle_values: int = Field(2, ge=1, description="multi_value: values of the one key.")
    num_queries: int = Field(2, ge=1, description="multi_query: keys asked.")

    _seq_len_ok = field_validator("seq_len")(_check_lengths)

    @model_validator(mode="after")
    def _fits(self) -> "NeedleTask":
        needed = FIRST_FREE_TOKEN + self.num_keys + self.num_values + (1 if self.haystack == "noise" else 0)
        if self.vocab_size < needed:
            raise ValueError(
                f"vocab_size {self.vocab_size} is too small for {self.num_keys} keys, "
                f"{self.num_values} values and noise (needs ≥ {needed})"
            )
        distinct_keys = self._asked_keys() + self._distractor_needles()
        if distinct_keys + (1 if self.haystack == "distractors" else 0) > self.num_keys:
            raise ValueError(f"num_keys {self.num_keys} is too few for {distinct_keys} distinct needle keys")
        shortest = min(_lengths(self.seq_len))
        if shortest < self._needle_tokens() + self._query_tokens() + 2:
            raise ValueError(f"seq_len {shortest} is too short for the needles and queries of this variant")
        return self

    @property
    def task_vocab_size(self) -> int:
        return self.vocab_size

    def _asked_keys(self) -> int:
        return self.num_queries if self.variant == "multi_query" else 1

    def _distractor_needles(self) -> int:
        return self.num_distractors if self.variant == "multi_key" else 0

    def _values_per_key(self) -> int:
        return self.num_needle_values if self.variant == "multi_value" else 1

    def _needle_tokens(self) -> int:
        return 3 * (self._asked_keys() * self._values_per_key() + self._distractor_needles())

    def _query_tokens(self) -> int:
        return self._asked_keys() * (2 + self._values_per_key()) - 1

    def _generate(self, rng, batch_size, length):
        inputs = np.zeros((batch_size, length), dtype=np.int64)
        targets = np.full((batch_size, length), IGNORE, dtype=np.int64)
        needle_start = np.zeros(batch_size, dtype=np.int64)
        evidence = np.full((batch_size, length, 2), -1, dtype=np.int64)
        question_start = np.zeros(batch_size, dtype=np.int64)
        first_value = FIRST_FREE_TOKEN + self.num_keys
        first_noise = first_value + self.num_values
        for b in range(batch_size):
            keys = FIRST_FREE_TOKEN + rng.choice(
                self.num_keys, size=self._asked_keys() + self._distractor_needles(), replace=False
            )
            asked, distractor_keys = keys[: self._asked_keys()], keys[self._asked_keys() :]
            values = first_value + rng.integers(0, self.num_values, size=(len(asked), self._values_per_key()))
            true_needles = [[NEEDLE_MARK, k, v] for k, row in zip(asked, values) for v in row]
            distractors = [[NEEDLE_MARK, k, first_value + rng.integers(self.num_values)] for k in distractor_keys]
            query = [tok for k, row in zip(asked, values) for tok in [QUERY_MARK, k, *row]][: self._query_tokens()]
            haystack_len = length - len(query) - 3 * (len(true_needles) + len(distractors))
            haystack = self._haystack(rng, haystack_len, keys, first_value, first_noise)
            context, starts = self._insert(rng, haystack, true_needles, distractors)
            needle_start[b] = starts[0]
            starts = np.asarray(starts).reshape(values.shape)  # one start per (asked key, value)
            if self.variant == "multi_value":  # the values are asked for in the order they appear
                appearance = np.argsort(starts[0], kind="stable")
                values, starts = values[:, appearance], starts[:, appearance]
                query = [QUERY_MARK, asked[0], *values[0]][: self._query_tokens()]
            sequence = np.asarray(context + query)
            inputs[b] = sequence[:length] if len(sequence) >= length else np.pad(sequence, (0, length - len(sequence)))
            # Score each asked key's answer: the key predicts its first value, each value the next.
            question_start[b] = cursor = len(context)
            for row, row_starts in zip(values, starts):
                for offset, (value, start) in enumerate(zip(row, row_starts)):
                    targets[b, cursor + 1 + offset] = value
                    evidence[b, cursor + 1 + offset] = (start, start + 3)
                cursor += 2 + len(row)
        return batch_from_arrays(
            inputs, targets, needle_start=needle_start, evidence=evidence, question_start=question_start
        )

    def _haystack(self, rng, haystack_len, used_keys, first_value, first_noise) -> list[int]:
        if self.haystack == "noise":
            return rng.integers(first_noise, self.vocab_size, size=haystack_len).tolist()
        free_keys = np.setdiff1d(np.arange(FIRST_FREE_TOKEN, first_value), used_keys)
        pairs = [
            [int(rng.choice(free_keys)), int(first_value + rng.integers(self.num_values))]
            for _ in range(haystack_len // 2)
        ]
        filler = rng.integers(first_value, first_value + self.num_values, size=haystack_len % 2).tolist()
        return [tok for pair in pairs for tok in pair] + filler

    def _insert(self, rng, haystack, true_needles, distractors) -> tuple[list[int], list[int]]:
        """Insert needles between haystack units; the first true needle goes after `depth` of the haystack.

        Returns the context and where each true needle starts.
        """
        unit = 2 if self.haystack == "distractors" else 1  # never split a distractor pair
        gaps = len(haystack) // unit
        depth = self.depth if self.depth is not None else rng.random()
        placements = [(int(round(depth * gaps)), 0, true_needles[0])]
        for order, needle in enumerate(true_needles[1:] + distractors, start=1):
            placements.append((int(rng.integers(0, gaps + 1)), order, needle))
        placements.sort()
        context, consumed, starts = [], 0, [0] * len(true_needles)
        for gap, order, needle in placements:
            context += haystack[consumed : gap * unit]
            consumed = gap * unit
            if order < len(true_needles):
                starts[order] = len(context)
            context += [int(t) for t in needle]
        return context + haystack[consumed:], starts


class CopyTask(SyntheticTask):
    """Sequence copying (Snell et al. 2021): x₁…x_L, separator, x₁…x_L; the copy is scored.

    easy: L distinct tokens drawn from `vocab` tokens; hard: every input is a permutation
    of the same L tokens, so co-occurrence carries no signal and only attention can solve it.
    Token 1 is the separator; the sequence length is 2·L + 1.
    """

    task: Literal["copy"]
    distribution: Literal["easy", "hard"] = "easy"
    length: int = Field(40, gt=0, le=MAX_TOKENS, description="Tokens to copy.")
    vocab: int = Field(60, gt=0, le=MAX_TOKENS, description="easy: tokens to draw from (hard uses `length` tokens).")

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

    def _generate(self, rng, batch_size, length):
        pool = self.vocab if self.distribution == "easy" else self.length
        source = np.stack([2 + rng.choice(pool, size=self.length, replace=False) for _ in range(batch_size)])
        inputs = np.concatenate([source, np.ones((batch_size, 1), dtype=np.int64), source], axis=1)
        targets = np.full_like(inputs, IGNORE)
        targets[:, self.length : 2 * self.length] = source
        return batch_from_arrays(inputs, targets)
