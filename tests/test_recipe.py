"""Recipes: validation messages, extends, --set, the resolved recipe and the JSON Schema."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.errors import RecipeError
from diffformer.recipe import load_recipe

runner = CliRunner()

GOOD = {
    "name": "bad",
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 64},
    "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 4, "seq_len": 32},
    "train": {"steps": 2, "batch_size": 2},
}


def _with(path: str, value):
    recipe = json.loads(json.dumps(GOOD))
    node = recipe
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return recipe


# (what is wrong, recipe text or mapping, a fragment the one-line message must contain)
MALFORMED = [
    ("unknown top-level key", _with("trian", {}), "trian: unknown key (did you mean 'train'?)"),
    ("unknown model key", _with("model.n_layer", 2), "model.n_layer: unknown key (did you mean 'n_layers'?)"),
    (
        "unknown attention option",
        _with("model.attention", {"kind": "differential", "lambda_int": {}}),
        "model.attention.lambda_int: unknown key (did you mean 'lambda_init'?)",
    ),
    (
        "unknown attention kind",
        _with("model.attention", {"kind": "diferential"}),
        "model.attention.kind: unknown value 'diferential' (did you mean 'differential'?)",
    ),
    (
        "unknown dataset task",
        _with("data.task", "needel"),
        "data.task: unknown value 'needel' (did you mean 'needle'?)",
    ),
    ("wrong type", _with("train.steps", "many"), "train.steps: Input should be a valid integer"),
    ("out of range", _with("train.lr", -1), "train.lr: Input should be greater than 0"),
    ("bad enum", _with("train.precision", "fp16"), "train.precision: Input should be 'auto', 'fp32' or 'bf16'"),
    ("missing section", {k: v for k, v in GOOD.items() if k != "data"}, "data: required but missing"),
    ("d_model not divisible", _with("model.n_heads", 3), "d_model (32) must be divisible by n_heads (3)"),
    (
        "odd heads for differential",
        _with("model", {"d_model": 48, "n_heads": 3, "attention": {"kind": "differential"}}),
        "n_heads must be even",
    ),
    (
        "seq_len above max_seq_len",
        _with("data.seq_len", 100),
        "data.seq_len gives sequences of 100 tokens, above model.max_seq_len (64)",
    ),
    ("warmup longer than training", _with("train.warmup_steps", 10), "warmup_steps (10) exceeds steps (2)"),
    ("mix out of range", _with("model.attention", {"kind": "doubly_normalized", "mix": 1.5}), "model.attention.mix"),
    ("too many pairs", _with("data.num_pairs", 10), "seq_len 32 is too short for 10 pairs"),
    ("more pairs than keys", _with("data.num_pairs", 20), "num_pairs 20 needs more distinct keys than vocab_size 32"),
    ("vocab too small", _with("model.vocab_size", 8), "model.vocab_size (8) is smaller than the mqar task's 32"),
    ("bad run name", _with("name", "has space"), "name: String should match pattern"),
    (
        "missing text file",
        _with("data", {"task": "text", "path": "nowhere.txt", "seq_len": 32}),
        "nowhere.txt does not exist",
    ),
    (
        "two text sources",
        _with("data", {"task": "text", "path": "a.txt", "builtin": "pydoc_topics"}),
        "text data needs exactly one of path, dataset or builtin",
    ),
    (
        "unknown tokenizer",
        _with("data", {"task": "text", "builtin": "pydoc_topics", "tokenizer": {"kind": "wordpiece"}}),
        "data.tokenizer.kind: unknown value 'wordpiece'",
    ),
    (
        "missing tokenizer file",
        _with(
            "data",
            {
                "task": "text",
                "builtin": "pydoc_topics",
                "tokenizer": {"kind": "file", "path": "tok.json"},
                "seq_len": 32,
            },
        ),
        "tokenizer file",
    ),
    ("yaml syntax error", "name: x\nmodel: {d_model: 32\ndata: [\n", "YAML syntax error at line"),
    ("not a mapping", "- just\n- a list\n", "expected a mapping of sections"),
    ("missing extends base", {**GOOD, "extends": "base-that-is-not-there.yaml"}, "does not exist"),
]


@pytest.mark.parametrize(("problem", "content", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_recipe_exits_2_with_one_clear_line(problem, content, expected, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    result = runner.invoke(app, ["train", str(path), "--set", f"output={tmp_path / 'run'}"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert expected in message
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists(), "a rejected recipe must not leave a run folder"


def test_missing_recipe_file_is_named(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert f"recipe {tmp_path / 'absent.yaml'} does not exist" in result.stderr


def test_yaml_error_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel:\n  d_model: [1, 2\n")
    with pytest.raises(RecipeError, match=r"YAML syntax error at line \d+, column \d+"):
        load_recipe(path)


def test_extends_merges_a_base_and_set_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**GOOD, "seed": 5}))
    (tmp_path / "child.yaml").write_text(
        yaml.safe_dump({"extends": "base.yaml", "name": "child", "model": {"attention": {"kind": "differential"}}})
    )
    recipe = load_recipe(tmp_path / "child.yaml", ["train.steps=7", "model.attention.kind=vanilla", "seed=9"])
    assert recipe.name == "child"
    assert recipe.model.d_model == 32 and recipe.model.n_heads == 4  # from the base
    assert recipe.model.attention.kind == "vanilla"  # --set beats the child
    assert recipe.train.steps == 7 and recipe.train.batch_size == 2
    assert recipe.seed == 9


def test_extends_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="'extends' forms a cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_set_validates_like_the_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(RecipeError, match="train.batch_size: Input should be greater than 0"):
        load_recipe(path, ["train.batch_size=0"])
    with pytest.raises(RecipeError, match="--set expects KEY=VALUE"):
        load_recipe(path, ["train.steps"])
    with pytest.raises(RecipeError, match="'train.steps' is a value, not a section"):
        load_recipe(path, ["train.steps.deeper=1"])


def test_schema_command_prints_the_recipe_json_schema(tmp_path):
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"name", "model", "data", "train", "eval", "output"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert "differential" in json.dumps(schema)


SHIPPED_RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    recipe = load_recipe(path)
    assert recipe.name and recipe.train.steps > 0
