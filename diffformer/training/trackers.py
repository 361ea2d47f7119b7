"""Experiment trackers: TensorBoard and Weights & Biases as training listeners (the `trackers:` section).

They mirror what the run folder records — every metrics.jsonl line (train/… and eval/…) and each
attention-dynamics measurement (dynamics/…) — at the same steps, and only on rank 0 (the trainer
gives listeners to rank 0 alone); probing a run's latest weights adds its probe summary (probe/…) at
the run's last step (`log_probe_summary`). A resumed run continues the same tracker run: TensorBoard hides
what it logged after the checkpoint the run resumed from (purge_step), W&B resumes its run by an id
derived from the run folder. Both packages are optional extras; asking for one that is not
installed is a one-line error naming the extra.
"""

import hashlib
import math
from typing import Literal

from pydantic import Field

from diffformer.dynamics.records import DynamicsRecord
from diffformer.errors import RecipeError
from diffformer.run_folder import TENSORBOARD, WANDB, RunFolder
from diffformer.sections import Section
from diffformer.training.listeners import TrainingListener


class WandbSettings(Section):
    project: str = Field(description="The W&B project to log into.")
    entity: str | None = Field(None, description="A W&B team or user (default: yours).")
    mode: Literal["online", "offline"] = Field("online", description="offline: write locally, sync later.")


class TrackerSettings(Section):
    """The `trackers:` section: where else the run reports (nothing it trains changes)."""

    tensorboard: bool = Field(False, description="Write TensorBoard event files into RUN/tensorboard.")
    wandb: WandbSettings | None = Field(None, description="Log to Weights & Biases (pip install 'diffformer[wandb]').")


def check_trackers_installed(settings: TrackerSettings | None) -> None:
    """Fail before anything is written when an asked-for tracker's package is missing."""
    import importlib.util

    wanted = {"tensorboard": settings is not None and settings.tensorboard}
    wanted["wandb"] = settings is not None and settings.wandb is not None
    for package, asked in wanted.items():
        if asked and importlib.util.find_spec(package) is None:
            raise RecipeError(f"trackers.{package} needs the {package} package: pip install 'diffformer[{package}]'")


def tracker_listeners(settings: TrackerSettings | None, folder: RunFolder, name: str, recipe: dict, resumed_step: int):
    """The listeners the recipe asks for (call on rank 0 only)."""
    if settings is None:
        return []
    listeners: list[TrainingListener] = []
    if settings.tensorboard:
        listeners.append(TensorBoardListener(folder, resumed_step))
    if settings.wandb is not None:
        listeners.append(WandbListener(settings.wandb, folder, name, recipe))
    return listeners


def _scalars(record: dict) -> dict[str, float]:
    """A metrics or dynamics record's numbers, named as trackers group them."""
    named = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        named[f"eval/{key.removeprefix('eval_')}" if key.startswith("eval_") else f"train/{key}"] = float(value)
    return named


def _dynamics_scalars(record: DynamicsRecord) -> dict[str, float]:
    values = {**record.average, **record.model}
    return {f"dynamics/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}


class TensorBoardListener(TrainingListener):
    def __init__(self, folder: RunFolder, resumed_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RecipeError(
                "trackers.tensorboard needs the tensorboard package: pip install 'diffformer[tensorboard]'"
            ) from None
        # purge_step: a resumed run hides whatever the interrupted one logged after its checkpoint.
        self.writer = SummaryWriter(
            str(folder.path / TENSORBOARD), purge_step=resumed_step + 1 if resumed_step else None
        )

    def on_record(self, record: dict) -> None:
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def on_dynamics(self, record: DynamicsRecord) -> None:
        for tag, value in _dynamics_scalars(record).items():
            self.writer.add_scalar(tag, value, record.step)

    def on_end(self) -> None:
        self.writer.close()


class WandbListener(TrainingListener):
    def __init__(self, settings: WandbSettings, folder: RunFolder, name: str, recipe: dict):
        try:
            import wandb
        except ImportError:
            raise RecipeError("trackers.wandb needs the wandb package: pip install 'diffformer[wandb]'") from None
        self.run = _wandb_run(wandb, settings, folder, name, recipe)

    def on_record(self, record: dict) -> None:
        self.run.log(_scalars(record), step=record["step"])

    def on_dynamics(self, record: DynamicsRecord) -> None:
        self.run.log(_dynamics_scalars(record), step=record.step)

    def on_end(self) -> None:
        self.run.finish()


def _wandb_run(wandb, settings: WandbSettings, folder: RunFolder, name: str, recipe: dict):
    """The run folder's W&B run: created on first use, resumed after (its id derives from the folder)."""
    (folder.path / WANDB).mkdir(parents=True, exist_ok=True)
    run_id = hashlib.sha256(str(folder.path.resolve()).encode()).hexdigest()[:16]
    return wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=name,
        id=run_id,
        resume="allow",
        dir=str(folder.path / WANDB),
        config=recipe,
        mode=settings.mode,
    )


def log_probe_summary(recipe, folder: RunFolder, step: int, scalars: dict[str, float]) -> list[str]:
    """Add a probe summary to the trackers a run's recipe (a validated Recipe) names, at the run's step; returns
    notes on trackers that could not be reached (a probe on a machine without the package still succeeds)."""
    settings = recipe.trackers or TrackerSettings()
    notes = []
    if settings.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            notes.append("trackers.tensorboard: tensorboard is not installed here; the probe summary was not logged")
        else:
            with SummaryWriter(str(folder.path / TENSORBOARD)) as writer:
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, step)
    if settings.wandb is not None:
        try:
            import wandb
        except ImportError:
            notes.append("trackers.wandb: wandb is not installed here; the probe summary was not logged")
        else:
            run = _wandb_run(wandb, settings.wandb, folder, recipe.name, recipe.stored())
            run.summary.update(scalars)  # W&B's history only moves forward; a summary holds after-training values
            run.finish()
    return notes
