"""`diffformer train` as a library call: prepare a run folder, build or restore the model, run the loop.

    train(recipe, resume, listeners) -> TrainResult

Everything that can fail on bad input (the recipe, the data, the run folder's state)
fails before anything in the run folder is written. The loop itself is in trainer.py.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from diffformer.checkpoint import TrainingProgress, restore_training
from diffformer.data import prepare_data
from diffformer.devices import pick_device
from diffformer.errors import RecipeError
from diffformer.model.transformer import Transformer
from diffformer.recipe import Recipe
from diffformer.run_folder import RunFolder
from diffformer.training import distributed
from diffformer.training.listeners import MetricsFileWriter, TrainingListener, notify
from diffformer.training.optimizer import build_optimizer
from diffformer.training.trainer import Interrupted, Trainer, TrainResult

__all__ = ["Interrupted", "TrainResult", "train"]


def train(
    recipe: Recipe,
    resume: bool = False,
    listeners: Sequence[TrainingListener] = (),
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train `recipe` into its run folder (continuing from its last checkpoint with `resume`).

    `listeners` hear about progress on rank 0; the metrics file is always written.
    A finished run is not trained again: its result comes back with already_finished set.
    """
    info = distributed.process_info()
    device = pick_device(recipe.train.device, info.local_rank)
    distributed.start(info, device)
    try:
        return _train(recipe, resume, listeners, cache_dir, info, device)
    finally:
        distributed.stop(info)


def _train(recipe: Recipe, resume, listeners, cache_dir, info, device) -> TrainResult:
    folder = RunFolder(recipe.run_dir)
    _check_run_folder(recipe, folder, resume)
    if resume:
        finished = finished_result(folder, recipe)
        if finished is not None:
            return finished
    data = prepare_data(recipe.data, cache_dir)
    model_config = recipe.resolved_model(data.vocab_size)
    resolved = recipe.model_copy(update={"model": model_config, "output": folder.path})
    torch.manual_seed(recipe.seed)
    model = Transformer(model_config).to(device)
    optimizer = build_optimizer(model, recipe.train)
    if info.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.remove_interrupted_writes()
        folder.write_recipe(resolved.to_yaml())
        if getattr(data, "tokenizer", None) is not None:
            folder.write_tokenizer(data.tokenizer.to_str())
    distributed.barrier(info)
    progress, resumed_from = TrainingProgress(), None
    checkpoints = folder.complete_checkpoints() if resume else []
    if checkpoints:
        progress = restore_training(checkpoints[-1], model, optimizer)
        resumed_from = progress.step
        if info.is_main:
            folder.truncate_metrics(progress.step)
    elif info.is_main:
        folder.clear_metrics()
    everyone = [MetricsFileWriter(folder), *listeners]
    trainer = Trainer(recipe, resolved.stored(), data, model, optimizer, progress, device, info, everyone)
    notify(
        trainer.listeners,
        "on_start",
        recipe.name,
        progress.step,
        recipe.train.steps,
        str(checkpoints[-1]) if checkpoints else None,
    )
    try:
        result = trainer.run()
    finally:
        notify(trainer.listeners, "on_end")
    result.resumed_from = resumed_from
    if info.is_main:
        folder.write_summary(result.summary())
    return result


def finished_result(folder: RunFolder, recipe: Recipe) -> TrainResult | None:
    """The result of a run that already trained `recipe`'s steps, from its summary; None if it has not."""
    summary = folder.read_summary()
    if summary is None or not summary.get("finished") or summary.get("steps", 0) < recipe.train.steps:
        return None
    return TrainResult(
        folder.path,
        recipe.name,
        summary["steps"],
        summary["tokens_seen"],
        summary["parameters"],
        summary["wall_seconds"],
        summary["final_loss"],
        summary["steps"],
        summary["eval"],
        already_finished=True,
    )


def _check_run_folder(recipe: Recipe, folder: RunFolder, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one with a different model, data or seed."""
    if folder.is_occupied() and not resume:
        raise RecipeError(
            f"run folder {folder.path} already exists; add --resume to continue it, or choose another name or output"
        )
    previous = folder.read_recipe() if resume else None
    if previous is None:
        return
    current = recipe.stored()
    differing = [key for key in ("seed", "data") if previous.get(key) != current.get(key)]
    # vocab_size is filled in from the data when the recipe leaves it out, so it is not compared.
    previous_model = {k: v for k, v in (previous.get("model") or {}).items() if k != "vocab_size"}
    current_model = {k: v for k, v in current["model"].items() if k != "vocab_size"}
    if previous_model != current_model:
        differing.append("model")
    if differing:
        raise RecipeError(
            f"cannot resume {folder.path}: the recipe's {', '.join(differing)} differ from its "
            f"{folder.recipe_file.name}"
        )
