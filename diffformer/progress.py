"""Live progress on the console: the training progress bar and the messages of a variants sweep."""

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffformer.launch import SweepListener
from diffformer.training.listeners import StepReport, TrainingListener
from diffformer.training.trainer import TrainResult


class ConsoleProgress(TrainingListener):
    """A rich progress bar with loss, learning rate, tokens/s and MFU; messages on resume and Ctrl-C."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.task = None

    def on_start(self, name: str, step: int, total_steps: int, resumed_from: str | None) -> None:
        if resumed_from is not None:
            self.console.print(f"Resuming {name} from step {step} ({resumed_from})")
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
        self.bar.update(self.task, completed=report.step, loss=f"loss {report.loss:.4f}", lr=f"lr {report.lr:.2e}")

    def on_record(self, record: dict) -> None:
        if "tokens_per_sec" in record:
            self.bar.update(self.task, speed=f"{record['tokens_per_sec']:,.0f} tok/s  MFU {record['mfu']:.1%}")

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
