"""Durable file writes: write a temporary file, fsync it, rename it over the target, fsync the folder.

A process killed at any moment leaves either the old file or the new one, never a mix.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"


def temporary_path(path: Path) -> Path:
    """A sibling name for writing `path`, recognisable as a leftover if the writer dies."""
    return path.with_name(f"{TEMPORARY_PREFIX}{path.name}.{os.getpid()}")


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(temporary: Path, path: Path) -> None:
    """Rename a finished, fsynced temporary file or folder into place and make the rename durable."""
    os.replace(temporary, path)
    fsync_directory(path.parent)


def atomic_write(path: Path, data: str | bytes) -> None:
    temporary = temporary_path(path)
    with open(temporary, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
        file.flush()
        os.fsync(file.fileno())
    replace_durably(temporary, path)


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `output` (which must be absent or an empty folder); on success it
    is moved into place as `output`, on any failure (a full disk) removed: no half-written folder is left and
    `output` is never a mix of two writes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(output)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if output.exists():
            output.rmdir()  # empty, as the caller checked
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
