"""What the training loop tells the world, and who listens.

The loop is headless: it trains and calls its listeners at fixed points. The metrics and
dynamics files are written by a listener; the console progress bar (diffformer/progress.py)
is one the CLI attaches; experiment trackers would be further listeners. Under torchrun
only rank 0 gets listeners, so nothing here needs to know about ranks.
"""

from dataclasses import dataclass

from diffformer.dynamics.records import DynamicsRecord
from diffformer.run_folder import DYNAMICS_FILE, METRICS_FILE, RunFolder


@dataclass(frozen=True)
class StepReport:
    """After every optimizer step."""

    step: int
    total_steps: int
    loss: float
    lr: float


class TrainingListener:
    """Hooks the training loop calls, in this order; override the ones you need."""

    def on_note(self, message: str) -> None:
        """Something to tell the user before training goes on (a recorded setting a resume keeps)."""

    def on_start(self, name: str, step: int, total_steps: int, resumed_from: str | None) -> None:
        """Training begins at `step` (0, or the step of the checkpoint named by `resumed_from`)."""

    def on_step(self, report: StepReport) -> None:
        """An optimizer step finished."""

    def on_record(self, record: dict) -> None:
        """A metrics record (log cadence and evaluations): step, tokens, loss, lr, ..., eval_*."""

    def on_dynamics(self, record: DynamicsRecord) -> None:
        """An attention measurement on the fixed batch (recipes with a `track:` section): step, layers, average."""

    def on_interrupt(self) -> None:
        """Ctrl-C arrived: the step finishes and a checkpoint is saved before the loop stops."""

    def on_end(self) -> None:
        """The loop stopped, finished or not (always called, even when training fails)."""


class StepLogWriter(TrainingListener):
    """Appends every metrics record to RUN/metrics.jsonl and every attention measurement to RUN/dynamics.jsonl."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_record(self, record: dict) -> None:
        self.folder.append_log(record, METRICS_FILE)

    def on_dynamics(self, record: DynamicsRecord) -> None:
        self.folder.append_log(record.to_json(), DYNAMICS_FILE)


def notify(listeners, event: str, *args) -> None:
    for listener in listeners:
        getattr(listener, event)(*args)
