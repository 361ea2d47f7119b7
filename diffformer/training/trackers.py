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


def check_trackers_installed(settings: TrackerSettings | None, folder: RunFolder | None = None) -> None:
    """Fail before anything is written when an asked-for tracker's package is missing, or its log folder in the
    run folder is taken by something that is not a folder."""
    import importlib.util

    if folder is not None and settings is not None:
        asked = [TENSORBOARD] * bool(settings.tensorboard) + [WANDB] * (settings.wandb is not None)
        for name in asked:
            if (folder.path / name).exists() and not (folder.path / name).is_dir():
                raise RecipeError(f"{folder.path / name} is not a folder, so trackers.{name} cannot log into it")

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
        listeners.append(TensorBoardListener(folder, resumed_step, recipe))
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


# What TensorBoard shows as charts of their own: the measurements. Counters and the parts of an interval
# (x_se, x_low, x_high) are folded into each measurement's margin chart instead of twenty more tags.
INTERVAL_PARTS = ("_se", "_low", "_high")
COUNTERS = ("train/tokens", "train/elapsed", "eval/scored_tokens", "eval/examples")


def _tensorboard_scalars(record: dict) -> dict[str, float]:
    """The record's measurements, and for each eval measurement with an interval its bounds as tag/low and
    tag/high (a 95% interval: the Wilson or perplexity bounds where the record has them, else ± 1.96 s.e.)."""
    named = _scalars(record)
    shown = {t: v for t, v in named.items() if not t.endswith(INTERVAL_PARTS) and t not in COUNTERS}
    for tag, value in list(shown.items()):
        low, high = named.get(f"{tag}_low"), named.get(f"{tag}_high")
        error = named.get(f"{tag}_se")
        if low is None and error is not None:
            low, high = value - 1.96 * error, value + 1.96 * error
        if low is not None and high is not None:
            shown[f"{tag}/low"], shown[f"{tag}/high"] = low, high
    return shown


def _margin_layout(tags) -> dict:
    """TensorBoard's custom-scalars layout: one margin chart (value with its 95% band) per measured interval."""
    charts = {
        tag.split("/", 1)[1]: ["Margin", [tag, f"{tag}/low", f"{tag}/high"]]
        for tag in sorted(tags)
        if f"{tag}/low" in tags
    }
    return {"held-out, with 95% intervals": charts} if charts else {}


def _hparams(recipe: dict) -> dict:
    """The recipe's settings as TensorBoard hparams: flat keys, numbers, strings and booleans only."""
    from diffformer.recipe.fingerprint import defining_settings

    flat = defining_settings(recipe)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items() if v is not None}


class TensorBoardListener(TrainingListener):
    def __init__(self, folder: RunFolder, resumed_step: int, recipe: dict | None = None):
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
        self.recipe, self.layout_written, self.last_eval = recipe, False, {}

    def on_record(self, record: dict) -> None:
        scalars = _tensorboard_scalars(record)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, record["step"])
        if not self.layout_written and (layout := _margin_layout(scalars)):
            self.writer.add_custom_scalars(layout)
            self.layout_written = True
        self.last_eval.update({t: v for t, v in scalars.items() if t.startswith("eval/") and "/" not in t[5:]})

    def on_dynamics(self, record: DynamicsRecord) -> None:
        for tag, value in _dynamics_scalars(record).items():
            self.writer.add_scalar(tag, value, record.step)

    def on_end(self) -> None:
        if self.recipe is not None and self.last_eval:
            # The HPARAMS tab: the settings against the last held-out metrics, in a sub-run of its own
            # (torch writes the metrics there again; the main event file keeps each step once).
            self.writer.add_hparams(_hparams(self.recipe), dict(self.last_eval), run_name="hparams")
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
