"""Tokenizers a text recipe can name: the 256 bytes, BPE trained on the training split, or a tokenizer.json."""

import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from diffformer.atomic import atomic_write
from diffformer.errors import DataError, first_line
from diffformer.plain_progress import QUIET_SECONDS, duration_text
from diffformer.sections import Section

END_OF_TEXT = "<|endoftext|>"


class ByteTokenizer(Section):
    """One token per byte (256 ids), no training."""

    kind: Literal["byte"]


class BpeTokenizer(Section):
    """Byte-level BPE trained on the training split, `vocab_size` ids including <|endoftext|>."""

    kind: Literal["bpe"]
    vocab_size: int = Field(2048, ge=258, le=65536)


class PretrainedTokenizer(Section):
    """A tokenizer published on the Hugging Face hub by name (e.g. gpt2), fetched once into the cache."""

    kind: Literal["pretrained"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", description="The hub name, e.g. gpt2.")


class FileTokenizer(Section):
    """An existing tokenizer.json (relative to the recipe)."""

    kind: Literal["file"]
    path: Path


TokenizerConfig = Annotated[
    ByteTokenizer | BpeTokenizer | PretrainedTokenizer | FileTokenizer, Field(discriminator="kind")
]


def build_tokenizer(spec: "TokenizerConfig", cache_dir: Path, source_key: str, train_texts, document_count: int):
    """The tokenizer a recipe asks for: read from a file, the byte alphabet, or BPE trained on `train_texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if spec.kind == "file":
        path = spec.path
        if path.is_dir():
            raise DataError(f"tokenizer file {path} is a folder; expected a tokenizer.json file")
        if not path.is_file():
            raise DataError(f"tokenizer file {path} does not exist")
        try:
            return Tokenizer.from_file(str(path))
        except Exception as error:
            raise DataError(f"tokenizer file {path} is not a tokenizers JSON file: {first_line(error)}") from None
    if spec.kind == "pretrained":
        return _pretrained(spec.name, cache_dir)
    if spec.kind == "byte":
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        return tokenizer
    cached = cache_dir / "tokenizers" / f"{source_key[:24]}-bpe{spec.vocab_size}.json"
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[END_OF_TEXT],
        show_progress=sys.stderr.isatty(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    started = time.perf_counter()
    tokenizer.train_from_iterator(train_texts, trainer=trainer, length=document_count)
    took = time.perf_counter() - started
    if not sys.stderr.isatty() and took >= QUIET_SECONDS:  # the library's own bar draws only on a terminal
        vocabulary = f"vocabulary {spec.vocab_size:,}, {document_count:,} documents"
        print(f"trained a BPE tokenizer ({vocabulary}) in {duration_text(took)}", file=sys.stderr)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, tokenizer.to_str())
    return tokenizer


def _pretrained(name: str, cache_dir: Path):
    """The hub tokenizer `name`, from the cache when it was fetched before (so later runs work offline)."""
    from tokenizers import Tokenizer

    cached = cache_dir / "tokenizers" / f"pretrained-{name.replace('/', '--')}.json"
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    try:
        tokenizer = Tokenizer.from_pretrained(name)
    except Exception as error:
        raise DataError(
            f"tokenizer '{name}' could not be fetched from the Hugging Face hub ({first_line(error)}); "
            "offline, give a local tokenizer.json: tokenizer: {kind: file, path: ...}"
        ) from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, tokenizer.to_str())
    return tokenizer
