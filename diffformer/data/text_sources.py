"""Where text comes from: local files (one, a folder, a glob) or a hub dataset (whole or streamed, with its
own validation split), read into documents for text.py to split, tokenize and cache."""

import glob
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from diffformer.data.python_docs import BUILTIN_CORPORA, corpus_checksum
from diffformer.errors import DataError, first_line
from diffformer.plain_progress import PlainLines

if TYPE_CHECKING:
    from diffformer.data.text import TextTask

BYTES_PER_BUDGETED_TOKEN = 4  # max_tokens counts text at about 4 UTF-8 bytes per token (BPE on English)
LOADERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@contextmanager
def progress_bar(description: str, total: int):
    """A progress bar on an interactive stderr, plain lines on any other (a log file); yields advance(n)."""
    from rich.console import Console
    from rich.progress import Progress

    if not sys.stderr.isatty():
        yield PlainLines(description, total).advance
        return
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def load_documents(config: "TextTask"):
    """(documents, the hub's validation documents or None), each a datasets.Dataset with a "text" column."""
    import datasets

    datasets.disable_progress_bars()
    # datasets logs its own report of a file it cannot parse (one with a traceback for a bad parquet) before
    # raising; the error it raises becomes diffformer's one line, so its log would only say it twice.
    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
    if config.builtin is not None:
        documents = BUILTIN_CORPORA[config.builtin]()
        found = corpus_checksum(documents)
        if config.builtin_sha256 is not None and config.builtin_sha256 != found:
            raise DataError(
                f"data.builtin_sha256: the {config.builtin} corpus of Python {sys.version.split()[0]} has sha256 "
                f"{found}, not the recipe's {config.builtin_sha256} (another Python's text; remove the pin to train "
                "on it anyway)"
            )
        return datasets.Dataset.from_dict({"text": documents}), None
    if config.path is not None:
        texts = [text for path in local_files(config.path) for text in _file_documents(path, config)]
        return _keep(datasets.Dataset.from_dict({"text": texts}), config, f"data {config.path}"), None
    try:
        validation_split = _hub_validation_split(config)
        loaded = _load_hub_split(config, config.split, config.max_documents, config.max_tokens)
        validation = None
        if validation_split is not None:
            share = config.val_fraction / (1 - config.val_fraction)  # the same budget share as a tail split
            documents = None if config.max_documents is None else max(2, round(config.max_documents * share))
            tokens = None if config.max_tokens is None else max(1, round(config.max_tokens * share))
            validation = _load_hub_split(config, validation_split, documents, tokens)
    except Exception as error:
        raise DataError(
            f"dataset '{config.dataset}' (split '{config.split}') is not available: "
            f"{first_line(error)} (offline machines need a local data.path)"
        ) from None
    source = f"dataset '{config.dataset}'"
    documents = _keep(_text_column(loaded, config, source), config, source)
    if validation is not None:
        validation = _keep(_text_column(validation, config, source), config, f"{source} ({validation_split})")
    return documents, validation


def local_files(path: Path) -> list[Path]:
    """The files a data.path names: itself, a folder's data files (recursively), or a glob's matches; sorted."""
    if any(character in str(path) for character in "*?["):
        files = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
        if not files:
            raise DataError(f"data {path} matches no file")
        return files
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOADERS)
        if not files:
            raise DataError(f"data folder {path} holds no {', '.join(LOADERS)} file")
        return files
    return [path]


def _file_documents(path: Path, config: "TextTask") -> list[str]:
    """One file's documents: a .txt as config.documents says (newlines kept but for 'line'), else its text column."""
    import datasets

    loader = _check_data_file(path)
    if loader == "text":
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:  # read with replacement characters, it would train on garbage
            raise DataError(
                f"data file {path} is not UTF-8 text (byte {error.start} is not valid UTF-8); convert it to UTF-8"
            ) from None
        if config.documents == "line":
            return text.splitlines()
        if config.documents == "paragraph":
            return [part.strip("\n") for part in re.split(r"\n\s*\n", text)]
        return [text]
    try:
        loaded = datasets.load_dataset(loader, data_files=str(path), split="train")
    except Exception as error:  # datasets raises many types for unreadable files
        raise DataError(f"data file {path} could not be read as {loader}: {_root_cause(error)}") from None
    return list(_text_column(loaded, config, f"data file {path}")["text"])


def _text_column(loaded, config: "TextTask", source: str):
    import datasets

    if config.text_column not in loaded.column_names:
        raise DataError(
            f"{source} has no column '{config.text_column}' (columns: {', '.join(loaded.column_names)}); "
            "set data.text_column"
        )
    feature = loaded.features[config.text_column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        held = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__.lower()
        raise DataError(
            f"{source}: column '{config.text_column}' holds {held} values, not text; "
            "point data.text_column at a column of strings"
        )
    loaded = loaded.select_columns([config.text_column])
    return loaded if config.text_column == "text" else loaded.rename_column(config.text_column, "text")


def _keep(loaded, config: "TextTask", source: str):
    """Non-blank documents, at most max_documents of them and about max_tokens of text."""
    loaded = loaded.filter(lambda row: bool(row["text"] and str(row["text"]).strip()))
    if config.max_documents is not None and len(loaded) > config.max_documents:
        loaded = loaded.select(range(config.max_documents))
    if config.max_tokens is not None:
        budget, kept = BYTES_PER_BUDGETED_TOKEN * config.max_tokens, 0
        for index, text in enumerate(loaded["text"]):
            budget -= len(text.encode())
            kept = index + 1
            if budget <= 0:
                break
        loaded = loaded.select(range(kept))
    if len(loaded) == 0:
        raise DataError(f"{source} contains no text")
    return loaded


def _hub_validation_split(config: "TextTask") -> str | None:
    """The split to validate on, or None for the tail of the training documents."""
    if config.val_split == "tail":
        return None
    if config.val_split != "auto":
        return config.val_split
    import datasets

    names = datasets.get_dataset_split_names(config.dataset, config.config)
    return "validation" if "validation" in names and config.split != "validation" else None


def _load_hub_split(config: "TextTask", split: str, max_documents: int | None, max_tokens: int | None):
    """One split of the hub dataset, whole, or streamed up to its budget (documents or bytes of text)."""
    import datasets

    if not config.streaming:
        return datasets.load_dataset(config.dataset, config.config, split=split)
    stream = datasets.load_dataset(config.dataset, config.config, split=split, streaming=True)
    budget = None if max_tokens is None else BYTES_PER_BUDGETED_TOKEN * max_tokens
    rows = []
    with progress_bar(f"reading {config.dataset} ({split})", max_documents) as advance:
        for row in stream.select_columns([config.text_column]):
            text = row[config.text_column] or ""
            rows.append(text)
            advance(1)
            if budget is not None:
                budget -= len(text.encode())
            if (max_documents is not None and len(rows) >= max_documents) or (budget is not None and budget <= 0):
                break
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
