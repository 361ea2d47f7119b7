"""A study end to end: a variants recipe with a probe section trains, probes every variant and writes
a report with side-by-side heatmaps and accuracy by length."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.comparison.report import markdown_report
from diffformer.comparison.statistics import Measured, mean_difference
from diffformer.comparison.table import Comparison, Row

runner = CliRunner()

STUDY = {
    "name": "study",
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "position": "alibi"},
    "data": {
        "task": "mqar",
        "vocab_size": 32,
        "num_pairs": 2,
        "seq_len": [12, 16],
        "depth": "random",
        "distractors": 1,
    },
    "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 3},
    "eval": {"every": 3, "batches": 1},
    "probe": {
        "probes": ["retrieval", "attention"],
        "scales": [1, 2],
        "depths": [0, 1],
        "variants": ["all"],
        "samples": 2,
    },
    "variants": {"model.attention.kind": ["vanilla", "doubly_normalized"], "seed": [1, 2]},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "study.yaml").write_text(yaml.safe_dump({**STUDY, "output": str(root / "runs")}))
    result = runner.invoke(app, ["train", str(root / "study.yaml")])
    assert result.exit_code == 0, result.output
    return root, result


def test_a_study_probes_every_variant_with_the_recipes_settings(study):
    root, result = study
    assert result.stderr.count("probing…") == 4
    probe = json.loads((root / "runs" / "kind=vanilla+seed=1" / "probes" / "probe.json").read_text())
    assert set(probe["retrieval"]) == {"mqar", "mqar_distractors"}
    assert probe["retrieval"]["mqar"]["lengths"] == [16, 32], "scales × the longest training length"
    assert probe["settings"]["scales"] == [1.0, 2.0]
    again = runner.invoke(app, ["train", str(root / "study.yaml")])
    assert again.exit_code == 0 and again.stderr.count("probe results up to date") == 4, again.stderr


def test_a_study_writes_its_report_and_figures(study):
    root, _ = study
    folder = root / "runs" / "comparison"
    names = {p.name for p in folder.iterdir()}
    assert {
        "curves.png",
        "retrieval_heatmaps_mqar.png",
        "retrieval_heatmaps_mqar_distractors.png",
        "retrieval_by_length.png",
        "comparison.json",
        "report.md",
    } <= names
    report = (folder / "report.md").read_text()
    assert f"diffformer train {root / 'study.yaml'}" in report, "the command that produced it"
    assert "kind=vanilla (2 seeds)" in report and "kind=doubly_normalized (2 seeds)" in report
    assert "mqar accuracy @ 32" in report and "## Verdicts" in report
    assert "![retrieval heatmaps mqar](retrieval_heatmaps_mqar.png)" in report


def test_the_report_names_detected_differences_with_their_intervals_and_only_those():
    def row(*columns):
        runs = [[Measured(seed, value, 0.02) for seed, value in enumerate(values)] for values in columns]
        differences = [None] + [mean_difference(runs[0], other) for other in runs[1:]]
        verdicts = ["reference"] + [d.verdict() for d in differences[1:]]
        return Row(
            "retrieval",
            "mqar accuracy @ 64",
            [sum(v) / len(v) for v in columns],
            [0.01] * 3,
            verdicts,
            differences=differences,
        )

    comparison = Comparison(
        ["kind=vanilla", "kind=differential", "kind=doubly_normalized"],
        [["a"], ["b"], ["c"]],
        {},
        [row((0.50, 0.52, 0.48), (0.90, 0.91, 0.89), (0.51, 0.53, 0.49))],
    )
    report = markdown_report(comparison, [], ["diffformer compare a b c"])
    assert "- retrieval · mqar accuracy @ 64: kind=differential − kind=vanilla = +0.4 (95% CI" in report
    assert "kind=doubly_normalized − kind=vanilla" not in report, "no detectable difference is not listed as one"
    assert "1 other differences are not detectable at their n" in report
    assert "smallest difference this comparison could have detected in retrieval (80% power" in report
    assert "diffformer compare a b c" in report and "## Is the comparison fair?" in report
    quiet = Comparison(comparison.columns[:2], [["a"], ["c"]], {}, [row((0.50, 0.52, 0.48), (0.51, 0.53, 0.49))])
    assert "No difference against kind=vanilla is detectable at these seed counts." in markdown_report(quiet, [], [])


def test_probe_settings_in_a_recipe_are_checked(tmp_path):
    bad = {**STUDY, "probe": {"depths": [0, 2]}, "output": str(tmp_path / "runs")}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["train", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "probe.depths must lie in [0, 1]" in result.stderr
    assert not (tmp_path / "runs").exists()
