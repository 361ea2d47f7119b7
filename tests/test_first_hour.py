"""A researcher's first hour (issue 25): what the tool prints off a terminal, what sample shows, MFU, and
what a number rests on (unfinished runs, probe cells outside the training layout)."""

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from diffformer.cli import app

RECIPE = """
name: first-hour
seed: 3
model: {d_model: 32, n_layers: 2, n_heads: 2, max_seq_len: 64}
data: {task: mqar, vocab_size: 32, num_pairs: 4, seq_len: 24}
train: {steps: 8, batch_size: 4, lr: 3.0e-3, warmup_steps: 2, log_every: 2, checkpoint_every: 4}
eval: {every: 4, batches: 1}
"""


def _cli(*args, **env):
    """The CLI as a user runs it with its output going to a pipe (not a terminal)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environment.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "diffformer", *args], capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first-hour")
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE + f"output: {folder / 'run'}\n")
    trained = _cli("train", str(recipe))
    assert trained.returncode == 0, trained.stderr
    return folder / "run", trained


def test_training_off_a_terminal_prints_a_plain_line_per_logged_step(run):
    _, trained = run
    lines = [line for line in trained.stderr.splitlines() if " step " in line and "loss" in line]  # progress: stderr
    steps = [int(re.search(r"step (\d+)/8", line).group(1)) for line in lines]
    # A run this short finishes within the quiet time: only the last logged step is reported (a long one
    # reports every log_every steps once it has run QUIET_SECONDS).
    assert steps[-1] == 8 and set(steps) <= {2, 4, 6, 8}
    for line in lines:
        assert re.search(r"loss \d+\.\d{4}  lr \d\.\d\de-\d\d  [\d,]+ tok/s  MFU n/a  ETA \d+ s", line), line


def test_plain_progress_lines_come_every_tenth_once_work_outlasts_the_quiet_time(monkeypatch):
    import io

    import diffformer.plain_progress as plain

    monkeypatch.setattr(plain, "QUIET_SECONDS", 0.0)
    stream = io.StringIO()
    lines = plain.PlainLines("tokenizing", 200, stream=stream)
    for _ in range(200):
        lines.advance(1)
    shown = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in shown] == [f"tokenizing: {n:,}/200" for n in range(20, 201, 20)]
    assert all(", ETA " in line for line in shown[:-1]) and shown[-1] == "tokenizing: 200/200 (100%)"
    monkeypatch.setattr(plain, "QUIET_SECONDS", 3600.0)
    quiet = io.StringIO()
    instant = plain.PlainLines("tokenizing", 10, stream=quiet)
    instant.advance(10)
    assert quiet.getvalue() == "", "work over within the quiet time prints nothing"
    assert plain.duration_text(5) == "5 s" and plain.duration_text(185) == "3 min 05 s"


def test_the_readme_sample_example_keeps_prompt_and_continuation_apart(run):
    folder, _ = run
    sampled = _cli("sample", str(folder), "-p", "3 17 5", "-n", "8")
    assert sampled.returncode == 0, sampled.stderr
    prompt, continuation = sampled.stdout.strip().split(" | ")
    assert prompt == "3 17 5" and len(continuation.split()) == 8


def test_piped_tables_are_not_cut_to_eighty_columns(run):
    folder, _ = run
    shown = _cli("eval", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and "exact match" in shown.stdout and "rests on" in shown.stdout


def test_an_unfinished_checkpoint_says_so_in_eval_probe_compare_and_the_model_card(run, tmp_path):
    folder, _ = run
    early = folder / "checkpoints" / "step-00000004" / "model.safetensors"
    runner = CliRunner()
    evaluated = runner.invoke(app, ["eval", str(early), "--json"])
    assert json.loads(evaluated.output)["unfinished"] == "unfinished: step 4 of 8"
    assert "unfinished: step 4 of 8" in runner.invoke(app, ["eval", str(early)]).output
    assert json.loads(runner.invoke(app, ["eval", str(folder), "--json"]).output)["unfinished"] is None
    probed = json.loads(
        runner.invoke(app, ["probe", str(early), "--samples", "2", "-o", str(tmp_path / "p"), "--json"]).output
    )
    assert any(note.startswith("unfinished: step 4 of 8") for note in probed["notes"])
    compared = runner.invoke(app, ["compare", str(folder), str(early), "-o", str(tmp_path / "c"), "--json"])
    assert any("unfinished: step 4 of 8" in line for line in json.loads(compared.output)["warnings"])
    exported = runner.invoke(app, ["export", str(early), str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    assert "Unfinished: step 4 of 8" in (tmp_path / "hf" / "README.md").read_text()


def test_probe_cells_outside_the_training_layout_are_named(run, tmp_path):
    folder, _ = run
    probed = CliRunner().invoke(
        app, ["probe", str(folder), "--lengths", "24,48", "--samples", "2", "-o", str(tmp_path), "--json"]
    )
    notes = json.loads(probed.output)["notes"]
    assert any(note.startswith("lengths 48 are longer than any training sequence (24)") for note in notes)
    assert any("pairs first (data.depth: null)" in note for note in notes)


def test_help_texts_name_values_in_words_and_every_command_that_reads_data_takes_set():
    import typer

    commands = typer.main.get_command(app).commands
    runner = CliRunner()
    for name in commands:
        shown = runner.invoke(app, [name, "--help"]).output
        for typer_word in ("<bool>", "<list[", "<int>", "<str>", "<float>", "<path>"):
            assert typer_word not in shown, f"diffformer {name} --help shows {typer_word}"
    for name in ("train", "eval", "probe", "sample", "attention"):
        assert "--set" in runner.invoke(app, [name, "--help"]).output, name


def test_probe_sample_and_attention_read_other_data_settings_with_set(run, tmp_path):
    folder, _ = run
    runner = CliRunner()
    probed = runner.invoke(
        app,
        [
            "probe",
            str(folder),
            "--set",
            "data.num_pairs=2",
            "--lengths",
            "24",
            "--samples",
            "2",
            "-o",
            str(tmp_path / "p"),
            "--json",
        ],
    )
    assert probed.exit_code == 0, probed.output
    assert "probed on other data settings than trained: data.num_pairs=2" in json.loads(probed.output)["notes"]
    shown = runner.invoke(app, ["sample", str(folder), "--example", "1", "--set", "data.seq_len=32", "--json"])
    assert len(json.loads(shown.output)["examples"][0]) == 32
    drawn = runner.invoke(
        app,
        ["attention", str(folder), "--example", "1", "--set", "data.seq_len=32", "-o", str(tmp_path / "a"), "--json"],
    )
    assert drawn.exit_code == 0, drawn.output
    bad = runner.invoke(app, ["sample", str(folder), "--example", "1", "--set", "data.nonsense=3"])
    assert bad.exit_code != 0 and "data.nonsense" in bad.output and "Traceback" not in bad.output


def test_a_streamed_sample_shows_whole_characters_only(monkeypatch, tmp_path):
    """A byte-level token can end inside a character ("é" is two bytes): the stream holds the partial
    character back instead of printing "\\ufffd", and the continuation is whole in the end."""
    from types import SimpleNamespace

    import torch

    import diffformer.sampling as sampling
    from diffformer.data.tokenizers import ByteTokenizer, build_tokenizer
    from diffformer.generation import SamplingSettings

    tokenizer = build_tokenizer(ByteTokenizer(kind="byte"), tmp_path, "key", [], 0)
    wanted = tokenizer.encode("café ok").ids  # é: two byte-level tokens
    assert len(wanted) == len("café ok") + 1

    def scripted_generate(model, prompt, max_new_tokens, settings, on_token):
        for token in wanted[:max_new_tokens]:
            on_token(torch.tensor([token]))

    monkeypatch.setattr(sampling, "generate", scripted_generate)
    model = torch.nn.Linear(1, 1)
    model.config = SimpleNamespace(vocab_size=tokenizer.get_vocab_size())
    loaded = SimpleNamespace(model=model, check_length=lambda n: None)
    pieces = []
    (result,) = sampling.sample_text(
        loaded, tokenizer, "x", len(wanted), SamplingSettings(), on_text=lambda i, t: pieces.append(t)
    )
    assert all("\ufffd" not in piece for piece in pieces) and "".join(pieces) == "café ok" == result.continuation
