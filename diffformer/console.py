"""The command line's consoles, and how every error reaches the user as one line with an exit code."""

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


stdout = Console()
stderr = Console(stderr=True)


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
