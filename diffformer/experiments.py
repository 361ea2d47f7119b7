"""What kind of experiment a run is — the one place that says which model a recipe builds, what that model
is trained and scored on, and which commands can read it.

- a language model (every data task but `focus`): the decoder-only Transformer, next-token prediction,
  held-out loss / accuracy / exact match; every command reads it;
- the focus lab (`data.task: focus`, docs/formulas.md §14): a focus model and classifier trained with the
  `focus:` section's objective; it generates no text and has no attention layers to probe, so `sample`,
  `attention`, `export` and `probe` refuse it in one line.

Everything else asks `experiment_for(data)` rather than testing the task's name.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diffformer.data import masked_keys_of
from diffformer.errors import RecipeError
from diffformer.focus.measures import FocusObjective
from diffformer.focus.objectives import FocusSettings
from diffformer.model.attention.registry import kind_entry, kinds_with
from diffformer.model.config import ModelConfig
from diffformer.model.focus import FocusModel
from diffformer.model.transformer import Transformer
from diffformer.training.objective import LanguageModelling

FOCUS_TASK = "focus"


@dataclass(frozen=True)
class Experiment:
    name: str
    refusals: dict[str, str] = field(default_factory=dict)  # command -> why a run of this experiment can't

    def build_model(self, config: ModelConfig, data: dict) -> nn.Module:
        """`data`: the recipe's data section as stored (every field present)."""
        raise NotImplementedError

    def objective(self, focus: FocusSettings | dict | None):
        """What the trainer optimises and `eval` reports (training/objective.py's interface)."""
        raise NotImplementedError

    def check_recipe(self, recipe) -> None:
        """Raise ValueError where a recipe's sections (a Recipe being validated) do not fit this experiment."""

    def refuse(self, command: str, run: Path | str) -> None:
        """A one-line error when `command` cannot read a run of this experiment."""
        if command in self.refusals:
            raise RecipeError(f"{run} is {self.name} run: {self.refusals[command]}")


class LanguageModelExperiment(Experiment):
    def build_model(self, config, data):
        model = Transformer(config)
        masked = masked_keys_of(data)
        if masked is not None:
            model.mask_keys(torch.from_numpy(masked))
        return model

    def objective(self, focus):
        return LanguageModelling()

    def check_recipe(self, recipe):
        if recipe.focus is not None:
            raise ValueError(f"a focus: section needs data.task {FOCUS_TASK} (got {recipe.data.task})")


class FocusLabExperiment(Experiment):
    def build_model(self, config, data):
        return FocusModel(config, data["classes"], data["segments"], data["segment_length"])

    def objective(self, focus):
        return FocusObjective(focus if isinstance(focus, FocusSettings) else FocusSettings.model_validate(focus or {}))

    def check_recipe(self, recipe):
        kind = recipe.model.attention.kind
        if kind_entry(kind).focus_scorer is None:
            scored = ", ".join(kinds_with(lambda entry: entry.focus_scorer is not None))
            raise ValueError(f"the focus task scores segments with {scored} attention, not {kind}")


LANGUAGE_MODEL = LanguageModelExperiment("a language-model")
FOCUS_LAB = FocusLabExperiment(
    "a focus-lab",
    {
        "sample": "it classifies segments and generates nothing",
        "attention": "it has one focus map per example, no attention layers to draw; diffformer dynamics shows it",
        "export": "it classifies segments, and only language models export",
        "probe": "it is measured while training (RUN/dynamics.jsonl, diffformer dynamics) and by diffformer "
        "eval; the probes read language models",
        "quantize": "low-bit evaluation reads language models",
        "patch": "it has no transformer blocks to patch; activation patching reads language models",
    },
)


def experiment_for(data) -> Experiment:
    """The experiment of a recipe's data section (a validated DataConfig, or as stored; None: a language model)."""
    task = data.get("task") if isinstance(data, dict) else getattr(data, "task", None)
    return FOCUS_LAB if task == FOCUS_TASK else LANGUAGE_MODEL
