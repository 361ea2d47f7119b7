"""Errors a user can fix. The CLI prints them as one line on stderr and exits with their code."""


class DiffformerError(Exception):
    """A problem with the user's input or files, stated so they can fix it."""

    exit_code = 2


class RecipeError(DiffformerError):
    """A recipe that cannot be read or does not validate."""


class DataError(DiffformerError):
    """A data file, dataset or tokenizer that cannot be used."""


class CheckpointError(DiffformerError):
    """A checkpoint or run folder that cannot be read."""


class WriteFailed(DiffformerError):
    """A file could not be written (a full disk, a vanished folder) where the writer is not an OS call that
    says so itself (safetensors): exit code 1, like every other failed write."""

    exit_code = 1


class TrainingDiverged(DiffformerError):
    """The loss became non-finite; the last good checkpoint is kept."""

    exit_code = 1


class CompileFailed(DiffformerError):
    """torch.compile could not compile the model here (no C++ compiler, an unsupported operation)."""

    exit_code = 1


def first_line(error: Exception) -> str:
    """The first line of a third-party exception's message, for a one-line error of our own."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
