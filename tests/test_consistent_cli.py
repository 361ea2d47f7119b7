"""One consistent CLI (issue 15): -h, honest proportions, fresh comparison folders, the run's own precision
in eval, exactly N probe samples."""

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.metrics import wilson_interval

runner = CliRunner()


def test_wilson_interval_is_honest_at_zero_and_one():
    low, high = wilson_interval(0, 256)
    assert low == 0.0 and 0.01 < high < 0.02
    low, high = wilson_interval(256, 256)
    assert 0.98 < low < 0.99 and high == 1.0
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["probe"], ["compare"], ["sample"], ["attention"]])
def test_dash_h_is_help(command):
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0 and "Usage" in result.output


def _run(tmp_path, name, precision="bf16", seed=0):
    recipe = {
        "name": name,
        "seed": seed,
        "output": str(tmp_path / name),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "precision": precision},
        "eval": {"every": 3, "batches": 2},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    assert runner.invoke(app, ["train", str(tmp_path / f"{name}.yaml")]).exit_code == 0
    return tmp_path / name


def test_the_training_summary_gives_exact_match_its_wilson_interval(tmp_path):
    _run(tmp_path, "summary", "fp32")
    again = runner.invoke(app, ["train", str(tmp_path / "summary.yaml"), "--retrain"])
    assert again.exit_code == 0, again.output
    line = next(line for line in again.output.splitlines() if "eval exact match" in line)
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())["eval"]
    assert f"(95%: {summary['exact_match_low']:.4f}–{summary['exact_match_high']:.4f})" in line
    assert summary["exact_match_high"] > 0, "the interval is not empty, even at 0/n"


def test_eval_computes_in_the_runs_precision_and_agrees_with_its_summary(tmp_path):
    run = _run(tmp_path, "bf16")
    summary = json.loads((run / "summary.json").read_text())["eval"]
    evaluated = json.loads(runner.invoke(app, ["eval", str(run), "--json"]).stdout)["metrics"]
    assert evaluated["loss"] == summary["loss"] and evaluated["exact_match_high"] == summary["exact_match_high"]


def test_compare_writes_a_fresh_folder_each_time_unless_told_where(tmp_path):
    runs = [str(_run(tmp_path, "a", "fp32", 0)), str(_run(tmp_path, "b", "fp32", 1))]
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        first = runner.invoke(app, ["compare", *runs, "--json"])
        second = runner.invoke(app, ["compare", *runs, "--json"])
    finally:
        os.chdir(here)
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    folders = sorted(p.name for p in (tmp_path / "comparisons").iterdir())
    assert len(folders) == 2, "the second comparison did not overwrite the first"
    assert all((tmp_path / "comparisons" / f / "report.md").is_file() for f in folders)


def test_probe_samples_means_exactly_that_many_prompts(tmp_path):
    run = _run(tmp_path, "probed", "fp32")
    result = runner.invoke(
        app, ["probe", str(run), "--samples", "5", "--batch-size", "4", "--lengths", "24", "--depths", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    grids = json.loads(result.stdout)["retrieval"]
    assert all(cell == 5 for grid in grids.values() for row in grid["samples"] for cell in row)


def test_early_stop_ends_training_at_the_threshold_and_records_the_step(tmp_path):
    recipe = {
        "name": "stops",
        "seed": 0,
        "output": str(tmp_path / "stops"),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {
            "steps": 50,
            "batch_size": 4,
            "log_every": 1,
            "precision": "fp32",
            "early_stop": {"metric": "loss", "at_most": 100.0},  # met at the first evaluation
        },
        "eval": {"every": 4, "batches": 1},
    }
    (tmp_path / "stops.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", str(tmp_path / "stops.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["steps"] == 4 and outcome["stopped_early_at"] == 4
    summary = json.loads((tmp_path / "stops" / "summary.json").read_text())
    assert summary["stopped_early_at"] == 4 and summary["finished"] is True
    again = runner.invoke(app, ["train", str(tmp_path / "stops.yaml"), "--resume", "--json"])
    assert json.loads(again.stdout)["already_finished"] is True, "an early-stopped run is finished"
    never = dict(recipe, name="never", output=str(tmp_path / "never"))
    never["train"] = dict(recipe["train"], steps=8, early_stop={"metric": "exact_match", "at_least": 1.01})
    (tmp_path / "never.yaml").write_text(yaml.safe_dump(never))
    ran = json.loads(runner.invoke(app, ["train", str(tmp_path / "never.yaml"), "--json"]).stdout)
    assert ran["steps"] == 8 and ran["stopped_early_at"] is None
    bad = dict(recipe, train=dict(recipe["train"], early_stop={"metric": "loss"}))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = runner.invoke(app, ["train", str(tmp_path / "bad.yaml")])
    assert refused.exit_code != 0 and "exactly one of at_least and at_most" in refused.output


def test_the_probe_reports_each_grid_cell_for_a_progress_bar(tmp_path):
    from diffformer.probes.runner import run_probes
    from diffformer.probes.settings import ProbeSettings

    run = _run(tmp_path, "progress", "fp32")
    heard = []
    settings = ProbeSettings(probes=["retrieval"], lengths=[24, 32], depths=[0.0, 1.0], samples=2, batch_size=2)
    run_probes(run, settings, None, on_cell=lambda done, total: heard.append((done, total)))
    total = heard[-1][1]  # every prompt variant × 2 lengths × 2 depths
    assert total % 4 == 0 and heard == [(done, total) for done in range(1, total + 1)]


def test_train_takes_a_device_and_refuses_an_absent_one_before_writing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "r",
                "output": str(tmp_path / "r"),
                "model": {"d_model": 32, "n_layers": 1, "n_heads": 2},
                "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
                "train": {"steps": 1, "batch_size": 2},
            }
        )
    )
    result = runner.invoke(app, ["train", str(recipe), "--device", "cuda"])
    assert result.exit_code != 0 and "no CUDA device" in result.output and not (tmp_path / "r").exists()


def test_variants_train_in_parallel_processes_and_end_in_the_comparison(tmp_path):
    recipe = {
        "name": "sweep",
        "output": str(tmp_path / "sweep"),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "precision": "fp32"},
        "eval": {"every": 3, "batches": 1},
        "variants": {"model.attention.kind": ["vanilla", "doubly_normalized"], "seed": [1, 2]},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(recipe))
    parallel = runner.invoke(app, ["train", str(tmp_path / "sweep.yaml"), "--jobs", "2", "--json"])
    assert parallel.exit_code == 0, parallel.output
    comparison = json.loads(parallel.stdout)
    assert comparison["columns"] == ["kind=vanilla (2 seeds)", "kind=doubly_normalized (2 seeds)"]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 4 and all(json.loads(s.read_text())["steps"] == 3 for s in summaries)
    again = runner.invoke(app, ["train", str(tmp_path / "sweep.yaml"), "--jobs", "2", "--json"])
    assert again.exit_code == 0 and again.stderr.count("finished already") == 4, again.output


def test_eval_reports_its_batches_for_a_progress_bar(tmp_path):
    from diffformer.evaluation import evaluate_checkpoint

    run = _run(tmp_path, "evaluated", "fp32")
    heard = []
    evaluate_checkpoint(
        run, batches=3, batch_size=2, device="cpu", on_batch=lambda done, total: heard.append((done, total))
    )
    assert heard == [(1, 3), (2, 3), (3, 3)]
