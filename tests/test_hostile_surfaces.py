"""Hostile input and faults on the surfaces added since the first catalogue (issue 26): sample, attention,
export, text sources, trackers, run files, sweeps. Same form as tests/test_hostile.py: a non-zero exit code,
exactly one `error:` line, no traceback, and everything already written unchanged — or, where that is the
right answer, correct behaviour (temperature 0 is greedy, top-p 0 keeps the most likely token)."""

import errno
import json
import os
import shutil

import pytest
import yaml
from safetensors import SafetensorError
from test_hostile import BASE, _refused, _snapshot, _write_recipe, runner

from diffformer.cli import app

TEXT_BASE = {
    **BASE,
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 32, "position": "learned"},
    "data": {"task": "text", "path": "corpus.txt", "tokenizer": {"kind": "byte"}, "seq_len": 32},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny synthetic run (MQAR, rotary) and a tiny text run (bytes, learned positions up to 32)."""
    root = tmp_path_factory.mktemp("surfaces")
    _write_recipe(root / "mqar.yaml", BASE, root / "mqar")
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    _write_recipe(root / "text.yaml", TEXT_BASE, root / "text")
    for name in ("mqar", "text"):
        result = runner.invoke(app, ["train", str(root / f"{name}.yaml")])
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copies(runs, tmp_path):
    for name in ("mqar", "text"):
        shutil.copytree(runs / name, tmp_path / name)
    return tmp_path


def _invoke_unchanged(root, arguments, code, message):
    before = _snapshot(root)
    _refused(runner.invoke(app, arguments), code, message)
    assert _snapshot(root) == before


# --- sample: every option at its bounds and beyond ---------------------------------------------

SAMPLE_REFUSALS = [
    ("seed of 2^70", ["text", "-p", "hi", "-n", "2", "--seed", str(2**70)], 2, "--seed"),
    ("negative seed", ["text", "-p", "hi", "-n", "2", "--seed", "-1"], 2, "--seed"),
    ("negative temperature", ["text", "-p", "hi", "-n", "2", "--temperature", "-0.5"], 2, "--temperature"),
    ("temperature not a number", ["text", "-p", "hi", "-n", "2", "--temperature", "hot"], 2, "--temperature"),
    ("top-k zero", ["text", "-p", "hi", "-n", "2", "--top-k", "0"], 2, "--top-k"),
    ("top-p above one", ["text", "-p", "hi", "-n", "2", "--top-p", "1.5"], 2, "--top-p"),
    ("top-p negative", ["text", "-p", "hi", "-n", "2", "--top-p", "-0.1"], 2, "--top-p"),
    ("zero new tokens", ["text", "-p", "hi", "-n", "0"], 2, "--max-new-tokens"),
    ("zero samples", ["text", "-p", "hi", "-n", "2", "--samples", "0"], 2, "--samples"),
    ("a million samples", ["text", "-p", "hi", "-n", "2", "--samples", "1000000"], 2, "--samples"),
    ("beyond learned positions", ["text", "-p", "hi", "-n", "40"], 2, "beyond this model's learned positions"),
    ("prompt beyond learned positions", ["text", "-p", "x" * 40, "-n", "1"], 2, "length 41 is beyond"),
    ("prompt and prompt file", ["text", "-p", "hi", "--prompt-file", "p.txt", "-n", "2"], 2, "not both"),
    ("prompt file missing", ["text", "--prompt-file", "absent.txt", "-n", "2"], 1, "No such file or directory"),
    ("prompt file is a folder", ["text", "--prompt-file", ".", "-n", "2"], 1, "Is a directory"),
    ("prompt file not UTF-8", ["text", "--prompt-file", "latin.txt", "-n", "2"], 2, "is not UTF-8 text"),
    ("prompt file binary", ["text", "--prompt-file", "binary.bin", "-n", "2"], 2, "is not UTF-8 text"),
    ("ids prompt with words", ["mqar", "-p", "three four", "-n", "2"], 2, "reads token ids"),
    ("ids prompt outside the vocabulary", ["mqar", "-p", "3 999", "-n", "2"], 2, "between 0 and 31"),
    ("negative id", ["mqar", "-p", "3 -4", "-n", "2"], 2, "between 0 and 31"),
    ("empty ids prompt", ["mqar", "-p", "", "-n", "2"], 2, "token ids"),
    ("ids prompt of spaces", ["mqar", "-p", "   ", "-n", "2"], 2, "token ids"),
    ("negative example", ["mqar", "--example", "-1"], 2, "--example"),
    ("example not a number", ["mqar", "--example", "first"], 2, "--example"),
    ("unknown device", ["text", "-p", "hi", "-n", "2", "--device", "tpu"], 2, "tpu"),
    ("--set of an unknown data key", ["mqar", "--example", "1", "--set", "data.colour=red"], 2, "data.colour"),
    ("--set without a value", ["mqar", "--example", "1", "--set", "data.seq_len"], 2, "--set expects KEY=VALUE"),
    ("not a run", ["nowhere", "-p", "hi"], 2, "nowhere does not exist"),
]


@pytest.mark.parametrize(("case", "arguments", "code", "message"), SAMPLE_REFUSALS, ids=[c[0] for c in SAMPLE_REFUSALS])
def test_sample_refuses_in_one_line(case, arguments, code, message, copies, monkeypatch):
    monkeypatch.chdir(copies)
    (copies / "p.txt").write_text("hi")
    (copies / "latin.txt").write_bytes("café".encode("latin-1"))
    (copies / "binary.bin").write_bytes(bytes(range(128, 256)))
    _invoke_unchanged(copies, ["sample", *arguments], code, message)


SAMPLE_WORKS = [
    ("temperature 0 is greedy", ["--temperature", "0"]),
    ("top-p 0 keeps the most likely token", ["--top-p", "0"]),
    ("a tiny top-p", ["--top-p", "1e-12"]),
    ("a vanishing temperature", ["--temperature", "1e-30"]),
    ("a huge temperature", ["--temperature", "1e30"]),
    ("top-k above the vocabulary", ["--top-k", "100000"]),
    ("the largest seed", ["--seed", str(2**32 - 1)]),
]


@pytest.mark.parametrize(("case", "options"), SAMPLE_WORKS, ids=[c[0] for c in SAMPLE_WORKS])
def test_sample_settings_at_their_bounds_work(case, options, copies):
    result = runner.invoke(app, ["sample", str(copies / "text"), "-p", "the", "-n", "4", *options, "--json"])
    assert result.exit_code == 0, result.output
    (sampled,) = json.loads(result.stdout)["samples"]
    assert len(sampled["tokens"]) == 4


def test_greedy_settings_agree(copies):
    """temperature 0, top-p 0 and a vanishing temperature all take the most likely token."""
    outputs = []
    for options in (["--temperature", "0"], ["--top-p", "0"], ["--temperature", "1e-30"]):
        result = runner.invoke(app, ["sample", str(copies / "text"), "-p", "the", "-n", "6", *options, "--json"])
        outputs.append(json.loads(result.stdout)["samples"][0]["tokens"])
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize(
    ("case", "prompt"),
    [("empty text prompt", ""), ("control characters", "\x00\x01\x02"), ("emoji", "🙂🙂"), ("CRLF", "a\r\nb")],
)
def test_odd_text_prompts_are_encoded_and_continued(case, prompt, copies):
    result = runner.invoke(app, ["sample", str(copies / "text"), "-p", prompt, "-n", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["samples"][0]["tokens"]) == 3


def test_a_non_string_prompt_in_the_library_is_one_clear_error(copies):
    from diffformer.errors import RecipeError
    from diffformer.generation import SamplingSettings
    from diffformer.sampling import load_for_sampling, sample_text

    loaded, tokenizer = load_for_sampling(copies / "text", "cpu")
    with pytest.raises(RecipeError, match="a prompt is text"):
        sample_text(loaded, tokenizer, 123, 2, SamplingSettings())


# --- attention ---------------------------------------------------------------------------------------

ATTENTION_REFUSALS = [
    ("neither prompt nor example", ["mqar"], 2, "give exactly one of"),
    ("both prompt and example", ["mqar", "-p", "3 4", "--example", "1"], 2, "give exactly one of"),
    ("unknown format", ["mqar", "--example", "1", "--format", "gif"], 2, "--format must be one of"),
    ("negative example", ["mqar", "--example", "-2"], 2, "--example"),
    ("ids prompt with words", ["mqar", "-p", "a b"], 2, "reads token ids"),
    ("ids outside the vocabulary", ["mqar", "-p", "3 64"], 2, "between 0 and 31"),
    ("text prompt beyond learned positions", ["text", "-p", "x" * 40], 2, "beyond this model's learned positions"),
    ("output is a file", ["mqar", "--example", "1", "-o", "file.txt"], 1, "file.txt"),
    ("output below a file", ["mqar", "--example", "1", "-o", "file.txt/maps"], 1, "file.txt"),
    ("--set of an unknown data key", ["mqar", "--example", "1", "--set", "data.colour=red"], 2, "data.colour"),
    ("unknown device", ["mqar", "--example", "1", "--device", "tpu"], 2, "tpu"),
    ("not a run", ["nowhere", "--example", "1"], 2, "nowhere does not exist"),
]


@pytest.mark.parametrize(
    ("case", "arguments", "code", "message"), ATTENTION_REFUSALS, ids=[c[0] for c in ATTENTION_REFUSALS]
)
def test_attention_refuses_in_one_line(case, arguments, code, message, copies, monkeypatch):
    monkeypatch.chdir(copies)
    (copies / "file.txt").write_text("keep me")
    _invoke_unchanged(copies, ["attention", *arguments], code, message)
    assert (copies / "file.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("case", "arguments"),
    [("a far example index", ["mqar", "--example", str(10**12)]), ("an empty text prompt", ["text", "-p", ""])],
)
def test_attention_at_its_bounds_draws(case, arguments, copies):
    run, *rest = arguments
    result = runner.invoke(app, ["attention", str(copies / run), *rest, "-o", str(copies / "maps"), "--json"])
    assert result.exit_code == 0, result.output
    assert (copies / "maps" / "attention.html").is_file()


# --- export ------------------------------------------------------------------------------------------


def test_export_into_a_file_a_full_folder_or_below_a_file_is_one_line(copies):
    (copies / "file.txt").write_text("x")
    (copies / "full").mkdir()
    (copies / "full" / "keep.txt").write_text("mine")
    for target, message in (("file.txt", "is a file"), ("full", "is not empty"), ("file.txt/hf", "file.txt")):
        code = 1 if "/" in target else 2
        _invoke_unchanged(copies, ["export", str(copies / "mqar"), str(copies / target)], code, message)


def test_export_into_a_full_disk_is_one_line_and_leaves_nothing_behind(copies, monkeypatch):
    import diffformer.hf.export as export

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(export, "save_file", full_disk)
    _invoke_unchanged(copies, ["export", str(copies / "mqar"), str(copies / "hf")], 1, "could not write")
    assert not (copies / "hf").exists() and not any(p.name.startswith(".") for p in copies.iterdir())


def test_a_checkpoint_write_into_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(copies, monkeypatch):
    import diffformer.checkpoint as checkpoint

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    recipe = yaml.safe_load((copies / "mqar" / "recipe.yaml").read_text())
    recipe["train"]["steps"] = 8
    recipe["output"] = str(copies / "mqar")
    (copies / "longer.yaml").write_text(yaml.safe_dump(recipe))
    weights = (copies / "mqar" / "model.safetensors").read_bytes()
    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    result = runner.invoke(app, ["train", str(copies / "longer.yaml"), "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write" in errors[0] and "StorageFull" in errors[0]
    assert (copies / "mqar" / "model.safetensors").read_bytes() == weights
    monkeypatch.undo()
    resumed = runner.invoke(app, ["train", str(copies / "longer.yaml"), "--resume"])
    assert resumed.exit_code == 0, resumed.output


def test_an_exported_learned_position_model_refuses_a_prompt_longer_than_its_positions(copies):
    transformers = pytest.importorskip("transformers")
    import torch

    assert runner.invoke(app, ["export", str(copies / "text"), str(copies / "hf")]).exit_code == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(str(copies / "hf"), trust_remote_code=True)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(torch.zeros(1, 40, dtype=torch.long))


# --- text sources ------------------------------------------------------------------------------------


def _jsonl(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


TEXT_SOURCE_REFUSALS = [
    ("jsonl of numbers", {"rows.jsonl": _jsonl([{"text": 5}] * 60)}, "rows.jsonl", "holds int64 values, not text"),
    ("jsonl of lists", {"rows.jsonl": _jsonl([{"text": [1, 2]}] * 60)}, "rows.jsonl", "holds list values"),
    ("jsonl of nulls", {"rows.jsonl": _jsonl([{"text": None}] * 60)}, "rows.jsonl", "holds null values"),
    ("jsonl of objects", {"rows.jsonl": _jsonl([{"text": {"a": 1}}] * 60)}, "rows.jsonl", "not text"),
    (
        "jsonl mixing text and numbers",
        {"rows.jsonl": _jsonl([{"text": "a"}, {"text": 3}] * 30)},
        "rows.jsonl",
        "rows.jsonl",
    ),
    (
        "jsonl with a broken line",
        {"rows.jsonl": '{"text": "a"}\n{"text": \n'},
        "rows.jsonl",
        "could not be read as json",
    ),
    ("jsonl of empty rows", {"rows.jsonl": _jsonl([{"text": ""}] * 60)}, "rows.jsonl", "contains no text"),
    ("jsonl without the column", {"rows.jsonl": _jsonl([{"body": "x"}] * 60)}, "rows.jsonl", "has no column 'text'"),
    ("json that is one string", {"rows.json": json.dumps("just text")}, "rows.json", "rows.json"),
    ("csv without the column", {"rows.csv": "body\nhello\n" * 30}, "rows.csv", "has no column 'text'"),
    ("csv of numbers", {"rows.csv": "text\n" + "5\n" * 60}, "rows.csv", "holds int64 values"),
    ("a 0-byte txt", {"empty.txt": ""}, "empty.txt", "is empty"),
    ("a txt of blank lines", {"blank.txt": "\n\n  \n"}, "blank.txt", "contains no text"),
    ("a latin-1 txt", {"latin.txt": "caf\xe9\n".encode("latin-1") * 60}, "latin.txt", "is not UTF-8 text"),
    ("UTF-16", {"wide.txt": ("hello world\n" * 60).encode("utf-16")}, "wide.txt", "is not UTF-8 text"),
    (
        "a folder with one latin-1 file",
        {"folder/a.txt": "hello\n" * 60, "folder/b.txt": b"caf\xe9\n" * 60},
        "folder",
        "b.txt",
    ),
    ("an empty folder", {"folder/.keep": ""}, "folder", "holds no"),
    ("a folder of unsupported files", {"folder/a.docx": "x"}, "folder", "holds no"),
    ("a glob matching nothing", {}, "*.nothing", "matches no file"),
    ("a parquet that is not parquet", {"rows.parquet": "not parquet"}, "rows.parquet", "rows.parquet"),
    ("an unsupported suffix", {"notes.rtf": "x"}, "notes.rtf", "unsupported type"),
]


@pytest.mark.parametrize(
    ("case", "files", "path", "message"), TEXT_SOURCE_REFUSALS, ids=[c[0] for c in TEXT_SOURCE_REFUSALS]
)
def test_unusable_text_sources_are_one_line_and_no_run_folder(case, files, path, message, tmp_path):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        target = tmp_path / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    recipe = {**TEXT_BASE, "data": {**TEXT_BASE["data"], "path": path, "seq_len": 16}}
    _write_recipe(tmp_path / "recipe.yaml", recipe, tmp_path / "run")
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]), 2, message)
    assert not (tmp_path / "run").exists()


TEXT_SOURCE_WORKS = [
    ("CRLF line ends", {"crlf.txt": "the quick brown fox\r\n" * 60}, "crlf.txt"),
    ("no trailing newline", {"end.txt": "the quick brown fox " * 60}, "end.txt"),
    ("one huge line", {"huge.txt": "word " * 20000}, "huge.txt"),
    ("a UTF-8 BOM", {"bom.txt": "\ufeff" + "the quick brown fox\n" * 60}, "bom.txt"),
    ("jsonl with some empty rows", {"rows.jsonl": _jsonl([{"text": "a fox " * 20}, {"text": ""}] * 20)}, "rows.jsonl"),
    ("jsonl with some nulls", {"rows.jsonl": _jsonl([{"text": "a fox " * 20}, {"text": None}] * 20)}, "rows.jsonl"),
    ("a folder of txt and jsonl", {"f/a.txt": "a fox " * 100, "f/b.jsonl": _jsonl([{"text": "b fox " * 30}] * 9)}, "f"),
    ("a glob over two files", {"a.txt": "a fox " * 100, "b.txt": "b fox " * 100}, "*.txt"),
]


@pytest.mark.parametrize(("case", "files", "path"), TEXT_SOURCE_WORKS, ids=[c[0] for c in TEXT_SOURCE_WORKS])
def test_awkward_but_valid_text_sources_train(case, files, path, tmp_path):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    recipe = {**TEXT_BASE, "data": {**TEXT_BASE["data"], "path": path, "seq_len": 16}}
    recipe["train"] = {**BASE["train"], "steps": 2, "checkpoint_every": 2}
    recipe["eval"] = {"every": 2, "batches": 1}
    _write_recipe(tmp_path / "recipe.yaml", recipe, tmp_path / "run")
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 0, result.output


# --- run files, trackers, folders --------------------------------------------------------------------

CONTROL_CHARACTER = '{"steps": "a\x01b"}'
DAMAGED = [
    ("summary.json", CONTROL_CHARACTER, "summary.json is not valid JSON"),
    ("run.json", CONTROL_CHARACTER, "run.json is not valid JSON"),
    ("effective.json", CONTROL_CHARACTER, "effective.json is not valid JSON"),
    ("metrics.jsonl", '{"step": 1, "loss": "a\x01"}\n{"step": 2}\n', "metrics.jsonl, line 1"),
    ("summary.json", b"\xff\xfe{}", "summary.json is not valid JSON"),
]


@pytest.mark.parametrize(("name", "content", "message"), DAMAGED, ids=[f"{c[0]}: {c[2]}" for c in DAMAGED])
@pytest.mark.parametrize("command", ["compare", "eval", "probe", "export"])
def test_damaged_run_files_are_named_by_every_reader(name, content, message, command, copies, runs):
    target = copies / "mqar" / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    arguments = {
        "compare": ["compare", str(runs / "mqar"), str(copies / "mqar"), "-o", str(copies / "c")],
        "eval": ["eval", str(copies / "mqar")],
        "probe": ["probe", str(copies / "mqar"), "--samples", "1", "--lengths", "24"],
        "export": ["export", str(copies / "mqar"), str(copies / "hf")],
    }[command]
    before = _snapshot(copies / "mqar")
    result = runner.invoke(app, arguments)
    if result.exit_code == 0:  # a reader that does not need the damaged file reads what it needs ...
        assert "Traceback" not in result.output
    else:  # ... and one that does names it in one line
        _refused(result, result.exit_code, message)
    after = _snapshot(copies / "mqar")
    assert {k: after.get(k) for k in before} == before, "nothing already written changed"


def test_a_tracker_that_cannot_write_its_folder_is_one_line(tmp_path):
    """The TensorBoard folder of a run is a file by the time it resumes: one line naming it, the file kept."""
    recipe = {**BASE, "trackers": {"tensorboard": True}}
    _write_recipe(tmp_path / "recipe.yaml", recipe, tmp_path / "run")
    assert runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]).exit_code == 0
    shutil.rmtree(tmp_path / "run" / "tensorboard")
    (tmp_path / "run" / "tensorboard").write_text("a file where the log folder goes")
    longer = {**recipe, "train": {**BASE["train"], "steps": 6}}
    _write_recipe(tmp_path / "recipe.yaml", longer, tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml"), "--resume"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "tensorboard" in errors[0], result.stderr
    assert _snapshot(tmp_path / "run") == before


def test_a_resume_does_not_write_through_a_symlink_in_the_run_folder(copies):
    """A symlinked metrics file pointing outside the run: the resume refuses in one line naming it, and the
    file it points to is untouched."""
    outside = copies / "outside.jsonl"
    shutil.move(str(copies / "mqar" / "metrics.jsonl"), outside)
    os.symlink(outside, copies / "mqar" / "metrics.jsonl")
    before = outside.read_bytes()
    recipe = yaml.safe_load((copies / "mqar" / "recipe.yaml").read_text())
    recipe["train"]["steps"] = 6
    recipe["output"] = str(copies / "mqar")
    (copies / "longer.yaml").write_text(yaml.safe_dump(recipe))
    _refused(runner.invoke(app, ["train", str(copies / "longer.yaml"), "--resume"]), 2, "symbolic link")
    assert outside.read_bytes() == before


def test_errno_of_a_full_disk_is_named(tmp_path, monkeypatch):
    """A full disk met by an ordinary write (the metrics log) is the system's words and the path."""
    from diffformer.run_folder import RunFolder

    def full(self, record, name="metrics.jsonl"):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / name))

    monkeypatch.setattr(RunFolder, "append_log", full)
    _write_recipe(tmp_path / "recipe.yaml", BASE, tmp_path / "run")
    _refused(runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")]), 1, "No space left on device")


# --- processes killed, and two at once --------------------------------------------------------------

SWEEP = {
    **BASE,
    "name": "sweep",
    "train": {"steps": 20, "batch_size": 8, "log_every": 5, "checkpoint_every": 5},
    "eval": {"every": 20, "batches": 1},
    "variants": {"seed": [1, 2, 3]},
}


def _cli_process(arguments, cwd):
    import subprocess
    import sys

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "diffformer", *arguments],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a signal reaches the sweep's workers too
    )


def _variant_weights(root):
    from safetensors.torch import load_file

    return {p.parent.name: load_file(str(p)) for p in sorted(root.glob("seed=*/model.safetensors"))}


@pytest.fixture(scope="module")
def uninterrupted_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-reference")
    _write_recipe(root / "sweep.yaml", SWEEP, root / "out")
    process = _cli_process(["train", str(root / "sweep.yaml"), "--jobs", "2"], root)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return root / "out"


def _interrupt_once_a_variant_has_a_checkpoint(process, out, signal_number) -> None:
    import time

    from diffformer.run_folder import RunFolder

    deadline = time.time() + 300
    seen = {p.name for p in out.glob("seed=*") if RunFolder(p).complete_checkpoints()}
    while time.time() < deadline and process.poll() is None:  # until one more variant has a checkpoint
        done = {p.name for p in out.glob("seed=*") if RunFolder(p).complete_checkpoints()}
        if done - seen:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal_number)
    process.communicate(timeout=120)


def test_a_parallel_sweep_interrupted_then_killed_then_rerun_skips_finished_and_resumes_the_rest(
    uninterrupted_sweep, tmp_path
):
    """--jobs 2: Ctrl-C (SIGINT to the whole process group) mid-way, a rerun, SIGKILL mid-way, a rerun: every
    variant ends with the weights of the uninterrupted sweep and each step once in its metrics."""
    import signal

    _write_recipe(tmp_path / "sweep.yaml", SWEEP, tmp_path / "out")
    arguments = ["train", str(tmp_path / "sweep.yaml"), "--jobs", "2"]
    for signal_number in (signal.SIGINT, signal.SIGKILL):
        _interrupt_once_a_variant_has_a_checkpoint(_cli_process(arguments, tmp_path), tmp_path / "out", signal_number)
    rerun = _cli_process(arguments, tmp_path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "Traceback" not in out + err
    expected, got = _variant_weights(uninterrupted_sweep), _variant_weights(tmp_path / "out")
    assert expected.keys() == got.keys() == {f"seed={s}" for s in (1, 2, 3)}
    for variant in expected:
        for name, tensor in expected[variant].items():
            assert (got[variant][name] == tensor).all(), f"{variant}: {name} differs from the uninterrupted sweep"
        lines = (tmp_path / "out" / variant / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines]
        assert steps == sorted(set(steps)), f"{variant}: metrics.jsonl holds a step twice or out of order"


@pytest.mark.parametrize("command", ["probe", "compare"])
def test_two_probes_or_compares_on_one_run_at_once_end_whole(command, runs, tmp_path):
    """Both finish, or the later one is refused in one line; what is left is one whole, readable result."""
    shutil.copytree(runs / "mqar", tmp_path / "mqar")
    shutil.copytree(runs / "mqar", tmp_path / "other")
    arguments = {
        "probe": ["probe", str(tmp_path / "mqar"), "--samples", "4", "--lengths", "24,48"],
        "compare": ["compare", str(tmp_path / "mqar"), str(tmp_path / "other"), "-o", str(tmp_path / "cmp")],
    }[command]
    first, second = _cli_process(arguments, tmp_path), _cli_process(arguments, tmp_path)
    results = [p.communicate(timeout=300) + (p.returncode,) for p in (first, second)]
    for out, err, code in results:
        assert "Traceback" not in out + err
        if code != 0:
            assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    assert any(code == 0 for _, _, code in results)
    written = (
        tmp_path / "mqar" / "probes" / "probe.json" if command == "probe" else tmp_path / "cmp" / "comparison.json"
    )
    json.loads(written.read_text())  # whole JSON, not two writes interleaved
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".tmp-")], "no temporary left behind"


def test_sigkill_with_tracking_and_tensorboard_then_resume_matches_an_uninterrupted_run(tmp_path):
    import signal

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_training import _assert_same_run, _start, _wait_for_first_checkpoint

    recipe = {
        **BASE,
        "train": {"steps": 12, "batch_size": 8, "log_every": 1, "checkpoint_every": 3},
        "eval": {"every": 6, "batches": 1},
        "track": {"every": 4, "batch_size": 4},
        "trackers": {"tensorboard": True},
    }
    (tmp_path / "reference").mkdir()
    _write_recipe(tmp_path / "reference" / "r.yaml", recipe, tmp_path / "reference" / "run")
    _write_recipe(tmp_path / "r.yaml", recipe, tmp_path / "run")
    reference = _start(tmp_path / "reference", str(tmp_path / "reference" / "r.yaml"))
    assert reference.wait(timeout=300) == 0
    process = _start(tmp_path, str(tmp_path / "r.yaml"))
    _wait_for_first_checkpoint(tmp_path / "run")
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = _start(tmp_path, str(tmp_path / "r.yaml"), "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _assert_same_run(tmp_path / "run", tmp_path / "reference" / "run")
    dynamics = [(tmp_path / d / "dynamics.jsonl").read_text() for d in ("run", "reference/run")]
    assert dynamics[0] == dynamics[1]

    def events(run):
        accumulator = EventAccumulator(str(run / "tensorboard"))
        accumulator.Reload()
        kept = [t for t in accumulator.Tags()["scalars"] if not t.startswith(("train/tokens_per_sec", "train/elapsed"))]
        return {t: [(e.step, round(e.value, 5)) for e in accumulator.Scalars(t)] for t in kept}

    assert events(tmp_path / "run") == events(tmp_path / "reference" / "run")


@pytest.mark.parametrize(
    ("name", "content", "arguments", "message"),
    [
        ("dynamics.jsonl", '{"step": 0, "model": "\x01"}\n{"step": 1}\n', ["dynamics"], "dynamics.jsonl, line 1"),
        ("probes/probe.json", '{"checkpoint": "\x01"}', ["compare"], "probe.json is not valid JSON"),
        ("summary.json", '{"steps": "\x1f"}', ["compare"], "summary.json is not valid JSON"),
        ("run.json", '{"settings": "\x00"}', ["train"], "run.json is not valid JSON"),
    ],
    ids=["dynamics", "probe.json", "summary.json", "run.json on resume"],
)
def test_run_files_with_control_characters_are_named_as_damaged(name, content, arguments, message, copies, runs):
    run = copies / "mqar"
    (run / name).parent.mkdir(exist_ok=True)
    (run / name).write_text(content)
    command = arguments[0]
    full = {
        "dynamics": ["dynamics", str(run), "-o", str(copies / "d.png")],
        "compare": ["compare", str(runs / "mqar"), str(run), "-o", str(copies / "c")],
        "train": ["train", str(run)],
    }[command]
    _invoke_unchanged(run, full, 2, message)


def test_a_damaged_effective_json_changes_no_comparison(copies, runs):
    """compare derives each run's effective settings from its model, never from RUN/effective.json."""
    shutil.copytree(copies / "mqar", copies / "intact")
    (copies / "mqar" / "effective.json").write_text('{"a": "\x02"}')

    def fairness(run):
        result = runner.invoke(app, ["compare", str(runs / "mqar"), str(run), "-o", str(run) + "-c", "--json"])
        assert result.exit_code == 0, result.output
        return [r for r in json.loads(result.stdout)["rows"] if r["section"] == "fairness"]

    damaged, intact = fairness(copies / "mqar"), fairness(copies / "intact")
    assert damaged and damaged == intact
