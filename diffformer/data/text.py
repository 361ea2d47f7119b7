"""Natural text: load with `datasets`, tokenize with `tokenizers`, cache the tokens (token_cache.py).

A `.txt` file is one stream, newlines included (`documents: paragraph` or `line` cut it into
documents instead); `path` may also be a folder or a glob of files. Validation is the hub
dataset's own validation split when it has one (`val_split`), else the last `val_fraction` of
the documents (a single-document corpus is cut by characters). The BPE tokenizer is trained on
the training documents only.
"""

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import Batch, example_rng
from diffformer.data.text_sources import load_documents, local_files, progress_bar
from diffformer.data.token_cache import (
    ENCODE_BATCH_DOCUMENTS,
    TOKEN_FILE_VERSION,
    TokenFileHeader,
    open_tokens,
    read_valid_header,
    write_token_file,
)
from diffformer.data.tokenizers import END_OF_TEXT, BpeTokenizer, TokenizerConfig, build_tokenizer
from diffformer.errors import DataError
from diffformer.sections import MAX_TOKENS, Section


class TextTask(Section):
    """Language modelling on text from exactly one of: a local `path`, a hub `dataset`, or a `builtin` corpus."""

    task: Literal["text"]
    marks_sources: ClassVar[bool] = False  # next-token prediction on text: no answer positions
    path: Path | None = Field(
        None,
        description="Local .txt, .jsonl, .json, .parquet or .csv file, a folder of them, or a glob (data/*.txt).",
    )
    documents: Literal["file", "paragraph", "line"] = Field(
        "file",
        description=".txt files: file = each file is one document, newlines kept; paragraph = split at blank "
        "lines; line = one document per line (line breaks dropped).",
    )
    dataset: str | None = Field(None, description="A Hugging Face hub dataset name (needs the network once).")
    builtin: Literal["pydoc_topics", "python_docs"] | None = Field(
        None,
        description="Text every Python has, always offline: pydoc_topics (Python's documentation topics) or "
        "python_docs (those and the docstrings of a fixed list of standard-library modules).",
    )
    builtin_sha256: str | None = Field(
        None, description="With builtin: the corpus's SHA-256 this recipe was made with; another is refused."
    )
    config: str | None = Field(None, description="The hub dataset's configuration (subset), e.g. sample-10BT.")
    streaming: bool = Field(
        False, description="Read the hub dataset as a stream, keeping its first max_documents (no full download)."
    )
    max_documents: int | None = Field(None, gt=1, le=10**9, description="Use only the first N documents.")
    max_tokens: int | None = Field(
        None,
        gt=0,
        le=10**12,
        description="Stop reading once about this many tokens of text are read (counted as 4 UTF-8 bytes each).",
    )
    val_split: str = Field(
        "auto",
        description="auto: a hub dataset's 'validation' split when it has one, else the last val_fraction of the "
        "documents; tail: always the latter; or the name of a split to validate on.",
    )
    text_column: str = "text"
    split: str = "train"
    tokenizer: TokenizerConfig = Field(default_factory=lambda: BpeTokenizer(kind="bpe"))
    seq_len: int = Field(256, gt=0, le=MAX_TOKENS)
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> "TextTask":
        given = [name for name in ("path", "dataset", "builtin") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"text data needs exactly one of path, dataset or builtin (got {given or 'none'})")
        if self.streaming and (self.dataset is None or (self.max_documents is None and self.max_tokens is None)):
            raise ValueError(
                "streaming reads a hub dataset: it needs data.dataset and a budget, data.max_documents or max_tokens"
            )
        if self.config is not None and self.dataset is None:
            raise ValueError("data.config names a configuration of a hub dataset: it needs data.dataset")
        return self

    @property
    def max_length(self) -> int:
        return self.seq_len

    def prepare(self, cache_dir: Path) -> "TextData":
        return prepare_text(self, cache_dir)


class TextData:
    """Tokenized train/validation streams; batches are random windows, a pure function of (seed, split, index)."""

    whole_answers = False  # next-token prediction everywhere: exact match means nothing

    def __init__(self, tokens: np.ndarray, header: TokenFileHeader, seq_len: int, tokenizer):
        self.train_tokens, self.val_tokens = tokens[: header.val_start], tokens[header.val_start :]
        self.header = header
        self.seq_len = seq_len
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        for name, split in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(split) < seq_len + 2:
                raise DataError(
                    f"the {name} split has {len(split)} tokens, fewer than seq_len + 2 = {seq_len + 2}; "
                    "use more text, a shorter data.seq_len or another data.val_fraction"
                )

    @property
    def max_length(self) -> int:
        return self.seq_len

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of `split`'s text per token, to turn its loss into bits per byte."""
        return self.header.text_bytes_per_token(split)

    def batch(self, seed: int, split: str, index: int, batch_size: int) -> Batch:
        tokens = self.train_tokens if split == "train" else self.val_tokens
        starts = example_rng(seed, split, index).integers(0, len(tokens) - self.seq_len - 1, size=batch_size)
        windows = np.stack([np.asarray(tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        import torch

        return Batch(torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:]))


def prepare_text(config: TextTask, cache_dir: Path) -> TextData:
    documents, validation = load_documents(config)
    if validation is None:
        train_docs, val_docs = _split_documents(documents, config.val_fraction)
    else:
        train_docs, val_docs = documents, validation
    source_key = _source_fingerprint(config, documents, validation)
    tokenizer = build_tokenizer(config.tokenizer, cache_dir, source_key, _texts(train_docs), len(train_docs))
    tokenizer_hash = hashlib.sha256(tokenizer.to_str().encode()).digest()
    token_file = cache_dir / "tokens" / f"{source_key[:24]}-{tokenizer_hash.hex()[:16]}.bin"
    header = read_valid_header(token_file, tokenizer_hash)
    if header is None:
        separator = tokenizer.token_to_id(END_OF_TEXT)
        with progress_bar("tokenizing", len(train_docs) + len(val_docs)) as advance:
            header = write_token_file(token_file, tokenizer, tokenizer_hash, (train_docs, val_docs), separator, advance)
    return TextData(open_tokens(token_file, header), header, config.seq_len, tokenizer)


def _split_documents(documents, val_fraction: float):
    """(train, validation): the last val_fraction of documents, or of characters for a single document."""
    count = len(documents)
    if count == 1:
        import datasets

        text = documents[0]["text"]
        cut = int(len(text) * (1 - val_fraction))
        return datasets.Dataset.from_dict({"text": [text[:cut]]}), datasets.Dataset.from_dict({"text": [text[cut:]]})
    n_val = max(1, round(count * val_fraction))
    return documents.select(range(count - n_val)), documents.select(range(count - n_val, count))


def _texts(documents) -> Iterator[str]:
    for start in range(0, len(documents), ENCODE_BATCH_DOCUMENTS):
        yield from documents[start : start + ENCODE_BATCH_DOCUMENTS]["text"]


def _source_fingerprint(config: TextTask, documents, validation=None) -> str:
    digest = hashlib.sha256(f"v{TOKEN_FILE_VERSION}|{config.val_fraction}|".encode())
    if config.path is not None:
        for path in local_files(config.path):
            digest.update(f"|{path.name}|".encode())
            with open(path, "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(f"{config.text_column}|documents={config.documents}".encode())
    elif config.builtin is not None:
        digest.update(f"builtin|{config.builtin}|{sys.version}".encode())
    else:
        # A stream's documents have no stable fingerprint of their own: name what was read.
        read = f"stream|{config.max_documents}" if config.streaming else documents._fingerprint
        digest.update(f"hub|{config.dataset}|{config.config}|{config.split}|{config.text_column}|{read}".encode())
        digest.update(f"|validation={None if validation is None else config.val_split}".encode())
    for name in ("max_documents", "max_tokens"):
        if getattr(config, name) is not None:
            digest.update(f"|{name}={getattr(config, name)}".encode())
    return digest.hexdigest()
