"""Live progress on the console: the training progress bar and the messages of a variants sweep."""

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffformer.devices import mfu_text
from diffformer.launch import SweepListener
from diffformer.plain_progress import QUIET_SECONDS, duration_text
from diffformer.training.listeners import StepReport, TrainingListener
from diffformer.training.trainer import TrainResult


class ConsoleProgress(TrainingListener):
    """A rich progress bar with loss, learning rate, tokens/s and MFU; messages on resume and Ctrl-C. When the
    console is not a terminal (a log file, nohup, sbatch, CI) one plain line per logged step instead:
    step, loss, lr, tokens/s, MFU and the time left."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.task = None
        self.plain = not console.is_terminal
        self.name, self.total_steps, self.first_step, self.started = "", 0, 0, time.perf_counter()

    def on_note(self, message: str) -> None:
        self.console.print(f"[yellow]note:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)

    def on_start(self, name: str, step: int, total_steps: int, resumed_from: str | None) -> None:
        if resumed_from is not None:
            self.console.print(f"Resuming {name} from step {step} ({resumed_from})")
        self.name, self.total_steps, self.first_step, self.started = name, total_steps, step, time.perf_counter()
        if self.plain:  # lines come from on_record, once training has run for QUIET_SECONDS
            return
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[lr]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.bar.start()
        self.task = self.bar.add_task(name, total=total_steps, completed=step, loss="", lr="", speed="")

    def on_step(self, report: StepReport) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=report.step, loss=f"loss {report.loss:.4f}", lr=f"lr {report.lr:.2e}")

    def on_record(self, record: dict) -> None:
        if "tokens_per_sec" not in record:
            return
        speed = f"{record['tokens_per_sec']:,.0f} tok/s  {mfu_text(record.get('mfu'))}"
        if self.bar is not None:
            self.bar.update(self.task, speed=speed)
            return
        step, done, elapsed = record["step"], record["step"] - self.first_step, time.perf_counter() - self.started
        if elapsed < QUIET_SECONDS and step < self.total_steps:
            return
        left = elapsed / done * (self.total_steps - step) if done > 0 else 0.0
        line = f"{self.name} step {step}/{self.total_steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  {speed}"
        self.console.print(f"{line}  ETA {duration_text(left)}", highlight=False, soft_wrap=True)

    def on_interrupt(self) -> None:
        self.console.print("[yellow]Interrupted: finishing this step and saving a checkpoint…[/yellow]")

    def on_end(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class ConsoleSweep(SweepListener):
    """One line per variant as it starts and ends."""

    def __init__(self, console: Console):
        self.console = console

    def on_plan(self, source: Path, count: int) -> None:
        self.console.print(f"{count} variant(s) of {source}")

    def on_variant_start(self, label: str, run_dir: Path, resuming: bool) -> None:
        self.console.print(f"{label} → {run_dir}")

    def on_variant_end(self, label: str, result: TrainResult) -> None:
        if result.already_finished:
            self.console.print(f"[green]✓[/green] {label}: finished already ({result.run_dir})")
        else:
            self.console.print(f"[green]✓[/green] {label}: final loss {result.final_loss:.4f}")

    def on_probe(self, label: str, run_dir: Path, reused: bool) -> None:
        self.console.print(f"{label}: " + ("probe results up to date" if reused else "probing…"))
