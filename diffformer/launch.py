"""What `diffformer train PATH` runs: a recipe file, a run folder to resume, or a recipe's variants grid.

    train_from_path(path, overrides, only, resume, listeners, sweep_listener) -> TrainOutcome

A variants recipe trains every combination into <output>/<key=value+...> (finished ones
come back as they are, interrupted ones resume) and ends with their comparison.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diffformer.comparison import Comparison, compare_runs
from diffformer.errors import RecipeError
from diffformer.recipe import expand_variants, load_recipe
from diffformer.run_folder import RunFolder
from diffformer.training.listeners import TrainingListener
from diffformer.training.loop import TrainResult, check_run_folder, train

COMPARISON_FOLDER = "comparison"  # <sweep output>/comparison: the sweep's report and figures


class SweepListener:
    """Hooks of a variants sweep; override the ones you need."""

    def on_plan(self, source: Path, count: int) -> None:
        """`count` variants of the recipe `source` are about to run."""

    def on_variant_start(self, label: str, run_dir: Path, resuming: bool) -> None:
        """A variant starts (or resumes) training."""

    def on_variant_end(self, label: str, result: TrainResult) -> None:
        """A variant finished; result.already_finished says it had nothing left to train."""

    def on_probe(self, label: str, run_dir: Path, reused: bool) -> None:
        """A variant is probed with the recipe's `probe:` settings (reused: its probe.json already matched)."""


@dataclass
class VariantRun:
    label: str
    assignment: dict
    result: TrainResult


@dataclass
class TrainOutcome:
    """A single run's result, or every variant's and their comparison."""

    result: TrainResult | None = None
    variants: list[VariantRun] = field(default_factory=list)
    comparison: Comparison | None = None
    files: list[Path] = field(default_factory=list)
    submitted: int = 0  # variants handed to a cluster without waiting for them


def train_from_path(
    path: Path,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    resume: bool = False,
    listeners: Sequence[TrainingListener] = (),
    sweep_listener: SweepListener | None = None,
    retrain: bool = False,
    jobs: int = 1,
    launcher: str = "processes",
    cluster_options: Sequence[str] = (),
    wait: bool = True,
) -> TrainOutcome:
    """Train what `path` names: a run folder resumes with its own recipe.yaml; a recipe trains (or sweeps).

    retrain: runs whose recorded settings differ from the recipe are trained anew instead of refused.
    """
    path = Path(path)
    if path.is_dir():
        folder = RunFolder(path)
        if not folder.recipe_file.is_file():
            raise RecipeError(f"{path} is a folder but not a run folder (it has no {folder.recipe_file.name})")
        recipe = load_recipe(folder.recipe_file, overrides).model_copy(update={"output": path})
        resume = True
    else:
        recipe = load_recipe(path, overrides)
        if recipe.variants:
            return train_variants(
                path, overrides, only, listeners, sweep_listener, retrain, jobs, launcher, cluster_options, wait
            )
    if launcher != "processes":
        raise RecipeError(f"--launcher {launcher} spreads the variants of a sweep; this recipe has no variants")
    if only:
        raise RecipeError("--only selects variants, but this recipe has no variants")
    return TrainOutcome(result=train(recipe, resume=resume, listeners=listeners, retrain=retrain))


def train_variants(
    path: Path,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    listeners: Sequence[TrainingListener] = (),
    sweep_listener: SweepListener | None = None,
    retrain: bool = False,
    jobs: int = 1,
    launcher: str = "processes",
    cluster_options: Sequence[str] = (),
    wait: bool = True,
) -> TrainOutcome:
    """Train every variant (all validated first), then compare them when there are several.

    A finished variant is reused only when its recorded settings match; see `train`. With jobs > 1 the
    variants train in that many processes at once (parallel.py), each with its share of the CPU cores
    or, when several GPUs are visible, a GPU of its own. With a cluster launcher (cluster.py) each variant is
    a job; without `wait` the jobs are submitted and nothing is compared (outcome.submitted says how many).
    """
    sweep_listener = sweep_listener or SweepListener()
    variants = expand_variants(path, overrides, only)
    for _, variant in variants:  # every variant's folder is checked before any trains
        folder = RunFolder(variant.run_dir)
        check_run_folder(variant, folder, folder.is_occupied(), retrain)
    sweep_listener.on_plan(path, len(variants))
    outcome = TrainOutcome()
    if launcher != "processes":
        from diffformer.cluster import train_on_cluster

        runs = [v for _, v in variants]
        results = train_on_cluster(runs, retrain, launcher, list(cluster_options), sweep_listener, wait)
        if results is None:
            outcome.submitted = len(variants)
            return outcome
        outcome.variants = [VariantRun(v.run_dir.name, a, r) for (a, v), r in zip(variants, results)]
    elif jobs > 1:
        from diffformer.parallel import train_in_processes

        results = train_in_processes([v for _, v in variants], retrain, jobs, sweep_listener)
        outcome.variants = [VariantRun(v.run_dir.name, a, r) for (a, v), r in zip(variants, results)]
    else:
        for assignment, variant in variants:
            label = variant.run_dir.name
            started = RunFolder(variant.run_dir).is_occupied()
            sweep_listener.on_variant_start(label, variant.run_dir, started)
            result = train(variant, resume=started, listeners=listeners, retrain=retrain)
            sweep_listener.on_variant_end(label, result)
            outcome.variants.append(VariantRun(label, assignment, result))
    settings = variants[0][1].probe
    if settings is not None:
        from diffformer.probes.runner import default_output_dir, run_probes

        for run in outcome.variants:
            reused = _has_probe(run.result.run_dir, settings)
            sweep_listener.on_probe(run.label, run.result.run_dir, reused)
            if not reused:
                run_probes(run.result.run_dir, settings, default_output_dir(run.result.run_dir))
    if len(variants) > 1:
        sweep_folder = variants[0][1].run_dir.parent  # <output>/<label> for every variant
        command = " ".join(["diffformer", "train", str(path), *(f"--set {o}" for o in overrides)])
        outcome.comparison, outcome.files = compare_runs(
            [variant.run_dir for _, variant in variants],
            output_dir=sweep_folder / COMPARISON_FOLDER,
            commands=[command],
        )
    return outcome


def _has_probe(run_dir: Path, settings) -> bool:
    """Whether the run's probe.json holds results for these settings at its current step."""
    from diffformer.checkpoint import read_checkpoint_info
    from diffformer.run_folder import locate, read_probe

    model_file = locate(run_dir)[1]
    existing = read_probe(model_file)
    wanted = settings.model_dump(exclude={"device"})
    return (
        existing is not None
        and existing.get("settings") == wanted
        and existing.get("step") == read_checkpoint_info(model_file).step
    )
