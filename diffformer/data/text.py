"""Natural text: load with `datasets`, tokenize with `tokenizers`, cache the tokens (token_cache.py).

The corpus is split by documents: the last `val_fraction` of them is held out (a
single-document corpus is cut by characters). The BPE tokenizer is trained on the
training documents only.
"""

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from diffformer.data.batch import Batch, example_rng
from diffformer.data.token_cache import (
    ENCODE_BATCH_DOCUMENTS,
    TOKEN_FILE_VERSION,
    TokenFileHeader,
    open_tokens,
    read_valid_header,
    write_token_file,
)
from diffformer.data.tokenizers import END_OF_TEXT, BpeTokenizer, TokenizerConfig, build_tokenizer
from diffformer.errors import DataError, first_line
from diffformer.sections import MAX_TOKENS, Section

LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class TextTask(Section):
    """Language modelling on text from exactly one of: a local `path`, a hub `dataset`, or a `builtin` corpus."""

    task: Literal["text"]
    path: Path | None = Field(None, description="Local .txt (one document per line), .jsonl, .json, .parquet or .csv.")
    dataset: str | None = Field(None, description="A Hugging Face hub dataset name (needs the network once).")
    builtin: Literal["pydoc_topics"] | None = Field(
        None, description="pydoc_topics: Python's own documentation topics, always offline."
    )
    config: str | None = Field(None, description="The hub dataset's configuration (subset), e.g. sample-10BT.")
    streaming: bool = Field(
        False, description="Read the hub dataset as a stream, keeping its first max_documents (no full download)."
    )
    max_documents: int | None = Field(None, gt=1, le=10**9, description="Use only the first N documents.")
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
        if self.streaming and (self.dataset is None or self.max_documents is None):
            raise ValueError("streaming reads a hub dataset: it needs data.dataset and data.max_documents")
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
    documents = _load_documents(config)
    train_docs, val_docs = _split_documents(documents, config.val_fraction)
    source_key = _source_fingerprint(config, documents)
    tokenizer = build_tokenizer(config.tokenizer, cache_dir, source_key, _texts(train_docs), len(train_docs))
    tokenizer_hash = hashlib.sha256(tokenizer.to_str().encode()).digest()
    token_file = cache_dir / "tokens" / f"{source_key[:24]}-{tokenizer_hash.hex()[:16]}.bin"
    header = read_valid_header(token_file, tokenizer_hash)
    if header is None:
        separator = tokenizer.token_to_id(END_OF_TEXT)
        header = write_token_file(token_file, tokenizer, tokenizer_hash, (train_docs, val_docs), separator)
    return TextData(open_tokens(token_file, header), header, config.seq_len, tokenizer)


def _load_documents(config: TextTask):
    import datasets

    datasets.disable_progress_bars()
    if config.builtin == "pydoc_topics":
        from pydoc_data.topics import topics

        # Each topic split into paragraphs: many short documents for a clean document-level split.
        paragraphs = [p.strip() for name in sorted(topics) for p in topics[name].split("\n\n") if p.strip()]
        return datasets.Dataset.from_dict({"text": paragraphs})
    if config.path is not None:
        path = config.path
        loader = _check_data_file(path)
        try:
            loaded = datasets.load_dataset(loader, data_files=str(path), split="train")
        except Exception as error:  # datasets raises many types for unreadable files
            raise DataError(f"data file {path} could not be read as {loader}: {_root_cause(error)}") from None
        source = f"data file {path}"
    else:
        try:
            loaded = _load_hub_dataset(config)
        except Exception as error:
            raise DataError(
                f"dataset '{config.dataset}' (split '{config.split}') is not available: "
                f"{first_line(error)} (offline machines need a local data.path)"
            ) from None
        source = f"dataset '{config.dataset}'"
    if config.text_column not in loaded.column_names:
        raise DataError(
            f"{source} has no column '{config.text_column}' (columns: {', '.join(loaded.column_names)}); "
            "set data.text_column"
        )
    loaded = loaded.select_columns([config.text_column])
    if config.text_column != "text":
        loaded = loaded.rename_column(config.text_column, "text")
    loaded = loaded.filter(lambda row: bool(row["text"] and str(row["text"]).strip()))
    if config.max_documents is not None and len(loaded) > config.max_documents:
        loaded = loaded.select(range(config.max_documents))
    if len(loaded) == 0:
        raise DataError(f"{source} contains no text")
    return loaded


def _load_hub_dataset(config: TextTask):
    """The hub dataset, whole, or streamed with only its first max_documents kept (then cached as tokens)."""
    import datasets

    if not config.streaming:
        return datasets.load_dataset(config.dataset, config.config, split=config.split)
    stream = datasets.load_dataset(config.dataset, config.config, split=config.split, streaming=True)
    rows = [row[config.text_column] for row in stream.select_columns([config.text_column]).take(config.max_documents)]
    return datasets.Dataset.from_dict({config.text_column: rows})


def _check_data_file(path: Path) -> str:
    """The `datasets` loader for a local data file, after the checks whose failures datasets words poorly."""
    if path.is_dir():
        raise DataError(f"data file {path} is a folder; expected a file ({', '.join(LOADERS)})")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(f"data file {path} has an unsupported type; expected one of {', '.join(LOADERS)}")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    if loader in ("text", "json", "csv"):
        with open(path, "rb") as file:
            head = file.read(1 << 20)
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 4:  # not merely a character cut at the 1 MiB boundary
                raise DataError(f"data file {path} is not UTF-8 text (byte {error.start} is not valid UTF-8)") from None
    return loader


def _root_cause(error: BaseException) -> str:
    """The innermost cause's first line: datasets wraps the real problem in a generic one."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return first_line(error)


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


def _source_fingerprint(config: TextTask, documents) -> str:
    digest = hashlib.sha256(f"v{TOKEN_FILE_VERSION}|{config.val_fraction}|".encode())
    if config.path is not None:
        with open(config.path, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(config.text_column.encode())
    elif config.builtin is not None:
        digest.update(f"builtin|{config.builtin}|{sys.version}".encode())
    else:
        # A stream's documents have no stable fingerprint of their own: name what was read.
        read = f"stream|{config.max_documents}" if config.streaming else documents._fingerprint
        digest.update(f"hub|{config.dataset}|{config.config}|{config.split}|{config.text_column}|{read}".encode())
    if config.max_documents is not None:
        digest.update(f"|max_documents={config.max_documents}".encode())
    return digest.hexdigest()
