"""What a comparison reads of each run: its recipe, budget, summary, metrics curve and probe results."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from diffformer.checkpoint import load_trained_model
from diffformer.dynamics.records import DynamicsRecord, read_dynamics
from diffformer.errors import CheckpointError, DiffformerError
from diffformer.model.effective import effective_settings
from diffformer.probes.results import ProbeReport
from diffformer.recipe import Recipe
from diffformer.run_folder import MODEL_FILE, read_probe, unfinished_note


@dataclass
class RunRecord:
    path: Path
    recipe: Recipe
    step: int
    tokens_seen: int
    parameters: int
    wall_seconds: float | None
    final_loss: float | None
    eval: dict
    curve: list[dict]
    probe: ProbeReport | None
    model_file: Path | None = None  # the checkpoint file read (tells two spellings of one run apart)
    dynamics: list[DynamicsRecord] = field(default_factory=list)  # RUN/dynamics.jsonl up to the checkpoint's step
    stopped_early_at: int | None = None  # train.early_stop met at this step (steps to learn)
    folder_name: str | None = None  # the run folder's name, which names its column
    effective: dict = field(default_factory=dict)  # what the recipe does not name (model/effective.py)
    machine: str | None = None  # what trained it, from its summary

    @cached_property
    def settings(self) -> dict:
        """The recipe as plain data (resolved, as a run folder stores it): what comparisons tell runs apart by."""
        return self.recipe.stored()

    @property
    def unfinished(self) -> str | None:
        """ "unfinished: step N of M" when the weights read are from before the recipe's last step."""
        return unfinished_note(self.step, self.recipe.train.steps, self.stopped_early_at)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def stops_early(self) -> bool:
        """Trained with train.early_stop, so stopped_early_at says whether and when it learned."""
        return self.recipe.train.early_stop is not None

    @property
    def finished(self) -> bool:
        """Trained to its recipe's train.steps, or stopped early at its threshold (a summary exists only then)."""
        if self.final_loss is None:
            return False
        return self.stopped_early_at is not None or self.step >= self.recipe.train.steps


def load_run(path: Path | str) -> RunRecord:
    """What a run (folder or checkpoint file) achieved: its checkpoint, summary, metrics and last probe.

    The summary and the curve belong to the run's latest weights; an older checkpoint gets
    the curve up to its own step and no summary.
    """
    loaded = load_trained_model(path)
    folder, summary = loaded.folder, loaded.summary
    curve = [record for record in folder.read_log() if record.get("step", 0) <= loaded.step]
    return RunRecord(
        path=Path(path),
        recipe=loaded.trained_recipe(),
        step=loaded.step,
        tokens_seen=loaded.tokens_seen,
        parameters=loaded.model.num_parameters(),
        wall_seconds=None if summary is None else summary.wall_seconds,
        final_loss=None if summary is None else summary.final_loss,
        eval={} if summary is None else summary.eval,
        curve=curve,
        probe=_probe_report(loaded.path),
        model_file=loaded.path,
        stopped_early_at=None if summary is None else summary.stopped_early_at,
        folder_name=folder.path.name,
        effective=effective_settings(loaded.model),
        machine=None if summary is None else summary.machine or None,
        dynamics=read_dynamics(folder, up_to_step=loaded.step),
    )


def _is_comparison_output(path: Path) -> bool:
    return path.is_dir() and (path / "comparison.json").is_file() and not (path / MODEL_FILE).exists()


def _probe_report(model_file: Path) -> ProbeReport | None:
    data = read_probe(model_file)
    return None if data is None else ProbeReport.from_dict(data, source=f"the probe results of {model_file}")


def load_runs(paths: Sequence[Path | str]) -> list[RunRecord]:
    """The runs to compare: at least two, each readable. A comparison's own output folder (a sweep's
    `comparison/`, which `runs/sweep/*` picks up) is passed over; any other path that is not a run is an error."""
    paths = [path for path in paths if not _is_comparison_output(Path(path))]
    if len(paths) < 2:
        raise DiffformerError("compare needs at least two runs, e.g. diffformer compare runs/a runs/b")
    records, seen = [], {}
    for path in paths:
        try:
            record = load_run(path)
        except CheckpointError as error:
            raise CheckpointError(f"cannot compare {path}: {error}") from None
        model_file = record.model_file.resolve()
        if model_file in seen:
            raise DiffformerError(f"{path} and {seen[model_file]} are the same run; give each run once")
        seen[model_file] = path
        records.append(record)
    return records
