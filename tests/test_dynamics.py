"""Attention dynamics during training (the `track:` section): what RUN/dynamics.jsonl holds, per kind and
task, and that it stays consistent through a SIGKILL and --resume."""

import json
import signal

import pytest
import yaml
from conftest import KINDS, small_model
from safetensors.torch import load_file
from test_training import _recipe, _run, _start, _wait_for_first_checkpoint

from diffformer.launch import train_from_path
from diffformer.model.attention import kind_entry
from diffformer.model.capture import Rows


def _with_tracking(path, every=5):
    recipe = yaml.safe_load(path.read_text())
    recipe["track"] = {"every": every, "batch_size": 4}
    path.write_text(yaml.safe_dump(recipe))
    return path


def _dynamics(run_dir):
    return [json.loads(line) for line in (run_dir / "dynamics.jsonl").read_text().splitlines()]


def _tiny(tmp_path, kind: str, task: dict, head_init: str = "random", track=None, **model) -> list[dict]:
    recipe = {
        "name": kind,
        "output": str(tmp_path / kind),
        "model": {
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 4,
            "max_seq_len": 64,
            "attention": {"kind": kind},
            "head_init": head_init,
            **model,
        },
        "data": task,
        "train": {"steps": 7, "batch_size": 4, "log_every": 1, "precision": "fp32"},
        "eval": {"every": 100, "batches": 1},
        "track": track or {"every": 3, "batch_size": 4},
    }
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train_from_path(path)
    return _dynamics(tmp_path / kind)


MQAR = {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24}


# What a kind's rows add to the common measurements (docs/formulas.md §6).
ROW_MEASUREMENTS = {
    Rows.DISTRIBUTION: set(),
    Rows.SIGNED: {
        *("lambda_value", "a1_a2_cosine", "a1_a2_js", "negative_share", "needle_net_mass", "row_sum"),
        *("a1_needle_mass", "a2_needle_mass"),
    },
    Rows.UNNORMALISED: {"needle_net_mass", "row_sum"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_dynamics_holds_each_kinds_measurements_at_step_0_every_n_steps_and_the_last(tmp_path, kind):
    coverage = kind == KINDS[-1]  # key coverage is a track option, for any kind
    records = _tiny(tmp_path, kind, MQAR, track={"every": 3, "batch_size": 4, "key_coverage": coverage})
    kind_specific = ROW_MEASUREMENTS[kind_entry(kind).rows] | ({"key_coverage_min"} if coverage else set())
    assert [r["step"] for r in records] == [0, 3, 6, 7]
    common = {"needle_mass", "noise", "entropy", "head_diversity"}
    for record in records:
        assert set(record["layers"]) == {"0", "1"}
        sources = {"source_argmax", "source_argmax_near", "source_coverage", "source_dropped"}
        assert set(record["average"]) == common | sources | kind_specific
        assert set(record["model"]) == {"token_accuracy", "exact_match"}
        assert 0.0 <= record["average"]["entropy"] <= 1.0 and 0.0 <= record["average"]["needle_mass"] <= 1.5
    assert records[0] != records[-1], "training moved the attention it measures"


def test_tasks_without_marked_sources_are_tracked_without_source_mass(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    task = {"task": "text", "path": str(text), "tokenizer": {"kind": "byte"}, "seq_len": 32}
    records = _tiny(tmp_path, "vanilla", task)
    assert "needle_mass" not in records[-1]["average"] and "entropy" in records[-1]["average"]
    # Text gets text views: no exact match (never 1 on a text window), no "learned", a loss curve with errors.
    assert "exact_match" not in records[-1]["model"] and "token_accuracy" in records[-1]["model"]
    from diffformer.comparison.records import load_runs
    from diffformer.comparison.table import compare_records

    _tiny(tmp_path, "sigmoid", task)
    comparison = compare_records(load_runs([tmp_path / "vanilla", tmp_path / "sigmoid"]))
    names = [row.name for row in comparison.rows]
    assert not any(name.startswith(("learned", "token accuracy ≥")) for name in names)
    assert not any("exact match" in name for name in names)


def test_tracking_changes_nothing_trained_and_survives_sigkill_and_resume(tmp_path):
    """Same weights as the run without tracking; after SIGKILL and --resume the file has each step once,
    with the values of an uninterrupted run."""
    reference = tmp_path / "reference"
    reference.mkdir()
    code, _, err = _run(reference, str(_recipe(reference, "plain")))
    assert code == 0, err
    tracked = _with_tracking(_recipe(reference, "tracked"))
    code, _, err = _run(reference, str(tracked))
    assert code == 0, err
    plain_weights = load_file(str(reference / "plain" / "model.safetensors"))
    tracked_weights = load_file(str(reference / "tracked" / "model.safetensors"))
    assert all((plain_weights[k] == v).all() for k, v in tracked_weights.items()), "tracking must not change training"

    killed = _with_tracking(_recipe(tmp_path, "tracked"))
    process = _start(tmp_path, str(killed))
    _wait_for_first_checkpoint(tmp_path / "tracked")
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, _, err = _run(tmp_path, str(killed), "--resume")
    assert code == 0, err
    assert _dynamics(tmp_path / "tracked") == _dynamics(reference / "tracked")
    assert [r["step"] for r in _dynamics(tmp_path / "tracked")] == [0, 5, 10, 15, 20, 24]


def test_training_draws_dynamics_png_and_the_command_redraws_it(tmp_path):
    from typer.testing import CliRunner

    from diffformer.cli import app

    _tiny(tmp_path, "differential", MQAR)
    run = tmp_path / "differential"
    assert (run / "dynamics.png").read_bytes().startswith(b"\x89PNG")
    result = CliRunner().invoke(app, ["dynamics", str(run), "-o", str(tmp_path / "again.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == _dynamics(run)
    assert (tmp_path / "again.png").read_bytes().startswith(b"\x89PNG")
    untracked = CliRunner().invoke(app, ["dynamics", str(tmp_path / "nowhere")])
    assert untracked.exit_code != 0 and "Traceback" not in untracked.output


@pytest.mark.parametrize("kind", KINDS)
def test_per_head_measurements_tell_identical_heads_from_random_ones(tmp_path, kind):
    """Heads started identical (model.head_init) measure identically at every step; random ones do not."""
    (tmp_path / "identical").mkdir()
    (tmp_path / "random").mkdir()
    identical = _tiny(tmp_path / "identical", kind, MQAR, head_init="identical")
    random_heads = _tiny(tmp_path / "random", kind, MQAR)
    # The heads whose outputs mix (differential V1: its pairs).
    heads = small_model({"kind": kind}, n_layers=1).blocks[0].attention.output_heads
    for record in identical:
        for layer in ("0", "1"):
            entropy = record["heads"][layer]["entropy"]
            assert len(entropy) == heads and max(entropy) - min(entropy) < 1e-5
    entropy = random_heads[0]["heads"]["0"]["entropy"]
    assert max(entropy) - min(entropy) > 1e-3
