"""Safetensors checkpoints: weights with their recipe, and the optimizer state that resume needs. No pickle.

A checkpoint folder (RUN/checkpoints/step-N, see run_folder.py) holds the weights and
training_state.safetensors (AdamW moments keyed by parameter name, and the step). It is
complete before it is renamed into place, and RUN/model.safetensors is replaced only
after that, so a run killed at any moment leaves the previous checkpoint intact.
"""

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from diffformer import __version__
from diffformer.atomic import fsync_directory, fsync_file, replace_durably, temporary_path
from diffformer.errors import CheckpointError, RecipeError, WriteFailed, first_line
from diffformer.experiments import Experiment, experiment_for
from diffformer.model.config import ModelConfig
from diffformer.recipe.schema import Recipe
from diffformer.run_folder import MODEL_FILE, STATE_FILE, TOKENIZER_FILE, RunFolder, RunSummary, locate, unfinished_note

FORMAT = "diffformer"
FORMAT_VERSION = 1


@dataclass
class TrainingProgress:
    """Where training stands: everything besides weights and optimizer moments that resume needs."""

    step: int = 0
    tokens_seen: int = 0
    wall_seconds: float = 0.0


@dataclass
class LoadedModel:
    """A trained model with what its checkpoint says about it; `path` is the model file."""

    model: torch.nn.Module  # a Transformer, or the focus lab's FocusModel
    recipe: Recipe | None  # the validated recipe it trained with; None for a checkpoint that holds a model alone
    stored_recipe: dict  # that recipe as the checkpoint stores it (what settings are compared by)
    step: int
    tokens_seen: int
    path: Path
    folder: RunFolder

    @property
    def experiment(self) -> Experiment:
        """What kind of run this is (experiments.py): which commands read it, what it is scored on."""
        return experiment_for(None if self.recipe is None else self.recipe.data)

    def trained_recipe(self) -> Recipe:
        """The recipe, for the commands that need its data and settings (a model-only checkpoint has none)."""
        if self.recipe is None:
            raise CheckpointError(f"{self.path}: its recipe has no data section to evaluate or probe on")
        return self.recipe

    def data_config(self, overrides=()):
        """The run's `data:` section with `--set data.*` overrides, validated.

        A text run is read with exactly the tokenizer it was trained with (RUN/tokenizer.json),
        never one rebuilt from the recipe's tokenizer spec, so token ids mean what they meant.
        """
        from diffformer.recipe import data_with_overrides

        data = self.trained_recipe().data.model_dump(mode="json")
        if data["task"] == "text":
            if not self.folder.tokenizer_file.is_file():
                raise CheckpointError(f"{self.path}: a text model's run folder must hold {TOKENIZER_FILE}")
            data["tokenizer"] = {"kind": "file", "path": str(self.folder.tokenizer_file)}
        return data_with_overrides(data, overrides, str(self.path))

    @property
    def task(self) -> str | None:
        """The data task the run trained on (mqar, text, focus, …), None where the checkpoint does not say."""
        return None if self.recipe is None else self.recipe.data.task

    @property
    def summary(self) -> RunSummary | None:
        """The run's summary.json when these are its latest weights (an older checkpoint has none)."""
        return self.folder.read_summary() if self.is_latest else None

    @property
    def unfinished(self) -> str | None:
        """ "unfinished: step N of M" when these weights are from before the recipe's last step, else None."""
        if self.recipe is None:
            return None
        summary = self.folder.read_summary()
        stopped = summary.stopped_early_at if summary is not None and self.is_latest else None
        return unfinished_note(self.step, self.recipe.train.steps, stopped)

    @property
    def is_latest(self) -> bool:
        """These are the run's latest weights (RUN/model.safetensors), not an older checkpoint."""
        return self.path == self.folder.model_file

    @property
    def precision(self) -> str:
        """The precision the run trained in (its stored recipe holds the resolved choice), for eval and probes
        to compute as training did; fp32 for checkpoints that do not say."""
        recorded = None if self.recipe is None else self.recipe.train.precision
        return recorded if recorded in ("fp32", "bf16") else "fp32"

    def check_length(self, length: int) -> None:
        """Learned positions stop at max_seq_len; rotary and no positions extrapolate (perhaps badly)."""
        config = self.model.config
        if config.position == "learned" and length > config.max_seq_len:
            raise RecipeError(
                f"length {length} is beyond this model's learned positions (max_seq_len {config.max_seq_len})"
            )
        layout = getattr(self.model, "masked_keys", None)
        if layout is not None and length > layout.shape[0]:
            raise RecipeError(
                f"length {length} is beyond the {layout.shape[0]} positions of this run's attention layout "
                "(the task masks keys per position, docs/formulas.md §23)"
            )


def _model_metadata(recipe: dict, progress: TrainingProgress) -> dict[str, str]:
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "diffformer_version": __version__,
        "recipe": json.dumps(recipe),
        "step": str(progress.step),
        "tokens_seen": str(progress.tokens_seen),
    }


@contextmanager
def safetensors_writing(path: Path):
    """safetensors reports a failed write (a full disk, a vanished folder) as its own SafetensorError, not an
    OSError: turned here into one line naming the file, like every other failed write."""
    try:
        yield
    except SafetensorError as error:
        raise WriteFailed(f"could not write {path}: {first_line(error)}") from None


def _write_model(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    # save_model keeps one name for tied (shared) tensors; load_model restores the tie.
    with safetensors_writing(path):
        save_model(model, str(path), metadata=metadata)
    fsync_file(path)


def save_model_weights(model: torch.nn.Module, path: Path, stored_recipe: dict) -> None:
    """A model file outside a run (its recipe may hold a model section alone), at step 0: what `diffformer
    import` writes and a recipe's `init_from` reads."""
    _write_model(model, path, _model_metadata(stored_recipe, TrainingProgress()))


def start_from(source: Path, model: torch.nn.Module, config: ModelConfig) -> None:
    """Load the weights a recipe's `init_from` names (a run folder or a .safetensors model file) into `model`,
    built from the recipe's model section, which must describe the same model (docs/formulas.md §27)."""
    from diffformer.recipe.fingerprint import differences, flatten

    _, file = locate(source)
    info = read_checkpoint_info(file)
    stored, wanted = (flatten(c.resolved().model_dump(mode="json")) for c in (info.model_config, config))
    changed = differences(stored, wanted)
    if changed:
        raise RecipeError(
            f"init_from {file}: its model differs from the recipe's model section ({changed[0]}"
            f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); copy its model section"
        )
    load_model(model, str(file), strict=True, device=str(next(model.parameters()).device))


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer_state: dict,
    recipe: dict,
    progress: TrainingProgress,
    keep: int,
) -> Path:
    """Write checkpoints/step-N atomically, point RUN/model.safetensors at its weights, prune old ones.

    `model` holds the full weights; `optimizer_state` is keyed by parameter name (named_optimizer_state).
    """
    run = RunFolder(run_dir)
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = run.checkpoint_dir(progress.step)
    temporary = temporary_path(final)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    metadata = _model_metadata(recipe, progress)
    _write_model(model, temporary / MODEL_FILE, metadata)
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, moments in optimizer_state["state"].items()
        for key, value in moments.items()
    }
    optimizer_meta = json.loads(json.dumps(optimizer_state["param_groups"], default=list))
    state_metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "optimizer": json.dumps(optimizer_meta),
        "step": str(progress.step),
        "tokens_seen": str(progress.tokens_seen),
        "wall_seconds": repr(progress.wall_seconds),
    }
    with safetensors_writing(temporary / STATE_FILE):
        save_file(tensors, str(temporary / STATE_FILE), metadata=state_metadata)
    fsync_file(temporary / STATE_FILE)
    fsync_directory(temporary)
    if final.exists():
        shutil.rmtree(final)
    replace_durably(temporary, final)
    root_temporary = temporary_path(run.model_file)
    shutil.copyfile(final / MODEL_FILE, root_temporary)
    fsync_file(root_temporary)
    replace_durably(root_temporary, run.model_file)
    for old in run.complete_checkpoints()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by parameter name, robust to parameter order:
    {"state": {name: {moment: tensor}}, "param_groups": [{settings, "params": [names]}]} — the
    layout of torch.distributed.checkpoint's full optimizer state dict, so FSDP's gathered state
    is written the same way."""
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [
        {**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]}
        for group in optimizer.param_groups
    ]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {names[id(p)]: dict(optimizer.state[p]) for p in params if p in optimizer.state}
    return {"state": state, "param_groups": groups}


def load_named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, named: dict) -> None:
    """The inverse of named_optimizer_state for a model whose parameters are whole (one process or DDP)."""
    index = {name: i for i, name in enumerate(n for g in named["param_groups"] for n in g["params"])}
    state = {index[name]: moments for name, moments in named["state"].items()}  # load_state_dict moves them
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in named["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def restore_weights(checkpoint: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint folder's weights into a whole (unsharded) `model`, validating them first."""
    read_checkpoint_info(checkpoint / MODEL_FILE)
    load_model(model, str(checkpoint / MODEL_FILE), strict=True, device=str(next(model.parameters()).device))


def restore_optimizer(checkpoint: Path, model, optimizer, load=load_named_optimizer_state) -> TrainingProgress:
    """Load a checkpoint folder's optimizer state with `load(model, optimizer, named_state)`; returns its progress."""
    path = checkpoint / STATE_FILE
    try:
        metadata = _read_metadata(path)
        named: dict = {"state": {}, "param_groups": json.loads(metadata["optimizer"])}
        for key, value in load_file(str(path)).items():
            name, _, moment = key.rpartition(".")
            named["state"].setdefault(name, {})[moment] = value
        load(model, optimizer, named)
        return TrainingProgress(int(metadata["step"]), int(metadata["tokens_seen"]), float(metadata["wall_seconds"]))
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise CheckpointError(
            f"{path} is malformed or does not belong to this model; "
            "resume from an earlier checkpoint by removing this one"
        ) from None


def restore_training(checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainingProgress:
    """Load weights and optimizer state from a checkpoint folder into a whole `model` and its `optimizer`."""
    restore_weights(checkpoint, model)
    return restore_optimizer(checkpoint, model, optimizer)


@dataclass
class CheckpointInfo:
    """A model file's validated metadata."""

    stored_recipe: dict
    recipe: Recipe | None  # None: the checkpoint stores a model section alone (saved from the library)
    model_config: ModelConfig
    step: int
    tokens_seen: int


def _read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a diffformer safetensors file (weights or training state), its format checked."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), "pt") as file:  # refuses a file shorter than its header says
            metadata = file.metadata() or {}
    except Exception:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a diffformer checkpoint")
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has a malformed format_version") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this diffformer "
            f"({__version__}) reads up to {FORMAT_VERSION} — upgrade diffformer"
        )
    return metadata


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    """Validate a model file's metadata and its tensors' shapes against the model it describes.

    Nothing is allocated: the expected shapes come from a model built on the meta device, so
    tampered metadata (a huge d_model, shapes that disagree with the tensors) is refused cheaply.
    """
    metadata = _read_metadata(path)
    if "optimizer" in metadata and "recipe" not in metadata:
        raise CheckpointError(
            f"{path} is a training state (optimizer moments), not model weights; "
            f"give the run folder or the {MODEL_FILE} beside it"
        )
    try:
        stored_recipe = json.loads(metadata["recipe"])
        step, tokens_seen = int(metadata["step"]), int(metadata["tokens_seen"])
        model_config = ModelConfig.model_validate(stored_recipe["model"])
        data = stored_recipe.get("data") or {}  # library checkpoints may carry no data section (a transformer)
        if step < 0 or tokens_seen < 0 or not isinstance(data, dict):
            raise ValueError
        recipe = Recipe.model_validate(stored_recipe) if data else None
        with torch.device("meta"):
            described = experiment_for(data).build_model(model_config, data)
    except (KeyError, TypeError, ValueError, AttributeError):  # pydantic's ValidationError is a ValueError
        raise CheckpointError(f"checkpoint {path} has missing or malformed metadata (recipe, step, tokens)") from None
    expected = {name: tuple(t.shape) for name, t in described.state_dict().items()}
    with safe_open(str(path), "pt") as file:
        stored = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    # save_model keeps one of the two names of a tied embedding.
    tied = {"lm_head.weight", "embed.weight"} if model_config.tie_embeddings else set()
    mismatched = [name for name in expected if name not in tied and name in stored and stored[name] != expected[name]]
    missing = [name for name in expected if name not in stored and name not in tied]
    if tied and not tied & set(stored):
        missing.append("embed.weight")
    if mismatched or missing or set(stored) - set(expected):
        problem = (
            f"{mismatched[0]} has shape {list(stored[mismatched[0]])}, the recipe says {list(expected[mismatched[0]])}"
            if mismatched
            else "its tensors do not match the model its recipe describes"
        )
        raise CheckpointError(f"checkpoint {path}: {problem}")
    return CheckpointInfo(stored_recipe, recipe, model_config, step, tokens_seen)


def load_trained_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model from a run folder or a .safetensors checkpoint, validating what it is."""
    folder, file = locate(path)
    info = read_checkpoint_info(file)
    data = info.stored_recipe.get("data") or {}
    model = experiment_for(data).build_model(info.model_config, data)
    load_model(model, str(file), strict=True, device=str(device))
    if hasattr(model, "at_step"):  # a kind's schedule (λ warm-up) as it stood at this checkpoint
        model.at_step(info.step)
    return LoadedModel(model.to(device), info.recipe, info.stored_recipe, info.step, info.tokens_seen, file, folder)
