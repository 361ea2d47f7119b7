"""The recipe schema: one pydantic model, the single source of truth for recipes.

    name, seed, model (ModelConfig), data (a task), train, eval, output

Each section's schema lives with its owner (model/config.py, data/, training/config.py);
this file assembles them and checks what spans sections.
"""

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from diffformer.data import DataConfig
from diffformer.dynamics.tracker import TrackSettings
from diffformer.errors import RecipeError
from diffformer.experiments import experiment_for
from diffformer.focus.objectives import FocusSettings
from diffformer.model.config import ModelConfig
from diffformer.probes.settings import ProbeSettings
from diffformer.sections import MAX_SEED, Section
from diffformer.training.config import EvalConfig, TrainConfig
from diffformer.training.trackers import TrackerSettings


class Recipe(Section):
    """A complete experiment: model, data, training and where the run goes."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name (letters, digits, . _ -).")
    extends: str | None = Field(None, description="A base recipe merged under this one (path relative to this file).")
    variants: dict[str, list[Any]] | None = Field(
        None,
        description="Dotted keys mapped to lists of values, expanded as a grid: one run per combination, "
        "in runs/<name>/<key=value+...>, followed by a comparison.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds initialisation, data and dropout.")
    model: ModelConfig
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: Path | None = Field(None, description="Run folder; default runs/<name>.")
    init_from: Path | None = Field(
        None,
        description="Start from these weights (a run folder or a .safetensors model file, e.g. written by diffformer "
        "import) instead of a random initialisation; the model section must describe the same model. Relative to "
        "the recipe.",
    )
    probe: ProbeSettings | None = Field(
        None, description="With variants: probe every variant with these settings after training, then compare."
    )
    focus: FocusSettings | None = Field(
        None, description="The focus task's objective (soft, hard, lvml, hybrid) and fixed-focus mode."
    )
    trackers: TrackerSettings | None = Field(
        None, description="Mirror the run's metrics into TensorBoard and/or Weights & Biases."
    )
    track: TrackSettings | None = Field(
        None, description="Measure attention on a fixed batch every track.every steps into RUN/dynamics.jsonl."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.data.max_length > self.model.max_seq_len:
            field = getattr(self.data, "length_fields", "data.seq_len")
            raise ValueError(
                f"{field} gives sequences of {self.data.max_length} tokens, "
                f"above model.max_seq_len ({self.model.max_seq_len})"
            )
        task_vocab = getattr(self.data, "task_vocab_size", None)
        if task_vocab is not None and self.model.vocab_size is not None and self.model.vocab_size < task_vocab:
            raise ValueError(
                f"model.vocab_size ({self.model.vocab_size}) is smaller than the {self.data.task} "
                f"task's {task_vocab} token ids"
            )
        experiment_for(self.data).check_recipe(self)
        if self.track is not None and self.track.ktiw and not self.data.marks_sources:
            raise ValueError(
                f"track.ktiw needs a task that marks each answer's source (copy, mqar, needle), not {self.data.task}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name

    def resolved_model(self, data_vocab_size: int) -> ModelConfig:
        """The model config with vocab_size taken from the data when the recipe leaves it out."""
        if self.model.vocab_size is None:
            return self.model.model_copy(update={"vocab_size": data_vocab_size})
        if self.model.vocab_size < data_vocab_size:
            raise RecipeError(
                f"model.vocab_size ({self.model.vocab_size}) is smaller than the tokenizer's {data_vocab_size} ids"
            )
        return self.model

    def stored(self) -> dict:
        """The recipe as a run folder records it: resolved, without extends or variants."""
        return self.model_dump(mode="json", exclude={"extends", "variants"})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.stored(), sort_keys=False)


def recipe_json_schema() -> dict:
    """JSON Schema of the recipe format, for editors' YAML validation."""
    return Recipe.model_json_schema()
