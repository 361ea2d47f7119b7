"""The token cache: a corpus tokenized once into a memory-mapped file, so later runs start instantly.

    header (112 bytes): magic "DFTOKENS", format version u32, bytes per token u32,
                        token count u64, first validation token u64, UTF-8 bytes of the
                        training text u64, UTF-8 bytes of the validation text u64 (both for
                        bits per byte), tokenizer sha256 (32 bytes), BLAKE2b-256 of the tokens
    then the tokens, little-endian uint16 or uint32

A stale (other tokenizer, older format) or corrupt (bad magic, wrong size, tokens that no
longer match their checksum) file is detected by `read_valid_header` and rebuilt by the caller.
"""

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffformer.atomic import replace_durably, temporary_path

TOKEN_FILE_MAGIC = b"DFTOKENS"
TOKEN_FILE_VERSION = 3  # 2: the validation split's bytes; 3: a checksum of the tokens
HEADER = struct.Struct("<8sIIQQQQ32s32s")  # 112 bytes
CHECKSUM_CHUNK = 1 << 24
ENCODE_BATCH_DOCUMENTS = 1000


@dataclass(frozen=True)
class TokenFileHeader:
    bytes_per_token: int  # 2 or 4: the width of one stored token id
    count: int
    val_start: int
    train_bytes: int
    val_bytes: int

    @property
    def dtype(self):
        return np.uint16 if self.bytes_per_token == 2 else np.uint32

    def text_bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of text per token in a split (the conversion from nats per token to bits per byte)."""
        if split == "train":
            return self.train_bytes / max(self.val_start, 1)
        return self.val_bytes / max(self.count - self.val_start, 1)


def read_valid_header(path: Path, tokenizer_hash: bytes) -> TokenFileHeader | None:
    """The header of a complete token file made with this tokenizer, else None (missing, stale or corrupt)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(HEADER.size)
            size = os.fstat(file.fileno()).st_size
    except OSError:
        return None
    if len(raw) != HEADER.size:
        return None
    magic, version, width, count, val_start, train_bytes, val_bytes, stored_hash, checksum = HEADER.unpack(raw)
    if (
        magic != TOKEN_FILE_MAGIC
        or version != TOKEN_FILE_VERSION
        or width not in (2, 4)
        or stored_hash != tokenizer_hash
        or size != HEADER.size + count * width
        or val_start > count
        or _body_checksum(path) != checksum
    ):
        return None
    return TokenFileHeader(width, count, val_start, train_bytes, val_bytes)


def _body_checksum(path: Path) -> bytes:
    """BLAKE2b-256 of the tokens after the header (about 1 GB/s: a large cache costs a second to check)."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as file:
        file.seek(HEADER.size)
        for chunk in iter(lambda: file.read(CHECKSUM_CHUNK), b""):
            digest.update(chunk)
    return digest.digest()


def write_token_file(
    path: Path, tokenizer, tokenizer_hash: bytes, splits, separator: int | None, on_documents=None
) -> TokenFileHeader:
    """Stream the training then the validation documents through the tokenizer into `path` (atomically).

    splits: (train documents, validation documents), each a datasets.Dataset with a "text"
    column; memory stays at one batch of documents. `separator` ends every document.
    on_documents(n) hears how many documents each batch finished (for a progress bar).
    """
    width = 2 if tokenizer.get_vocab_size() <= 1 << 16 else 4
    dtype = np.uint16 if width == 2 else np.uint32
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    count, val_start, split_bytes = 0, 0, [0, 0]
    checksum = hashlib.blake2b(digest_size=32)
    with open(temporary, "wb") as out:
        out.write(b"\0" * HEADER.size)
        for split_index, documents in enumerate(splits):
            if split_index == 1:
                val_start = count
            for start in range(0, len(documents), ENCODE_BATCH_DOCUMENTS):
                texts = documents[start : start + ENCODE_BATCH_DOCUMENTS]["text"]
                split_bytes[split_index] += sum(len(text.encode()) for text in texts)
                for encoding in tokenizer.encode_batch(texts):
                    ids = encoding.ids + ([separator] if separator is not None else [])
                    body = np.asarray(ids, dtype=dtype).tobytes()
                    out.write(body)
                    checksum.update(body)
                    count += len(ids)
                if on_documents is not None:
                    on_documents(len(texts))
        out.seek(0)
        train_bytes, val_bytes = split_bytes
        out.write(
            HEADER.pack(
                TOKEN_FILE_MAGIC,
                TOKEN_FILE_VERSION,
                width,
                count,
                val_start,
                train_bytes,
                val_bytes,
                tokenizer_hash,
                checksum.digest(),
            )
        )
        out.flush()
        os.fsync(out.fileno())
    replace_durably(temporary, path)
    return TokenFileHeader(width, count, val_start, train_bytes, val_bytes)


def open_tokens(path: Path, header: TokenFileHeader) -> np.ndarray:
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER.size, shape=(header.count,))
