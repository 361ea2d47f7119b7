"""A batch of token sequences with the positions that are scored."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100  # target of a position that is not scored (cross_entropy's ignore_index)


@dataclass
class Batch:
    """inputs: (B, T) token ids; targets: (B, T) the token each position must predict, IGNORE where unscored.

    Retrieval tasks also say where the answers come from, for the attention probes:
    evidence: (B, T, 2) [start, end) of the tokens that answer each scored position (−1 elsewhere);
    question_start: (B,) where the question part begins; needle_start: (B,) the first true needle.
    The focus task: targets are (B, 1) labels and foreground (B,) the index of the segment carrying them.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    needle_start: torch.Tensor | None = None
    evidence: torch.Tensor | None = None
    question_start: torch.Tensor | None = None
    foreground: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with every tensor (annotations included) on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(self, **moved)


def batch_from_arrays(inputs: np.ndarray, targets: np.ndarray, **annotations: np.ndarray | None) -> Batch:
    """A Batch from numpy arrays; `annotations` are the optional fields (needle_start, evidence, question_start,
    foreground)."""
    tensors = {name: None if a is None else torch.from_numpy(a.astype(np.int64)) for name, a in annotations.items()}
    return Batch(torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64)), **tensors)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of batch `index` of `split`: the same every time, independent of any other batch."""
    split_code = {"train": 0, "val": 1, "probe": 2}[split]
    return np.random.default_rng(np.random.SeedSequence([seed, split_code, index]))
