"""The instruments the seed papers' claims need: the built-in Python corpus pinned by checksum, and the
parameter-efficiency fit with its bootstrap (docs/formulas.md §22)."""

import math

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.comparison.scaling import parameter_efficiency
from diffformer.data.python_docs import corpus_checksum, pydoc_topics, python_docs

runner = CliRunner()


def test_the_python_docs_corpus_is_the_topics_then_the_fixed_modules_docstrings_and_has_a_checksum():
    topics, documents = pydoc_topics(), python_docs()
    assert documents[: len(topics)] == topics and len(documents) > 3 * len(topics)
    assert sum(map(len, documents)) > 1_000_000, "over a megabyte of prose"
    assert any("Return a new array" in d or "Return the" in d for d in documents[len(topics) :])
    assert corpus_checksum(documents) == corpus_checksum(python_docs()), "the same text every time"
    assert corpus_checksum(documents) != corpus_checksum(documents[1:])


def test_a_pinned_corpus_checksum_that_does_not_match_is_refused_in_one_line(tmp_path):
    recipe = {
        "name": "pinned",
        "output": str(tmp_path / "pinned"),
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 32},
        "data": {
            "task": "text",
            "builtin": "pydoc_topics",
            "builtin_sha256": "0" * 64,
            "seq_len": 32,
            "tokenizer": {"kind": "byte"},
        },
        "train": {"steps": 1, "batch_size": 2},
    }
    (tmp_path / "pinned.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", str(tmp_path / "pinned.yaml")])
    assert (
        result.exit_code != 0
        and "data.builtin_sha256" in result.output
        and corpus_checksum(pydoc_topics()) in result.output
    )
    assert "Traceback" not in result.output


def _points(share: float, noise: float = 0.0):
    """Vanilla: L = 5 − 0.3·ln N; differential reaches each loss with `share` of the parameters."""
    sizes = [100_000, 300_000, 1_000_000, 3_000_000]
    jitter = [-noise, 0.0, noise]
    vanilla = {n: [5 - 0.3 * math.log(n) + j for j in jitter] for n in sizes}
    other = {n: [5 - 0.3 * math.log(n / share) + j for j in jitter] for n in sizes}
    return {"vanilla": vanilla, "differential": other}


def test_a_kind_that_needs_half_the_parameters_is_found_to_need_half():
    result = parameter_efficiency("vanilla", "differential", _points(0.5, noise=0.01))
    assert result.ratio == pytest.approx(0.5, rel=1e-6)
    assert result.ratio_low < 0.5 < result.ratio_high and result.ratio_high < 1
    assert result.verdict().startswith("differential needs 50% of vanilla's parameters to match its loss (95% CI")
    assert all(r == pytest.approx(0.5, rel=1e-6) for r in result.ratio_by_size.values())


def test_equal_kinds_within_seed_noise_show_no_detectable_difference():
    result = parameter_efficiency("vanilla", "differential", _points(1.0, noise=0.05))
    assert result.ratio == pytest.approx(1.0, rel=1e-6)
    assert result.ratio_low < 1 < result.ratio_high
    assert result.verdict().startswith("no detectable difference in parameter efficiency")
