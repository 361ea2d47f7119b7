"""A variants sweep on a cluster through submitit (`diffformer train SWEEP --launcher slurm`).

One job per variant that has training left, submitted to Slurm (or, with `--launcher submitit-local`, run by
submitit's local executor: the same code path on one machine, for trying a setup and for tests). A job
trains its variant exactly as the sequential sweep would — resuming a started one, returning at once for a
finished one — and the run folder's lock keeps two jobs from writing one variant, so submitting the same
sweep again (after a time limit, a pre-emption, a failure) is safe: finished variants are skipped before
submission, started ones resume. With `wait` (the default) the sweep waits for its jobs and ends with the
comparison as a local sweep does; without it, `diffformer compare` or the same command later compares.
Job logs go to <sweep output>/submitit/.
"""

import yaml

from diffformer.errors import RecipeError, first_line
from diffformer.run_folder import RunFolder

LAUNCHERS = ("processes", "slurm", "submitit-local")
JOBS_FOLDER = "submitit"


def executor_parameters(options: list[str]) -> dict:
    """`--cluster-option KEY=VALUE` (values are YAML) as submitit parameters, e.g. timeout_min=120,
    gpus_per_node=1, slurm_partition=gpu."""
    parameters = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key.strip():
            raise RecipeError(f"--cluster-option expects KEY=VALUE (e.g. timeout_min=120), got {option!r}")
        parameters[key.strip()] = yaml.safe_load(value)
    return parameters


def _executor(launcher: str, folder, options: list[str], name: str):
    try:
        import submitit
    except ImportError:
        raise RecipeError(f"--launcher {launcher} needs submitit: pip install 'diffformer[cluster]'") from None
    cluster = "local" if launcher == "submitit-local" else "slurm"
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except Exception as error:  # e.g. no sbatch on this machine
        raise RecipeError(f"--launcher {launcher}: submitit cannot start a {cluster} executor ({first_line(error)})")
    parameters = {"name": name, "timeout_min": 60, **executor_parameters(options)}
    try:
        executor.update_parameters(**parameters)
    except Exception as error:  # submitit names the unknown parameter
        raise RecipeError(f"--cluster-option: {first_line(error)}") from None
    return executor


def _train_job(variant, retrain: bool):
    """What one cluster job runs: the variant as the sequential sweep trains it."""
    from diffformer.training.loop import train

    started = RunFolder(variant.run_dir).is_occupied()
    return train(variant, resume=started, retrain=retrain)


def train_on_cluster(variants: list, retrain: bool, launcher: str, options: list[str], sweep_listener, wait=True):
    """Every variant's TrainResult in order (finished ones read back without a job), or None without `wait`
    (the jobs were submitted; their ids went to the sweep listener)."""
    from diffformer.training.loop import finished_result

    folder = variants[0].run_dir.parent / JOBS_FOLDER
    executor = _executor(launcher, folder, options, variants[0].name)
    results, jobs = [None] * len(variants), {}
    for index, variant in enumerate(variants):
        run_folder = RunFolder(variant.run_dir)
        finished = finished_result(run_folder, variant) if run_folder.is_occupied() else None
        if finished is not None:
            results[index] = finished
            sweep_listener.on_variant_end(variant.run_dir.name, finished)
            continue
        job = executor.submit(_train_job, variant, retrain)
        jobs[index] = job
        sweep_listener.on_variant_start(f"{variant.run_dir.name} (job {job.job_id})", variant.run_dir, False)
    if not wait:
        return None
    failure = None
    for index, job in jobs.items():
        label = variants[index].run_dir.name
        try:
            results[index] = job.result()
        except Exception as error:  # submitit re-raises the job's error with its traceback: keep one line
            failure = failure or RecipeError(
                f"variant {label} failed in job {job.job_id} ({_last_line(error)}); its log: {job.paths.stderr}"
            )
            continue
        sweep_listener.on_variant_end(label, results[index])
    if failure is not None:
        raise failure
    return results


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
