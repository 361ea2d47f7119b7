"""Hostile and careless input: every case ends with one clear line, a non-zero exit code, no traceback,
and nothing that was already written changed.

Cases are grouped: recipes, recipe files and paths, run folders and checkpoints, faults of the
system, data, and probe/eval options. Each names the message a user would need to fix it.
"""

import fcntl
import hashlib
import json
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from diffformer.cli import app

runner = CliRunner()

BASE = {
    "name": "hostile",
    "seed": 1,
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 48, "attention": {"kind": "differential"}},
    "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
    "train": {"steps": 4, "batch_size": 4, "log_every": 1, "checkpoint_every": 2},
    "eval": {"every": 4, "batches": 1},
}


def _snapshot(root) -> dict[str, str]:
    """Every file below root with a digest of its content (the lock file is bookkeeping, not data)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _refused(result, code: int, message: str) -> None:
    output = (result.stdout or "") + (result.stderr or "")
    assert isinstance(result.exception, SystemExit), f"raised {result.exception!r}:\n{output}"
    assert "Traceback" not in output
    assert result.exit_code == code, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert message in lines[0], f"{message!r} not in {lines[0]!r}"


def _write_recipe(path, recipe: dict, output) -> None:
    path.write_text(yaml.safe_dump({**recipe, "output": str(output)}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (4 steps, checkpoints at 2 and 4), trained once for the module."""
    root = tmp_path_factory.mktemp("hostile")
    _write_recipe(root / "recipe.yaml", BASE, root / "run")
    result = runner.invoke(app, ["train", str(root / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run, with its recipe beside it: tmp_path/run, tmp_path/recipe.yaml."""
    shutil.copytree(trained, tmp_path / "run")
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "run")
    return tmp_path / "run"


# --- recipes ----------------------------------------------------------------------------------

RECIPE_OVERRIDES = [
    ("unknown top-level key", ["colour=red"], "colour: unknown key"),
    ("typo in a model key", ["model.d_modle=32"], "did you mean 'd_model'"),
    ("width that is not a number", ["model.d_model=big"], "model.d_model"),
    ("negative steps", ["train.steps=-5"], "train.steps: Input should be greater than 0"),
    ("zero steps", ["train.steps=0"], "train.steps"),
    ("steps: yes", ["train.steps=yes"], "train.steps: expected a number, got the boolean true"),
    ("batch size: on", ["train.batch_size=on"], "train.batch_size: expected a number"),
    ("learning rate: true", ["train.lr=true"], "train.lr: expected a number"),
    ("infinite learning rate", ["train.lr=.inf"], "train.lr: Input should be a finite number"),
    ("NaN learning rate", ["train.lr=.nan"], "train.lr: Input should be a finite number"),
    ("infinite weight decay", ["train.weight_decay=.inf"], "train.weight_decay: Input should be a finite number"),
    ("infinite norm epsilon", ["model.norm_eps=.inf"], "model.norm_eps: Input should be a finite number"),
    ("width of 10^9", ["model.d_model=1000000000"], "model.d_model: Input should be less than or equal to 65536"),
    ("a million layers", ["model.n_layers=1000000"], "model.n_layers: Input should be less than or equal"),
    ("vocabulary of 10^10", ["model.vocab_size=10000000000"], "model.vocab_size: Input should be less than"),
    ("seed of 2^70", ["seed=1180591620717411303424"], "seed: Input should be less than or equal to 4294967295"),
    ("negative seed", ["seed=-1"], "seed: Input should be greater than or equal to 0"),
    ("heads that do not divide the width", ["model.n_heads=3"], "d_model (16) must be divisible by n_heads (3)"),
    ("kv heads that do not divide the heads", ["model.n_kv_heads=3"], "n_heads (2) must be divisible by n_kv_heads"),
    ("differential with one head", ["model.n_heads=1"], "n_heads must be even"),
    ("unknown attention kind", ["model.attention.kind=sparse"], "unknown value 'sparse'"),
    ("mix above one", ["model.attention={kind: doubly_normalized, mix: 2}"], "mix must be a number in [0, 1]"),
    ("λ_init of 1.5", ["model.attention.lambda_init={schedule: constant, value: 1.5}"], "lambda_init.value"),
    ("unknown λ schedule", ["model.attention.lambda_init={schedule: linear}"], "unknown value 'linear'"),
    ("unknown position encoding", ["model.position=xpos"], "model.position"),
    ("dropout of one", ["model.dropout=1.0"], "model.dropout: Input should be less than 1"),
    ("max_seq_len of zero", ["model.max_seq_len=0"], "model.max_seq_len"),
    ("unknown task", ["data.task=telepathy"], "unknown value 'telepathy'"),
    ("run name with a slash", ["name=a/b"], "name: String should match pattern"),
    ("empty run name", ["name="], "name: Input should be a valid string"),
    ("sequence length zero", ["data.seq_len=0"], "seq_len must be a positive integer"),
    ("empty list of lengths", ["data.seq_len=[]"], "seq_len must be a positive integer"),
    ("sequences longer than the model", ["data.seq_len=96"], "above model.max_seq_len (48)"),
    ("more pairs than keys", ["data.num_pairs=40"], "num_pairs 40 needs more distinct keys"),
    ("vocabulary below the task's", ["model.vocab_size=8"], "smaller than the mqar task's 32 token ids"),
    ("warm-up longer than training", ["train.warmup_steps=50"], "warmup_steps (50) exceeds steps (4)"),
    ("beta above one", ["train.betas=[0.9, 1.5]"], "betas must lie in [0, 1)"),
    ("unknown precision", ["train.precision=fp8"], "train.precision"),
    ("unknown device", ["train.device=tpu"], "train.device"),
    ("zero eval batches", ["eval.batches=0"], "eval.batches"),
    ("--set without a value", ["train.steps"], "--set expects KEY=VALUE"),
    ("--set with broken YAML", ["train.steps=[1"], "the value '[1' is not valid YAML"),
    ("--set into a value", ["train.steps.x=1"], "'train.steps' is a value, not a section"),
    ("text with two sources", ["data={task: text, path: a.txt, builtin: pydoc_topics}"], "exactly one of path"),
    (
        "BPE vocabulary of 10",
        ["data={task: text, builtin: pydoc_topics, tokenizer: {kind: bpe, vocab_size: 10}}"],
        "data.tokenizer.vocab_size",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), RECIPE_OVERRIDES, ids=[c[0] for c in RECIPE_OVERRIDES])
def test_bad_recipe_values_are_refused_before_any_folder_is_made(case, overrides, message, tmp_path):
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "run")
    arguments = [item for override in overrides for item in ("--set", override)]
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), *arguments]), 2, message)
    assert not (tmp_path / "run").exists()


def test_a_cuda_recipe_on_a_machine_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "run")
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), "--set", "train.device=cuda"])
    _refused(result, 2, "train.device is cuda but no CUDA device is available")
    assert not (tmp_path / "run").exists()


ALIAS_BOMB = (
    "name: bomb\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 8))
    + "variants: {seed: *l7}\n"
)

RECIPE_FILES = [
    ("YAML syntax error", "name: x\nmodel: {d_model: 16\n", "YAML syntax error at line 3"),
    ("a list, not a mapping", "- a\n- b\n", "expected a mapping of sections"),
    ("an empty file", "", "expected a mapping of sections"),
    ("not UTF-8", b"name: \xff\xfe\n", "is not a UTF-8 text file"),
    ("a YAML alias bomb", ALIAS_BOMB, "expands to more than 100,000 values"),
    ("extends a missing file", "extends: nowhere.yaml\nname: x\n", "nowhere.yaml does not exist"),
    ("extends that is not a file name", "extends: 5\nname: x\n", "extends: expected a file name"),
    (
        "no model section",
        yaml.safe_dump({k: v for k, v in BASE.items() if k != "model"}),
        "model: required but missing",
    ),
    ("no data section", yaml.safe_dump({k: v for k, v in BASE.items() if k != "data"}), "data: required but missing"),
    ("no name", yaml.safe_dump({k: v for k, v in BASE.items() if k != "name"}), "name: required but missing"),
    ("variants as a list", yaml.safe_dump({**BASE, "variants": [1, 2]}), "variants"),
    ("a variant with no values", yaml.safe_dump({**BASE, "variants": {"seed": []}}), "variants"),
    ("one bad variant", yaml.safe_dump({**BASE, "variants": {"model.n_heads": [2, 3]}}), "variant n_heads=3"),
    ("a repeated variant", yaml.safe_dump({**BASE, "variants": {"seed": [1, 1]}}), "would share the folder seed=1"),
]


@pytest.mark.parametrize(("case", "text", "message"), RECIPE_FILES, ids=[c[0] for c in RECIPE_FILES])
def test_unreadable_recipe_files_are_refused(case, text, message, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = _snapshot(tmp_path)
    _refused(runner.invoke(app, ["train", str(path)]), 2, message)
    assert _snapshot(tmp_path) == before


def test_a_cycle_of_extends_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    _refused(runner.invoke(app, ["train", str(tmp_path / "a.yaml")]), 2, "'extends' forms a cycle")


def _variants_recipe(tmp_path, variants):
    path = tmp_path / "grid.yaml"
    _write_recipe(path, {**BASE, "variants": variants}, tmp_path / "grid")
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--only", "nope=1"], "--only nope: not a variant key"),
        (["--only", "seed=9"], "matches no variant"),
        (["--only", "seed"], "--only expects KEY=VALUE"),
    ],
    ids=["unknown key", "no match", "no value"],
)
def test_bad_variant_selections_are_refused(arguments, message, tmp_path):
    path = _variants_recipe(tmp_path, {"seed": [1, 2]})
    _refused(runner.invoke(app, ["train", str(path), *arguments]), 2, message)
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.yaml", "absent.yaml does not exist"),
        (lambda d: (d / "plain").mkdir() or d / "plain", "is a folder but not a run folder"),
    ],
    ids=["missing recipe", "a plain folder"],
)
def test_train_paths_that_are_neither_recipe_nor_run(make, message, tmp_path):
    _refused(runner.invoke(app, ["train", str(make(tmp_path))]), 2, message)


def test_only_on_a_recipe_without_variants(tmp_path):
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "run")
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), "--only", "seed=1"])
    _refused(result, 2, "--only selects variants, but this recipe has no variants")
    assert not (tmp_path / "run").exists()


# --- run folders and checkpoints -------------------------------------------------------------------


def _train_again(run, *arguments):
    return runner.invoke(app, ["train", str(run.parent / "recipe.yaml"), *arguments])


RESUME_CASES = [
    ("no --resume on an existing run", [], "already exists; add --resume"),
    ("another width", ["--resume", "--set", "model.d_model=32"], "model.d_model: 16 → 32"),
    ("another vocabulary", ["--resume", "--set", "model.vocab_size=64"], "model.vocab_size: 32 → 64"),
    ("another seed", ["--resume", "--set", "seed=2"], "seed: 1 → 2"),
    ("another task", ["--resume", "--set", "data.num_pairs=4"], "data.num_pairs: 3 → 4"),
    ("another learning rate", ["--resume", "--set", "train.lr=0.01"], "train.lr: 0.001 → 0.01"),
    ("fewer steps than the last checkpoint", ["--resume", "--set", "train.steps=3"], "below the last checkpoint"),
]


@pytest.mark.parametrize(("case", "arguments", "message"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resuming_differently_is_refused_and_changes_nothing(case, arguments, message, run):
    before = _snapshot(run)
    _refused(_train_again(run, *arguments), 2, message)
    assert _snapshot(run) == before


@pytest.mark.parametrize("resume", [True, False], ids=["--resume", "fresh"])
def test_a_folder_that_is_not_a_run_is_never_touched(resume, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "metrics.jsonl").write_text("my own metrics\n")
    (folder / ".tmp-draft.txt").write_text("a draft")
    _write_recipe(tmp_path / "recipe.yaml", BASE, folder)
    before = _snapshot(folder)
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), *(["--resume"] if resume else [])])
    _refused(result, 2, "is not a diffformer run folder")
    assert _snapshot(folder) == before and not (folder / ".lock").exists()


def test_a_run_folder_in_use_is_refused_naming_the_holder(run):
    before = _snapshot(run)
    with open(run / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write("process 4242 on elsewhere since 12:00:00 (diffformer train x.yaml)")
        handle.flush()
        result = _train_again(run, "--resume", "--set", "train.steps=6")
    _refused(result, 2, "is in use by process 4242 on elsewhere")
    assert _snapshot(run) == before


def test_a_stale_lock_file_does_not_block_a_resume(run):
    (run / ".lock").write_text("process 1 on a machine that was killed")  # no process holds it
    result = _train_again(run, "--resume", "--set", "train.steps=6")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def _tamper_metadata(path, **changes):
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
    recipe = json.loads(metadata["recipe"])
    for key, value in changes.items():
        if key.startswith("model."):
            recipe["model"][key.removeprefix("model.")] = value
        elif value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    if "recipe" in metadata and not isinstance(changes.get("recipe"), str):
        metadata["recipe"] = json.dumps(recipe)
    save_file(load_file(str(path)), str(path), metadata=metadata)


CHECKPOINT_CASES = [
    ("cut short", lambda f: f.write_bytes(f.read_bytes()[:-100]), "is truncated or not a safetensors file"),
    ("garbage", lambda f: f.write_bytes(b"not a checkpoint" * 20), "is truncated or not a safetensors file"),
    ("another format", lambda f: save_file({"w": torch.zeros(2)}, str(f)), "not a diffformer checkpoint"),
    ("a future version", lambda f: _tamper_metadata(f, format_version="99"), "has format version 99"),
    ("a malformed version", lambda f: _tamper_metadata(f, format_version="one"), "malformed format_version"),
    ("no recipe", lambda f: _tamper_metadata(f, recipe=None), "missing or malformed metadata"),
    ("a recipe that is not JSON", lambda f: _tamper_metadata(f, recipe="{nope"), "missing or malformed metadata"),
    ("a width that is text", lambda f: _tamper_metadata(f, **{"model.d_model": "x"}), "malformed metadata"),
    ("a width of 2^20", lambda f: _tamper_metadata(f, **{"model.d_model": 2**20}), "malformed metadata"),
    ("shapes that disagree", lambda f: _tamper_metadata(f, **{"model.d_model": 32}), "has shape [32, 16]"),
    ("more layers than tensors", lambda f: _tamper_metadata(f, **{"model.n_layers": 3}), "do not match the model"),
    ("a negative step", lambda f: _tamper_metadata(f, step="-3"), "missing or malformed metadata"),
    ("a step that is text", lambda f: _tamper_metadata(f, step="many"), "missing or malformed metadata"),
]


@pytest.mark.parametrize(("case", "tamper", "message"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
@pytest.mark.parametrize("command", ["eval", "probe", "compare"])
def test_tampered_checkpoints_are_refused_by_every_reader(case, tamper, message, command, run, trained):
    tamper(run / "model.safetensors")
    before = _snapshot(run)
    arguments = {"eval": [str(run)], "probe": [str(run), "--samples", "2"], "compare": [str(trained), str(run)]}
    _refused(runner.invoke(app, [command, *arguments[command]]), 2, message)
    assert _snapshot(run) == before


def test_a_training_state_given_as_weights_is_named(run):
    state = run / "checkpoints" / "step-00000004" / "training_state.safetensors"
    _refused(runner.invoke(app, ["eval", str(state)]), 2, "is a training state (optimizer moments), not model weights")


def test_a_malformed_training_state_stops_a_resume_clearly(run):
    state = run / "checkpoints" / "step-00000004" / "training_state.safetensors"
    with safe_open(str(state), "pt") as file:
        metadata = file.metadata()
    save_file(load_file(str(state)), str(state), metadata={**metadata, "optimizer": "[{broken"})
    (run / "summary.json").unlink()
    before = _snapshot(run)
    _refused(_train_again(run, "--resume", "--set", "train.steps=6"), 2, "is malformed or does not belong")
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("setup", "target", "message"),
    [
        (lambda run: None, lambda run: run.parent / "nowhere", "does not exist"),
        (lambda run: (run / "model.safetensors").unlink(), lambda run: run, "has no model.safetensors"),
    ],
    ids=["missing path", "folder without weights"],
)
def test_eval_of_what_is_not_there(setup, target, message, run):
    setup(run)
    _refused(runner.invoke(app, ["eval", str(target(run))]), 2, message)


RUN_FILE_CASES = [
    ("metrics.jsonl", '{"step": 1}\nnot json\n{"step": 3}\n', "metrics.jsonl, line 2: not a JSON record"),
    ("metrics.jsonl", '[1, 2]\n{"step": 2}\n', "metrics.jsonl, line 1: expected a JSON object"),
    ("summary.json", "{broken", "summary.json is not valid JSON"),
    ("summary.json", "[1, 2]", "summary.json should hold a JSON object"),
    ("probes/probe.json", "{broken", "probe.json is not valid JSON"),
    ("probes/probe.json", '{"checkpoint": 1}', "is not a probe report this diffformer reads"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), RUN_FILE_CASES, ids=[f"{c[0]}: {c[2]}" for c in RUN_FILE_CASES]
)
def test_damaged_run_files_are_named_by_compare(name, content, message, run, trained):
    (run / name).parent.mkdir(exist_ok=True)
    (run / name).write_text(content)
    before = _snapshot(run)
    _refused(runner.invoke(app, ["compare", str(trained), str(run)]), 2, message)
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("recipe.yaml", "model: {d_model: [", "YAML syntax error"), ("run.json", "{nope", "run.json is not valid JSON")],
    ids=["recipe.yaml", "run.json"],
)
def test_damaged_run_files_are_named_on_resume(name, content, message, run):
    (run / name).write_text(content)
    before = _snapshot(run)
    _refused(runner.invoke(app, ["train", str(run)]), 2, message)
    assert _snapshot(run) == before


def test_a_torn_last_metrics_line_is_read_as_the_lines_before_it(run, trained):
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 5, "loss": 0.')
    result = runner.invoke(app, ["compare", str(trained), str(run), "--json", "-o", str(run.parent / "cmp")])
    assert result.exit_code == 0, result.output


def test_the_same_run_twice_is_not_two_seeds(run):
    _refused(runner.invoke(app, ["compare", str(run), str(run)]), 2, "are the same run; give each run once")
    _refused(runner.invoke(app, ["compare", str(run), str(run / "model.safetensors")]), 2, "are the same run")
    _refused(runner.invoke(app, ["compare", str(run)]), 2, "compare needs at least two runs")


def test_an_unfinished_run_is_not_grouped_with_finished_seeds(run, tmp_path):
    other = tmp_path / "seed2"
    _write_recipe(tmp_path / "seed2.yaml", {**BASE, "seed": 2}, other)
    assert runner.invoke(app, ["train", str(tmp_path / "seed2.yaml")]).exit_code == 0
    (other / "summary.json").unlink()  # as if still training
    result = runner.invoke(app, ["compare", str(run), str(other), "--json", "-o", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    columns = json.loads(result.stdout)["columns"]
    assert len(columns) == 2 and "unfinished" in columns[1] and "seeds" not in " ".join(columns)


def test_variants_that_differ_only_deep_inside_a_section_get_their_own_folders(tmp_path):
    from diffformer.recipe import expand_variants

    grid = {
        "model.attention": [
            {"kind": "differential", "lambda_init": {"schedule": "exp"}},
            {"kind": "differential", "lambda_init": {"schedule": "constant", "value": 0.5}},
        ],
        "data": [{**BASE["data"], "num_pairs": 2}, {**BASE["data"], "num_pairs": 3}],
    }
    folders = [recipe.run_dir for _, recipe in expand_variants(_variants_recipe(tmp_path, grid))]
    assert len(set(folders)) == 4, folders


def test_a_changed_variants_recipe_does_not_reuse_stale_results(tmp_path):
    path = _variants_recipe(tmp_path, {"seed": [1, 2]})
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    before = _snapshot(tmp_path / "grid")
    changed = runner.invoke(app, ["train", str(path), "--set", "model.d_model=32"])
    _refused(changed, 2, "model.d_model: 16 → 32")
    assert _snapshot(tmp_path / "grid") == before
    retrained = runner.invoke(app, ["train", str(path), "--set", "model.d_model=32", "--retrain"])
    assert retrained.exit_code == 0, retrained.output
    for seed in (1, 2):
        assert (
            yaml.safe_load((tmp_path / "grid" / f"seed={seed}" / "recipe.yaml").read_text())["model"]["d_model"] == 32
        )
    again = runner.invoke(app, ["train", str(path), "--set", "model.d_model=32"])
    assert again.exit_code == 0 and again.stderr.count("finished already") == 2


def test_a_corrupted_token_cache_is_rebuilt(tmp_path, monkeypatch):
    from diffformer.data import prepare_data
    from diffformer.data.text import TextTask

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i} of a small corpus about attention.\n" for i in range(200)))
    config = TextTask(task="text", path=corpus, tokenizer={"kind": "byte"}, seq_len=16)
    first = prepare_data(config, tmp_path / "cache")
    tokens = first.train_tokens.copy()
    (cache_file,) = (tmp_path / "cache" / "tokens").glob("*.bin")
    data = bytearray(cache_file.read_bytes())
    data[-10:] = b"\xff" * 10  # out-of-vocabulary ids in the body; the header is intact
    cache_file.write_bytes(bytes(data))
    rebuilt = prepare_data(config, tmp_path / "cache")
    assert (rebuilt.train_tokens == tokens).all() and int(rebuilt.val_tokens.max()) < 256


# --- faults of the system -----------------------------------------------------------------------------


def test_an_output_below_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "afile" / "run")
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]), 1, "afile")


def test_a_cache_path_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("DIFFFORMER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "corpus.txt").write_text("some text about attention\n" * 200)
    recipe = {**BASE, "data": {"task": "text", "path": "corpus.txt", "tokenizer": {"kind": "byte"}, "seq_len": 16}}
    _write_recipe(tmp_path / "recipe.yaml", recipe, tmp_path / "run")
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]), 1, str(tmp_path / "cache"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("target", "message"),
    [("/dev/full", "No space left on device"), ("{tmp}/missing/schema.json", "No such file or directory")],
    ids=["full disk", "missing folder"],
)
def test_schema_output_errors_are_one_line(target, message, tmp_path):
    _refused(runner.invoke(app, ["schema", "-o", target.format(tmp=tmp_path)]), 1, message)


@pytest.mark.parametrize("command", ["probe", "compare"])
def test_an_output_folder_that_is_a_file_is_one_line(command, run, trained, tmp_path):
    (tmp_path / "taken").write_text("mine")
    arguments = {"probe": [str(run), "--samples", "2"], "compare": [str(trained), str(run)]}[command]
    _refused(runner.invoke(app, [command, *arguments, "-o", str(tmp_path / "taken")]), 1, "taken")
    assert (tmp_path / "taken").read_text() == "mine"


# --- data ----------------------------------------------------------------------------------------------

DATA_CASES = [
    ("missing file", lambda d: None, {"path": "absent.txt"}, "absent.txt does not exist"),
    ("an empty folder", lambda d: (d / "folder.txt").mkdir(), {"path": "folder.txt"}, "holds no .txt, .jsonl"),
    ("an empty file", lambda d: (d / "empty.txt").write_text(""), {"path": "empty.txt"}, "empty.txt is empty"),
    ("only whitespace", lambda d: (d / "blank.txt").write_text("\n  \n\n"), {"path": "blank.txt"}, "contains no text"),
    (
        "not UTF-8",
        lambda d: (d / "latin.txt").write_bytes(b"caf\xe9 au lait\n" * 50),
        {"path": "latin.txt"},
        "is not UTF-8 text",
    ),
    ("unsupported type", lambda d: (d / "notes.docx").write_text("x"), {"path": "notes.docx"}, "unsupported type"),
    (
        "missing column",
        lambda d: (d / "rows.jsonl").write_text('{"body": "some text"}\n' * 50),
        {"path": "rows.jsonl"},
        "has no column 'text'",
    ),
    (
        "too short",
        lambda d: (d / "short.txt").write_text("a b c\n" * 3),
        {"path": "short.txt"},
        "fewer than seq_len + 2",
    ),
    (
        "missing tokenizer",
        lambda d: (d / "c.txt").write_text("text\n" * 99),
        {"path": "c.txt", "tokenizer": {"kind": "file", "path": "tok.json"}},
        "tokenizer file",
    ),
    (
        "tokenizer not JSON",
        lambda d: [(d / "c.txt").write_text("text\n" * 99), (d / "tok.json").write_text("{x")],
        {"path": "c.txt", "tokenizer": {"kind": "file", "path": "tok.json"}},
        "is not a tokenizers JSON file",
    ),
    (
        "tokenizer is a folder",
        lambda d: [(d / "c.txt").write_text("text\n" * 99), (d / "tok.json").mkdir()],
        {"path": "c.txt", "tokenizer": {"kind": "file", "path": "tok.json"}},
        "is a folder; expected a tokenizer.json",
    ),
    (
        "hub dataset offline",
        lambda d: None,
        {"dataset": "no-such-org/no-such-data"},
        "dataset 'no-such-org/no-such-data'",
    ),
]


@pytest.mark.parametrize(("case", "setup", "data", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_unusable_data_is_one_line_and_no_run_folder(case, setup, data, message, tmp_path):
    setup(tmp_path)
    recipe = {**BASE, "data": {"task": "text", "tokenizer": {"kind": "byte"}, "seq_len": 16, **data}}
    _write_recipe(tmp_path / "recipe.yaml", recipe, tmp_path / "run")
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]), 2, message)
    assert not (tmp_path / "run").exists()


# --- probe and eval options -----------------------------------------------------------------------------

OPTION_CASES = [
    ("probe", ["--lengths", ""], "--lengths must be positive numbers (got none)"),
    ("probe", ["--lengths", "abc"], "--lengths expects comma-separated numbers"),
    ("probe", ["--lengths", "0"], "--lengths must be positive"),
    ("probe", ["--lengths", "-5"], "--lengths must be positive"),
    ("probe", ["--depths", ""], "--depths needs at least one depth"),
    ("probe", ["--depths", "1.5"], "--depths must lie in [0, 1]"),
    ("probe", ["--depths", "x"], "--depths expects comma-separated numbers"),
    ("probe", ["-P", "telepathy"], "unknown probe 'telepathy'"),
    ("probe", ["--samples", "0"], "Invalid value for '--samples'"),
    ("probe", ["--samples", "many"], "Invalid value for '--samples'"),
    ("probe", ["--batch-size", "0"], "Invalid value for '--batch-size'"),
    ("probe", ["--prompt-seed", "-1"], "Invalid value for '--prompt-seed'"),
    ("probe", ["--device", "tpu"], "--device 'tpu' is not a device"),
    ("probe", ["--device", "cuda:7"], "--device cuda:7"),
    ("probe", ["--telepathy"], "No such option: --telepathy"),
    ("eval", ["--split", "test"], "--split must be val or train (got 'test')"),
    ("eval", ["--batches", "0"], "Invalid value for '--batches'"),
    ("eval", ["--batch-size", "-1"], "Invalid value for '--batch-size'"),
    ("eval", ["--data-seed", "-3"], "Invalid value for '--data-seed'"),
    ("eval", ["--device", "bogus"], "--device 'bogus' is not a device"),
    ("eval", ["--set", "train.steps=3"], "only data.* keys can be changed here"),
    ("eval", ["--set", "data.seq_len=abc"], "data.seq_len"),
    ("eval", ["--set", "data.seq_len=0"], "seq_len must be a positive integer"),
    ("eval", ["--set", "data.seq_len=4"], "seq_len 4 is too short for 3 pairs"),
    ("eval", ["--set", "data.task=bogus"], "unknown value 'bogus'"),
    ("eval", ["--set", "data.vocab_size=yes"], "data.vocab_size: expected a number"),
    ("eval", ["--set", "data.seq_len"], "--set expects KEY=VALUE"),
]


@pytest.mark.parametrize(
    ("command", "arguments", "message"), OPTION_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in OPTION_CASES]
)
def test_bad_probe_and_eval_options_are_one_line(command, arguments, message, run):
    before = _snapshot(run)
    _refused(runner.invoke(app, [command, str(run), *arguments]), 2, message)
    assert _snapshot(run) == before


def test_json_output_reports_errors_as_json(run):
    result = runner.invoke(app, ["probe", str(run), "--json", "--lengths", "abc"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "error": "--lengths expects comma-separated numbers, e.g. 128,256,512 (got 'abc')",
        "exit_code": 2,
    }


def test_json_output_is_strict_json(run):
    result = runner.invoke(app, ["eval", str(run), "--json", "--batches", "1", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "NaN" not in result.stdout, "one sequence has no standard error; strict JSON says null"
    assert json.loads(result.stdout)["metrics"]["loss_se"] is None


def test_a_gpu_asked_for_on_a_machine_without_one(run):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for command in ("eval", "probe"):
        _refused(runner.invoke(app, [command, str(run), "--device", "cuda"]), 2, "no CUDA device is available")


def test_output_in_a_recipe_is_relative_to_the_recipe_file(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text(yaml.safe_dump({**BASE, "output": "out/run"}))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "recipes/r.yaml"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "recipes" / "out" / "run" / "summary.json").is_file() and not (tmp_path / "out").exists()
