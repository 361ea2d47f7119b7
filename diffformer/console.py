"""The command line's consoles, and how every error reaches the user as one line with an exit code."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from diffformer import strict_json
from diffformer.errors import DiffformerError

# Every command that computes takes the same --device, with one meaning (diffformer/devices.py resolves it).
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (a GPU when there is one).")]


# Help texts name what an option takes in words a researcher reads — N, X, TEXT, PATH, "…" for repeatable —
# instead of typer's type names (<int>, <list[str]>), and flags show none (typer writes <bool>). typer has no
# setting for this, so its type label is translated where it is made; a typer without that hook keeps its own.
_TYPE_WORDS = {"int": "N", "int range": "N", "float": "X", "float range": "X", "str": "TEXT", "text": "TEXT"}
_PATH_TYPES = {"path", "file", "directory", "Path"}


def _type_in_words(label: str) -> str | None:
    """typer's "<int>", "<list[Path]>", "<bool>", "<a|b>" -> "N", "PATH …", None, "a|b"."""
    inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
    repeated = inner.startswith("list[") and inner.endswith("]")
    inner = inner[5:-1] if repeated else inner
    if inner == "bool":
        return None
    word = "PATH" if inner in _PATH_TYPES else _TYPE_WORDS.get(inner, inner)
    return f"{word} …" if repeated else word


_typer_parameter = getattr(typer.core, "_TyperParameter", None)
if _typer_parameter is not None and hasattr(_typer_parameter, "display_type"):
    _typer_display_type = _typer_parameter.display_type

    def _display_type(self, ctx):
        return _type_in_words(_typer_display_type(self, ctx))

    _typer_parameter.display_type = _display_type


class OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a bad option value, an unknown option) as one line on stderr with exit code 2,
    like every other error of the tool, instead of a multi-line panel."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as error:  # typer's (vendored) click usage errors
            if type(error).__name__ == "NoArgsIsHelpError":  # `diffformer` alone: the help, as asked
                error.show()
                sys.exit(0)
            where = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) else ""
            stderr.print(f"[bold red]error:[/bold red] {escape(error.format_message())}{where}", soft_wrap=True)
            sys.exit(getattr(error, "exit_code", 2))
        except typer.Abort:
            stderr.print("[bold red]error:[/bold red] aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Off a terminal (a pipe, a log file) rich would lay tables out at 80 columns and cut every cell to "…";
# there they get the width of $COLUMNS, or one wide enough for any table the tool prints.
PIPED_WIDTH = 240


def _console(stream) -> Console:
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stream is sys.stderr, width=PIPED_WIDTH if piped else None)


stdout = _console(sys.stdout)
stderr = _console(sys.stderr)


@contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """A problem the user can fix becomes one line on stderr and a non-zero exit code, never a traceback.

    DiffformerError: its message and exit code. OSError (a read-only folder, a full disk, a
    path that is a file): what the system said and the path. With --json, stdout also gets
    {"error": ..., "exit_code": ...} so scripts never parse a half-written result.
    """
    try:
        yield
    except (DiffformerError, OSError) as error:
        message, code = (
            (str(error), error.exit_code) if isinstance(error, DiffformerError) else (describe_os_error(error), 1)
        )
        stderr.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
        if as_json:
            print_json({"error": message, "exit_code": code})
        raise typer.Exit(code) from None


def describe_os_error(error: OSError) -> str:
    paths = " → ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    reason = error.strerror or type(error).__name__
    return f"{reason}: {paths}" if paths else reason


def print_json(value) -> None:
    stdout.print_json(strict_json.dumps(value))


@contextmanager
def cell_progress(console: Console, description: str):
    """A transient progress bar on `console` (silent when it is not a terminal); yields on_cell(done, total)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def on_cell(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield on_cell
