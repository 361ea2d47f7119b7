"""`train SWEEP --launcher …`: a job per variant through submitit, here its local executor (cluster.py)."""

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.cluster import executor_parameters
from diffformer.errors import RecipeError
from diffformer.run_folder import RunFolder

pytest.importorskip("submitit")
runner = CliRunner()

SWEEP = {
    "name": "sweep",
    "variants": {"seed": [0, 1]},
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 32},
    "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
    "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 3},
    "eval": {"every": 3, "batches": 1},
}


def _sweep(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "output": str(tmp_path / "runs" / "sweep")}))
    return path


def test_a_sweep_runs_as_jobs_then_compares_and_resubmits_safely(tmp_path):
    recipe = _sweep(tmp_path)
    launch = ["train", str(recipe), "--launcher", "submitit-local", "--cluster-option", "timeout_min=10"]
    result = runner.invoke(app, launch)
    assert result.exit_code == 0, result.output
    sweep = tmp_path / "runs" / "sweep"
    for seed in (0, 1):
        summary = RunFolder(sweep / f"seed={seed}").read_summary()
        assert summary is not None and summary.steps == 3
    assert (sweep / "comparison" / "report.md").is_file()
    logs = sorted((sweep / "submitit").glob("*_log.out"))
    assert len(logs) == 2  # one job per variant
    # Submitting the same sweep again: finished variants are read back, no job is submitted.
    again = runner.invoke(app, launch)
    assert again.exit_code == 0, again.output
    assert sorted((sweep / "submitit").glob("*_log.out")) == logs


def test_bad_launcher_settings_are_one_line(tmp_path):
    recipe = _sweep(tmp_path)
    for arguments, message in [
        (["--launcher", "kubernetes"], "--launcher must be one of"),
        (["--launcher", "submitit-local", "--cluster-option", "timeout"], "expects KEY=VALUE"),
        (["--launcher", "submitit-local", "--cluster-option", "no_such_parameter=1"], "--cluster-option"),
    ]:
        result = runner.invoke(app, ["train", str(recipe), *arguments])
        assert result.exit_code != 0 and result.output.count("error:") == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "sweep" / "seed=0" / "model.safetensors").exists()
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump({k: v for k, v in SWEEP.items() if k != "variants"}))
    result = runner.invoke(app, ["train", str(single), "--launcher", "slurm"])
    assert result.exit_code != 0 and "spreads the variants of a sweep" in result.output


def test_cluster_options_are_yaml_values():
    assert executor_parameters(["timeout_min=120", "slurm_partition=gpu", "gpus_per_node=1"]) == {
        "timeout_min": 120,
        "slurm_partition": "gpu",
        "gpus_per_node": 1,
    }
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        executor_parameters(["=3"])
