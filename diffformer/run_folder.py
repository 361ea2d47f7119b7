"""The run folder: one home for its layout and for reading and writing its plain files.

    RUN/recipe.yaml                  the resolved recipe
    RUN/model.safetensors            latest weights (metadata: format, version, recipe, step, tokens)
    RUN/tokenizer.json               text runs
    RUN/metrics.jsonl                one JSON object per logged step
    RUN/summary.json                 written when training finishes
    RUN/checkpoints/step-00000400/   model.safetensors + training_state.safetensors
    RUN/probes/                      probe.json and pictures of the last `diffformer probe`

Safetensors files are read and written by `checkpoint.py`; everything else about the
folder (names, "is it finished?", tolerant readers of the JSON files) lives here, so
no other module spells a file name.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from diffformer.atomic import TEMPORARY_PREFIX, atomic_write
from diffformer.errors import CheckpointError

RECIPE_FILE = "recipe.yaml"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS = "checkpoints"
PROBES = "probes"
PROBE_FILE = "probe.json"


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
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:08d}"

    def is_occupied(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

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
        """Delete what a killed write left behind (temporary files and folders)."""
        for folder in (self.path, self.checkpoints_dir):
            if folder.is_dir():
                for leftover in folder.glob(f"{TEMPORARY_PREFIX}*"):
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

    def write_tokenizer(self, text: str) -> None:
        atomic_write(self.tokenizer_file, text)

    # metrics.jsonl

    def read_metrics(self) -> list[dict]:
        """Every logged record; a torn last line (a write cut short by a crash or a full disk) is skipped."""
        if not self.metrics_file.is_file():
            return []
        return read_json_lines(self.metrics_file)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a") as metrics:
            metrics.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Keep the records up to `step` (the checkpoint being resumed), so the curve is not duplicated."""
        if self.metrics_file.is_file():
            kept = [record for record in self.read_metrics() if record.get("step", 0) <= step]
            atomic_write(self.metrics_file, "".join(json.dumps(record) + "\n" for record in kept))

    def clear_metrics(self) -> None:
        self.metrics_file.unlink(missing_ok=True)

    # summary.json

    def read_summary(self) -> dict | None:
        """The summary of a finished run, or None while it is not finished."""
        if not self.summary_file.is_file():
            return None
        return read_json(self.summary_file)

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.summary_file, json.dumps(summary, indent=2) + "\n")


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
