"""Training data: built-in synthetic tasks and tokenized text, behind one `data:` recipe section."""

import os
from pathlib import Path
from typing import Annotated, Protocol

import numpy as np
from pydantic import Field, TypeAdapter

from diffformer.data.batch import IGNORE, Batch
from diffformer.data.copying import CopyTask
from diffformer.data.focus import FocusTask
from diffformer.data.lookups import TwoLookupsTask
from diffformer.data.marked import MarkedValuesTask
from diffformer.data.mqar import MqarTask
from diffformer.data.needle import NeedleTask
from diffformer.data.synthetic import SyntheticTask
from diffformer.data.text import TextData, TextTask

DataConfig = Annotated[
    MqarTask | NeedleTask | CopyTask | MarkedValuesTask | TwoLookupsTask | FocusTask | TextTask,
    Field(discriminator="task"),
]


class TaskData(Protocol):
    """What training and evaluation read: batches as a pure function of (seed, split, index)."""

    vocab_size: int
    max_length: int
    # Whether a sequence has answers that are right or wrong as a whole (exact match, "learned"): synthetic
    # tasks; not text, where every position is scored and no sequence is ever entirely right.
    whole_answers: bool

    def batch(self, seed: int, split: str, index: int, batch_size: int) -> Batch: ...

    def bytes_per_token(self, split: str) -> float | None:
        """Text: UTF-8 bytes per token of `split` (for bits per byte); synthetic tasks: None."""


class SyntheticData:
    """A synthetic task's config, seen as data (nothing to prepare)."""

    whole_answers = True

    def __init__(self, task: SyntheticTask):
        self.task = task
        self.vocab_size = task.task_vocab_size
        self.max_length = task.max_length
        self.tokenizer = None

    def batch(self, seed: int, split: str, index: int, batch_size: int) -> Batch:
        return self.task.batch(seed, split, index, batch_size)

    def bytes_per_token(self, split: str) -> None:
        return None


def masked_keys_of(data: dict) -> np.ndarray | None:
    """The attention layout a recipe's data section (as stored) asks of the model (SyntheticTask.masked_keys),
    or None: causal attention. An empty section (a library checkpoint) asks for none."""
    if not data:
        return None
    task = TypeAdapter(DataConfig).validate_python(data)
    return task.masked_keys() if isinstance(task, SyntheticTask) else None


def default_cache_dir() -> Path:
    """Where tokenized text is cached: $DIFFFORMER_CACHE, else ~/.cache/diffformer."""
    return Path(os.environ.get("DIFFFORMER_CACHE", Path.home() / ".cache" / "diffformer"))


def prepare_data(config: DataConfig, cache_dir: Path | None = None) -> TaskData:
    """Make the data ready to draw batches from (tokenizing text once into the cache).

    Paths in `config` are used as they are: recipes resolve them against the recipe file.
    """
    if isinstance(config, TextTask):
        return config.prepare(cache_dir or default_cache_dir())
    return SyntheticData(config)


__all__ = [
    "IGNORE",
    "Batch",
    "DataConfig",
    "TaskData",
    "TextData",
    "default_cache_dir",
    "masked_keys_of",
    "prepare_data",
]
