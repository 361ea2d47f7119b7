"""`diffformer eval`: held-out metrics of a run folder or checkpoint, on its own data or on other data."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diffformer.checkpoint import load_trained_model
from diffformer.data import prepare_data
from diffformer.devices import resolve_device
from diffformer.errors import RecipeError


@dataclass
class EvalReport:
    checkpoint: str
    step: int
    task: str
    seq_len: int
    split: str
    metrics: dict[str, float]


def evaluate_checkpoint(
    path: Path | str,
    overrides: Sequence[str] = (),
    batches: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    split: str = "val",
    device: str = "auto",
    cache_dir: Path | None = None,
    on_batch=None,
) -> EvalReport:
    """Held-out metrics of a run folder or checkpoint, on its own data or on `--set data.*` overrides.

    Defaults (batches, batch size, seed) are the run's own eval settings.
    """
    if split not in ("val", "train"):
        raise RecipeError(f"--split must be val or train (got {split!r})")
    device = resolve_device(device)
    loaded = load_trained_model(path, device)
    recipe = loaded.trained_recipe()
    data_config = loaded.data_config(overrides)
    loaded.check_length(data_config.max_length)
    data = prepare_data(data_config, cache_dir)
    if data.vocab_size > loaded.model.config.vocab_size:
        raise RecipeError(
            f"the data uses {data.vocab_size} token ids but the model knows {loaded.model.config.vocab_size}"
        )
    metrics = loaded.experiment.objective(recipe.focus).evaluate(
        loaded.model,
        data,
        recipe.seed if seed is None else seed,
        batches or recipe.eval.batches,
        batch_size or recipe.eval.batch_size or recipe.train.batch_size,
        device,
        loaded.precision,
        split=split,
        on_batch=on_batch,
    )
    return EvalReport(str(loaded.path), loaded.step, data_config.task, data_config.max_length, split, metrics)
