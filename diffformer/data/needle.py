"""Needle in a haystack, token level (RULER-style): single, multi_key, multi_value, multi_query."""

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from diffformer.data.batch import IGNORE, batch_from_arrays
from diffformer.data.synthetic import SeqLen, SyntheticTask, check_lengths, lengths_of
from diffformer.sections import MAX_TOKENS

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

    _seq_len_ok = field_validator("seq_len")(check_lengths)

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
        shortest = min(lengths_of(self.seq_len))
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
