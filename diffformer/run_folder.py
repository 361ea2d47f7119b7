"""The run folder: one home for its layout and for reading and writing its plain files.

    RUN/run.json                     marks a run folder: its defining settings and their fingerprint
    RUN/.lock                        held (flock) by the process training into the folder
    RUN/recipe.yaml                  the resolved recipe
    RUN/effective.json               what the recipe does not name but the model derives (model/effective.py)
    RUN/model.safetensors            latest weights (metadata: format, version, recipe, step, tokens)
    RUN/tokenizer.json               text runs
    RUN/metrics.jsonl                one JSON object per logged step
    RUN/summary.json                 written when training finishes
    RUN/checkpoints/step-00000400/   model.safetensors + training_state.safetensors
    RUN/probes/                      probe.json and pictures of the last `diffformer probe`

Safetensors files are read and written by `checkpoint.py`; everything else about the
folder (names, ownership, tolerant readers of the JSON files) lives here, so no other
module spells a file name. diffformer deletes or replaces only files it writes itself,
by these names; a folder holding anything else is not a run and is refused.
"""

import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from diffformer.atomic import TEMPORARY_PREFIX, atomic_write
from diffformer.errors import CheckpointError, DiffformerError
from diffformer.strict_json import from_json

MANIFEST_FILE = "run.json"
LOCK_FILE = ".lock"
RECIPE_FILE = "recipe.yaml"
EFFECTIVE_FILE = "effective.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
DYNAMICS_FILE = "dynamics.jsonl"
STEP_LOGS = (METRICS_FILE, DYNAMICS_FILE)  # JSON lines, one record per line, each with its step
DYNAMICS_FIGURE = "dynamics.png"
SUMMARY_FILE = "summary.json"
CHECKPOINTS = "checkpoints"
PROBES = "probes"
ATTENTION_PICTURES = "attention"  # diffformer attention's default output
TENSORBOARD, WANDB = "tensorboard", "wandb"  # trackers: TensorBoard's event files, W&B's local files
PROBE_FILE = "probe.json"
RUN_FORMAT = "diffformer-run"
# Everything a run writes at its top level; only these are ever replaced or removed.
TRAINING_OUTPUTS = (*STEP_LOGS, DYNAMICS_FIGURE, SUMMARY_FILE)  # besides weights and checkpoints
RUN_FILES = (MANIFEST_FILE, LOCK_FILE, RECIPE_FILE, EFFECTIVE_FILE, MODEL_FILE, TOKENIZER_FILE, *TRAINING_OUTPUTS)
RUN_FOLDERS = (CHECKPOINTS, PROBES, ATTENTION_PICTURES, TENSORBOARD, WANDB)
CHECKPOINT_NAME = re.compile(r"step-\d{8}")


@dataclass
class RunSummary:
    """RUN/summary.json: what a finished run achieved (written by training, read back by field)."""

    name: str
    steps: int
    tokens_seen: int
    parameters: int
    wall_seconds: float
    final_loss: float | None
    eval: dict[str, float] = field(default_factory=dict)  # held-out metrics at the last step, with _se etc.
    throughput: dict = field(default_factory=dict)  # tokens/s, MFU and the peak FLOP/s they were measured against
    stopped_early_at: int | None = None  # train.early_stop: the step whose evaluation met the threshold
    finished: bool = True
    machine: str = ""  # what trained it (devices.machine_description): timings depend on it


@dataclass(frozen=True)
class RunFolder:
    """A run's folder; every path inside it is a property here."""

    path: Path

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:08d}"

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST_FILE

    def is_occupied(self) -> bool:
        """Holds anything at all (a lock file left by a run that wrote nothing else does not count)."""
        return self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir())

    def is_run(self) -> bool:
        """A folder diffformer trained into (run.json; or recipe.yaml, for runs from before run.json)."""
        return self.manifest_file.is_file() or self.recipe_file.is_file()

    def foreign_entries(self) -> list[str]:
        """Names in the folder that diffformer did not write (temporaries of its own writes excepted)."""
        if not self.path.is_dir():
            return []
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in RUN_FILES + RUN_FOLDERS and not _is_own_temporary(p.name, RUN_FILES)
        )

    def linked_entries(self) -> list[Path]:
        """Symbolic links among the files training writes or appends to (the run's own files and folders, one
        level down): writing a run must never write through one into a file elsewhere."""
        if not self.path.is_dir():
            return []
        candidates = [self.path / name for name in RUN_FILES + RUN_FOLDERS]
        candidates += [p for name in RUN_FOLDERS if (self.path / name).is_dir() for p in (self.path / name).iterdir()]
        return sorted(p for p in candidates if p.is_symlink())

    @contextmanager
    def lock(self):
        """Own the folder for the duration: an advisory lock that dies with its process (no stale locks).

        A second process gets a RunFolderBusy error naming the holder.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunFolderBusy(f"run folder {self.path} is in use by {holder}; wait for it to finish") from None
            handle.seek(0)
            handle.truncate()
            command = " ".join(["diffformer", *sys.argv[1:]])[:200]
            handle.write(
                f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} ({command})"
            )
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    def discard_results(self) -> None:
        """Remove what diffformer wrote here (to train again from scratch); anything else stays."""
        for name in RUN_FILES:
            if name != LOCK_FILE:
                (self.path / name).unlink(missing_ok=True)
        if self.checkpoints_dir.is_dir():
            for checkpoint in self.checkpoints_dir.iterdir():
                if CHECKPOINT_NAME.fullmatch(checkpoint.name):
                    shutil.rmtree(checkpoint)
        self.remove_interrupted_writes()

    # run.json

    def read_manifest(self) -> dict | None:
        return read_json(self.manifest_file) if self.manifest_file.is_file() else None

    def write_manifest(self, settings: dict, fingerprint: str, history: list | None = None) -> None:
        manifest = {"format": RUN_FORMAT, "fingerprint": fingerprint, "settings": settings, "history": history or []}
        atomic_write(self.manifest_file, json.dumps(manifest, indent=2, default=str) + "\n")

    def complete_checkpoints(self) -> list[Path]:
        """Finished checkpoint folders, oldest first (temporary leftovers are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [
            p
            for p in self.checkpoints_dir.iterdir()
            if p.is_dir() and p.name.startswith("step-") and (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file()
        ]
        return sorted(found, key=lambda p: p.name)

    def remove_interrupted_writes(self) -> None:
        """Delete what a killed write of ours left behind: `.tmp-<one of our names>.<pid>`, nothing else."""
        for folder, names in ((self.path, RUN_FILES), (self.checkpoints_dir, None)):
            if not folder.is_dir():
                continue
            for leftover in folder.iterdir():
                if _is_own_temporary(leftover.name, names):
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)

    # recipe.yaml

    def read_recipe(self) -> dict | None:
        if not self.recipe_file.is_file():
            return None
        try:
            recipe = yaml.safe_load(self.recipe_file.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            raise CheckpointError(f"{self.recipe_file} is not a readable YAML recipe") from None
        if not isinstance(recipe, dict):
            raise CheckpointError(f"{self.recipe_file} is not a recipe (expected a mapping of sections)")
        return recipe

    def write_recipe(self, text: str) -> None:
        atomic_write(self.recipe_file, text)

    def write_effective(self, settings: dict) -> None:
        atomic_write(self.path / EFFECTIVE_FILE, json.dumps(settings, indent=2) + "\n")

    def write_tokenizer(self, text: str) -> None:
        atomic_write(self.tokenizer_file, text)

    # metrics.jsonl and dynamics.jsonl

    def read_log(self, name: str = METRICS_FILE) -> list[dict]:
        """Every record of a step log; a torn last line (a write cut short by a crash or a full disk) is skipped."""
        path = self.path / name
        return read_json_lines(path) if path.is_file() else []

    def append_log(self, record: dict, name: str = METRICS_FILE) -> None:
        with open(self.path / name, "a") as log:
            log.write(json.dumps(record) + "\n")

    def truncate_logs(self, step: int) -> None:
        """Keep the records up to `step` (the checkpoint being resumed) in every step log, so no curve is duplicated."""
        for name in STEP_LOGS:
            if (self.path / name).is_file():
                kept = [record for record in self.read_log(name) if record.get("step", 0) <= step]
                atomic_write(self.path / name, "".join(json.dumps(record) + "\n" for record in kept))

    def clear_logs(self) -> None:
        for name in STEP_LOGS:
            (self.path / name).unlink(missing_ok=True)

    # summary.json

    def read_summary(self) -> RunSummary | None:
        """The summary of a finished run, or None while it is not finished."""
        if not self.summary_file.is_file():
            return None
        try:
            return from_json(RunSummary, read_json(self.summary_file))
        except (TypeError, ValueError):
            raise CheckpointError(f"{self.summary_file} is not a run summary this diffformer reads") from None

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write(self.summary_file, json.dumps(asdict(summary), indent=2) + "\n")


def unfinished_note(step: int, planned: int | None, stopped_early_at: int | None = None) -> str | None:
    """ "unfinished: step N of M" when weights come from before the recipe's last step (a run that met
    train.early_stop is finished), else None: what eval, probe, compare and the model card say they rest on."""
    if planned is None or step >= planned or stopped_early_at is not None:
        return None
    return f"unfinished: step {step:,} of {planned:,}"


class RunFolderBusy(DiffformerError):
    """Another process is training into this run folder."""


def _is_own_temporary(name: str, names: tuple[str, ...] | None) -> bool:
    """A temporary of atomic_write for one of `names` (None: a checkpoint folder), e.g. .tmp-summary.json.1234."""
    match = re.fullmatch(rf"{re.escape(TEMPORARY_PREFIX)}(.+)\.\d+", name)
    if match is None:
        return False
    return CHECKPOINT_NAME.fullmatch(match.group(1)) is not None if names is None else match.group(1) in names


def probes_dir_for(model_file: Path) -> Path:
    """Where probes of a model file go: RUN/probes for a run's latest weights, beside any other checkpoint."""
    return Path(model_file).parent / PROBES


def read_probe(model_file: Path) -> dict | None:
    path = probes_dir_for(model_file) / PROBE_FILE
    return read_json(path) if path.is_file() else None


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON (was it edited or cut short?)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} should hold a JSON object")
    return value


def read_json_lines(path: Path) -> list[dict]:
    """One JSON object per line; the last line may be torn (skipped), any other bad line is an error."""
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn by a crash mid-write; the data before it is intact
            raise CheckpointError(f"{path}, line {number}: not a JSON record (was the file edited?)") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}, line {number}: expected a JSON object")
        records.append(record)
    return records


def locate(path: Path | str) -> tuple[RunFolder, Path]:
    """(the run folder, its model file) for a run folder or a .safetensors file inside one.

    A checkpoint's model file (RUN/checkpoints/step-N/model.safetensors) belongs to RUN.
    """
    path = Path(path)
    if path.is_dir():
        folder = RunFolder(path)
        if not folder.model_file.is_file():
            raise CheckpointError(f"run folder {path} has no {MODEL_FILE} (has training written a checkpoint yet?)")
        return folder, folder.model_file
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (expected a run folder or a .safetensors file)")
    parent = path.parent
    if parent.parent.name == CHECKPOINTS:
        return RunFolder(parent.parent.parent), path
    return RunFolder(parent), path
