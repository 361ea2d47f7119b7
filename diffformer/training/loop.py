"""`diffformer train` as a library call: prepare a run folder, build or restore the model, run the loop.

    train(recipe, resume, listeners) -> TrainResult

Everything that can fail on bad input (the recipe, the data, the run folder's state)
fails before anything in the run folder is written. The loop itself is in trainer.py.
"""

import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from diffformer.checkpoint import TrainingProgress, restore_optimizer, restore_weights, start_from
from diffformer.data import prepare_data
from diffformer.devices import pick_device, resolve_precision
from diffformer.dynamics.figure import draw_dynamics
from diffformer.dynamics.records import read_dynamics
from diffformer.errors import RecipeError
from diffformer.experiments import experiment_for
from diffformer.model.effective import effective_settings
from diffformer.recipe import Recipe
from diffformer.recipe.fingerprint import EXTENDABLE, defining_settings, differences, fingerprint
from diffformer.run_folder import DYNAMICS_FIGURE, RunFolder
from diffformer.training import distributed
from diffformer.training.listeners import StepLogWriter, TrainingListener, notify
from diffformer.training.optimizer import build_optimizer
from diffformer.training.trackers import check_trackers_installed, tracker_listeners
from diffformer.training.trainer import Interrupted, Trainer, TrainResult

__all__ = ["Interrupted", "TrainResult", "check_run_folder", "finished_result", "train"]


def train(
    recipe: Recipe,
    resume: bool = False,
    listeners: Sequence[TrainingListener] = (),
    cache_dir: Path | None = None,
    retrain: bool = False,
) -> TrainResult:
    """Train `recipe` into its run folder (continuing from its last checkpoint with `resume`).

    `listeners` hear about progress on rank 0; the metrics file is always written.
    A finished run is not trained again: its result comes back with already_finished set.
    Resuming a run whose recorded settings differ from the recipe is refused, naming the
    differences (train.steps may grow); with `retrain` such a run is discarded and trained anew.
    """
    info = distributed.process_info()
    device = pick_device(recipe.train.device, info.local_rank)
    distributed.start(info, device)
    try:
        return _train(recipe, resume, retrain, listeners, cache_dir, info, device)
    finally:
        distributed.stop(info)


def _train(recipe: Recipe, resume, retrain, listeners, cache_dir, info, device) -> TrainResult:
    folder = RunFolder(recipe.run_dir)
    start_fresh = check_run_folder(recipe, folder, resume, retrain)
    if resume and not start_fresh:
        finished = finished_result(folder, recipe)
        if finished is not None:
            return finished
    check_trackers_installed(recipe.trackers, folder)
    data = prepare_data(recipe.data, cache_dir)
    model_config = recipe.resolved_model(data.vocab_size)
    precision = _decide_precision(recipe, folder, device, resuming=resume and not start_fresh)
    if (
        recipe.train.precision == "auto"
        and resume
        and not start_fresh
        and precision != resolve_precision("auto", device)
    ):
        notify(
            listeners,
            "on_note",
            f"resuming keeps train.precision={precision}, the precision {folder.path} was trained in "
            f"(auto would choose {resolve_precision('auto', device)} here); --retrain trains anew",
        )
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"precision": precision})})
    resolved = recipe.model_copy(update={"model": model_config, "output": folder.path})
    torch.manual_seed(recipe.seed)
    experiment = experiment_for(recipe.data)
    if info.distributed and not experiment.objective(recipe.focus).distributed:
        raise RecipeError(f"the {recipe.data.task} task trains in one process; run it without torchrun")
    model = experiment.build_model(model_config, resolved.stored()["data"]).to(device)
    model.activation_checkpointing = recipe.train.activation_checkpointing
    effective = effective_settings(model)  # before sharding: parameters counted whole
    parallel = distributed.Parallelism(recipe.train.parallel, info, device)
    with folder.lock() if info.is_main else nullcontext():
        # Checked again while holding the folder: another process may have written it meanwhile.
        start_fresh = check_run_folder(recipe, folder, resume, retrain)
        # Restored before anything is written, so a damaged checkpoint leaves the folder as it was.
        # Weights go into the whole model before it is sharded; the optimizer is built on the shards.
        checkpoints = folder.complete_checkpoints() if resume and not start_fresh else []
        if checkpoints:
            restore_weights(checkpoints[-1], model)
        elif recipe.init_from is not None:  # a fresh run from given weights (diffformer import); resumes ignore it
            start_from(recipe.init_from, model, model_config)
        parallel.shard(model)
        optimizer = build_optimizer(model, recipe.train)
        progress = TrainingProgress()
        if checkpoints:
            progress = restore_optimizer(checkpoints[-1], model, optimizer, parallel.load_optimizer_state)
        if info.is_main:
            _prepare_folder(folder, resolved, data, effective, start_fresh, progress.step)
        distributed.barrier(info)
        resumed_from = str(checkpoints[-1]) if checkpoints else None
        return _run(recipe, resolved, folder, data, model, optimizer, progress, resumed_from, listeners, parallel)


def _decide_precision(recipe: Recipe, folder: RunFolder, device, resuming: bool) -> str:
    """The recipe's precision; for `auto`, the one a resumed run was trained in, else the device's choice."""
    if recipe.train.precision == "auto" and resuming:
        recorded = (folder.read_manifest() or {}).get("settings", {})
        if isinstance(recorded, dict) and recorded.get("train.precision") in ("fp32", "bf16"):
            return recorded["train.precision"]
    return resolve_precision(recipe.train.precision, device)


def _prepare_folder(
    folder: RunFolder, resolved: Recipe, data, effective: dict, start_fresh: bool, resumed_step: int
) -> None:
    """Write the run's recipe, manifest, effective settings and tokenizer (after discarding an outdated run
    when asked); keep the metrics up to the resumed step."""
    if start_fresh and folder.is_run():
        folder.discard_results()
    folder.remove_interrupted_writes()
    if resumed_step:
        folder.truncate_logs(resumed_step)
    else:
        folder.clear_logs()
    settings = defining_settings(resolved.stored())
    manifest = folder.read_manifest() or {}
    history = manifest.get("history", [])
    changed = differences(manifest.get("settings", settings), settings)
    if changed:
        history.append({"resumed_at": time.strftime("%Y-%m-%d %H:%M:%S"), "changed": changed})
    folder.write_manifest(settings, fingerprint(settings), history)
    folder.write_recipe(resolved.to_yaml())
    folder.write_effective(effective)
    if getattr(data, "tokenizer", None) is not None:
        folder.write_tokenizer(data.tokenizer.to_str())


def _run(recipe, resolved, folder, data, model, optimizer, progress, resumed_from, listeners, parallel):
    everyone = [StepLogWriter(folder), *listeners]
    if parallel.info.is_main:
        everyone += tracker_listeners(recipe.trackers, folder, recipe.name, resolved.stored(), progress.step)
    trainer = Trainer(recipe, resolved.stored(), data, model, optimizer, progress, parallel, everyone)
    notify(trainer.listeners, "on_start", recipe.name, progress.step, recipe.train.steps, resumed_from)
    start_step = progress.step  # the trainer advances `progress` in place
    try:
        result = trainer.run()
    finally:
        notify(trainer.listeners, "on_end")
    result.resumed_from = start_step if resumed_from is not None else None
    if parallel.info.is_main:
        folder.write_summary(result.summary())
        if recipe.track is not None:
            draw_dynamics(read_dynamics(folder), recipe.name, folder.path / DYNAMICS_FIGURE)
    return result


def finished_result(folder: RunFolder, recipe: Recipe) -> TrainResult | None:
    """The result of a run that already trained `recipe`'s steps, from its summary; None if it has not."""
    summary = folder.read_summary()
    if summary is None or not summary.finished:
        return None
    if summary.steps < recipe.train.steps and summary.stopped_early_at is None:
        return None
    return TrainResult.already_trained(folder.path, summary)


def check_run_folder(recipe: Recipe, folder: RunFolder, resume: bool, retrain: bool) -> bool:
    """Whether to start from scratch; refuses what would overwrite or mix runs (nothing is written here).

    Refused: a folder holding files diffformer did not write; an existing run without
    --resume; resuming with other defining settings (unless `retrain`), or with fewer
    train.steps than the run's last checkpoint.
    """
    if not folder.is_occupied():
        return True
    foreign = folder.foreign_entries()
    if foreign or not folder.is_run():
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RecipeError(
            f"{folder.path} is not a diffformer run folder (it holds {shown or 'other files'}); "
            "choose another name or output"
        )
    if not resume and not retrain:
        raise RecipeError(
            f"run folder {folder.path} already exists; add --resume to continue it, or choose another name or output"
        )
    linked = folder.linked_entries()
    if linked:
        raise RecipeError(
            f"{linked[0]} is a symbolic link (to {linked[0].resolve()}); a run folder's files must be its own, "
            "or training would write through the link — copy the file in or train into a new folder"
        )
    manifest = folder.read_manifest()
    recorded = manifest["settings"] if manifest and isinstance(manifest.get("settings"), dict) else None
    if recorded is None:  # a run from before run.json: compare its recipe.yaml
        recorded = defining_settings(folder.read_recipe() or {})
    changed = differences(recorded, defining_settings(recipe.stored()), ignore=EXTENDABLE)
    if changed:
        if retrain:
            return True
        raise RecipeError(
            f"cannot resume {folder.path}: its settings differ from the recipe's ({'; '.join(changed)}); "
            "use another output, or --retrain to discard it and train anew"
        )
    checkpoints = folder.complete_checkpoints()
    last_step = int(checkpoints[-1].name.removeprefix("step-")) if checkpoints else 0
    if last_step > recipe.train.steps:
        raise RecipeError(
            f"train.steps ({recipe.train.steps}) is below the last checkpoint of {folder.path} (step {last_step}); "
            "a run can be continued, not shortened"
        )
    return False
