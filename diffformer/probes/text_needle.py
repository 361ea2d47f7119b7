"""The natural-language needle for text-trained models (docs/formulas.md §5).

"The secret number of <name> is <digits>." is inserted at a sentence boundary of
held-out text, after `depth` of its sentences; the prompt ends with the cue "The secret
number of <name> is". Tiny models do not follow instructions, so a prompt is scored by
exact match of the greedy continuation and by the rank of the true number's
log-probability among candidate numbers (1 = the model prefers the truth).
Every prompt has exactly `length` tokens, so the answer position is the same in a batch.
"""

import re

import numpy as np
import torch

from diffformer.data.batch import IGNORE, Batch
from diffformer.probes.prompts import Cell

NAMES = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Leslie"]
CANDIDATES = 10
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class TextNeedle:
    def __init__(self, tokenizer, held_out_tokens: np.ndarray):
        self.tokenizer = tokenizer
        self.held_out = held_out_tokens

    def prompts(self, seed: int, index: int, count: int, length: int, depth: float):
        """`count` prompts of `length` tokens: (Batch, true numbers, candidate numbers per prompt)."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, index]))
        inputs, evidence, question, truths, candidates = [], [], [], [], []
        for _ in range(count):
            name = NAMES[rng.integers(len(NAMES))]
            numbers = [str(n) for n in rng.choice(np.arange(1000, 10000), size=CANDIDATES, replace=False)]
            needle = self._encode(f" The secret number of {name} is {numbers[0]}.")
            cue = self._encode(f" The secret number of {name} is")
            room = length - len(needle) - len(cue)
            if room < 8:
                raise ValueError(f"length {length} is too short for the text needle")
            start = int(rng.integers(0, max(1, len(self.held_out) - 4 * room)))
            sentences = SENTENCE_END.split(self.tokenizer.decode(self.held_out[start : start + 4 * room].tolist()))
            before = self._encode(" ".join(sentences[: int(round(depth * len(sentences)))]))
            after = self._encode(" " + " ".join(sentences[int(round(depth * len(sentences))) :]))
            # Trim the text so the prompt has exactly `length` tokens, keeping the needle's depth.
            keep_before = min(len(before), int(round(depth * room)))
            keep_after = room - keep_before
            if keep_after > len(after):
                keep_before, keep_after = room - len(after), len(after)
            tokens = before[len(before) - keep_before :] + needle + after[:keep_after] + cue
            inputs.append(tokens)
            evidence.append((keep_before, keep_before + len(needle)))
            question.append(len(tokens) - len(cue))
            truths.append(numbers[0])
            candidates.append(numbers)
        inputs_tensor = torch.tensor(inputs)
        targets = torch.full_like(inputs_tensor, IGNORE)
        answers = [self._encode(f" {truth}")[0] for truth in truths]
        targets[:, -1] = torch.tensor(answers)
        spans = torch.full((count, length, 2), -1)
        spans[:, -1] = torch.tensor(evidence)
        return Batch(inputs_tensor, targets, evidence=spans, question_start=torch.tensor(question)), truths, candidates

    @torch.no_grad()
    def score(self, model, batch: Batch, truths, candidates) -> tuple[torch.Tensor, torch.Tensor]:
        """(exact match of the greedy continuation, rank of the truth among the candidates) per prompt."""
        exact, ranks = [], []
        for prompt, truth, numbers in zip(batch.inputs, truths, candidates):
            generated = prompt
            answer_tokens = self._encode(f" {truth}")
            for _ in range(len(answer_tokens)):
                next_token = model(generated[None])[0, -1].argmax()
                generated = torch.cat([generated, next_token[None]])
            continuation = self.tokenizer.decode(generated[len(prompt) :].tolist()).strip()
            exact.append(continuation.startswith(truth))
            scores = [self._log_probability(model, prompt, self._encode(f" {n}")) for n in numbers]
            ranks.append(1 + sum(s > scores[0] for s in scores[1:]))
        return torch.tensor(exact), torch.tensor(ranks, dtype=torch.float64)

    def _log_probability(self, model, prompt: torch.Tensor, continuation: list[int]) -> float:
        sequence = torch.cat([prompt, torch.tensor(continuation)])
        log_probs = model(sequence[None, :-1])[0].float().log_softmax(-1)
        positions = torch.arange(len(prompt) - 1, len(sequence) - 1)
        return float(log_probs[positions, torch.tensor(continuation)].sum())

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids


class TextNeedlePrompts:
    """The text needle over a run's held-out text, as a prompt source."""

    variants = ["text_needle"]
    candidates = CANDIDATES

    def __init__(self, needle: TextNeedle, data, model, seed: int, trained_length: int):
        self.needle, self.data, self.model, self.seed = needle, data, model, seed
        self.trained_length = trained_length

    def cell(self, variant: str, length: int, depth: float, key: int, count: int) -> Cell | None:
        try:
            batch, truths, candidates = self.needle.prompts(self.seed, key, count, length, depth)
        except ValueError:
            return None
        return Cell(batch, lambda b: self.needle.score(self.model, b, truths, candidates))

    def plain_batch(self, count: int) -> Batch:
        return self.data.batch(self.seed, "val", 0, count)
