"""`diffformer sample` and `diffformer attention` from the CLI: text and synthetic runs, every kind's maps,
the HTML page's data and script."""

import html.parser
import json
import shutil
import subprocess

import pytest
import torch
import yaml
from conftest import KINDS
from typer.testing import CliRunner

from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.model.attention import kind_entry
from diffformer.model.capture import Rows, capture_attention

runner = CliRunner()


def _train(tmp_path, name, data, kind="vanilla"):
    recipe = {
        "name": name,
        "output": str(tmp_path / name),
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64, "attention": {"kind": kind}},
        "data": data,
        "train": {"steps": 2, "batch_size": 4, "log_every": 1},
        "eval": {"every": 2, "batches": 1},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", str(tmp_path / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    return tmp_path / name


MQAR = {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "lines.txt").write_text("a line of text\nand another one\n" * 100)
    data = {"task": "text", "path": str(folder / "lines.txt"), "tokenizer": {"kind": "byte"}, "seq_len": 32}
    return _train(folder, "text", data)


def test_sample_streams_text_from_a_prompt_a_file_or_stdin(text_run, tmp_path):
    greedy = runner.invoke(app, ["sample", str(text_run), "-p", "a line", "-n", "10", "--temperature", "0"])
    assert greedy.exit_code == 0, greedy.output
    assert greedy.stdout.startswith("a line") and len(greedy.stdout) > len("a line")
    (tmp_path / "prompt.txt").write_text("and another")
    from_file = runner.invoke(app, ["sample", str(text_run), "--prompt-file", str(tmp_path / "prompt.txt"), "--json"])
    assert json.loads(from_file.stdout)["samples"][0]["prompt"] == "and another"
    from_stdin = runner.invoke(app, ["sample", str(text_run), "--prompt-file", "-", "-s", "3", "--json"], input="a")
    samples = json.loads(from_stdin.stdout)["samples"]
    assert len(samples) == 3 and all(len(s["tokens"]) == 200 for s in samples)
    no_cache = runner.invoke(
        app, ["sample", str(text_run), "-p", "a line", "-n", "10", "--temperature", "0", "--no-cache"]
    )
    assert no_cache.stdout == greedy.stdout, "the cache changes nothing a user sees"


def test_sample_on_a_synthetic_run_shows_input_prediction_and_target(tmp_path):
    run = _train(tmp_path, "mqar", MQAR)
    shown = runner.invoke(app, ["sample", str(run), "--example", "2", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)["examples"][0]
    assert len(rows) == 24 and {"position", "input", "prediction", "target"} <= set(rows[0])
    assert any(row["target"] is not None for row in rows) and any(row["target"] is None for row in rows)
    table = runner.invoke(app, ["sample", str(run)])
    assert table.exit_code == 0 and "scored positions right" in table.stdout
    generated = runner.invoke(app, ["sample", str(run), "-p", "3 17 5", "-n", "4", "--json"])
    assert len(json.loads(generated.stdout)["samples"][0]["tokens"]) == 4
    bad = runner.invoke(app, ["sample", str(run), "-p", "three"])
    assert bad.exit_code != 0 and "token ids" in bad.output and "Traceback" not in bad.output


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.ids, self._in = {}, set(), None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self._in = attrs.get("id", "code")
            self.scripts[self._in] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.scripts[self._in] += data


@pytest.mark.parametrize("kind", KINDS)
def test_attention_writes_a_grid_per_layer_and_a_page_holding_every_heads_map(tmp_path, kind):
    run = _train(tmp_path, kind, MQAR, kind)
    two_maps = kind_entry(kind).rows == Rows.SIGNED  # the differential kinds draw A1, A2 and the difference
    names = ["A1", "A2", "A1 − λ·A2"] if two_maps else ["A"]
    result = runner.invoke(app, ["attention", str(run), "--example", "1", "-o", str(tmp_path / "maps"), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert [f.rsplit("/", 1)[-1] for f in files] == ["layer_0.png", "layer_1.png", "overview.png", "attention.html"]
    assert all(open(f, "rb").read(4) == b"\x89PNG" for f in files[:3])
    page = _Page()
    page.feed((tmp_path / "maps" / "attention.html").read_text())
    assert {"layer", "name", "head", "map", "tip"} <= page.ids
    data = json.loads(page.scripts["data"])
    assert len(data["tokens"]) == 24 and [layer["layer"] for layer in data["layers"]] == [0, 1]
    layer = data["layers"][1]
    assert list(layer["maps"]) == names
    loaded = load_trained_model(run)
    heads = loaded.model.blocks[1].attention.output_heads
    stored = layer["maps"][names[-1]]
    assert len(stored) == heads and [len(row) for row in stored[0]] == list(range(1, 25)), "row i: keys 0…i"
    # The page holds the maps the model computes (in thousandths, the causal zeros left out).
    tokens = torch.tensor([[int(t) for t in data["tokens"]]])
    with capture_attention(loaded.model.eval()) as capture:
        loaded.model(tokens)
    expected = capture.maps[1].weights[0]
    rebuilt = torch.zeros(heads, 24, 24)
    for head, rows in enumerate(stored):
        for i, row in enumerate(rows):
            rebuilt[head, i, : i + 1] = torch.tensor(row, dtype=torch.float) / data["scale"]
    torch.testing.assert_close(rebuilt, expected, atol=5e-4 + 1e-6, rtol=0)
    assert (layer["lambda"] is not None) == two_maps
    assert (layer["coverage"] is not None) == (not two_maps), "every single-map kind shows its key coverage"
    if shutil.which("node"):  # the page's script at least parses
        (tmp_path / "page.js").write_text(page.scripts["code"])
        checked = subprocess.run(["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_attention_needs_exactly_one_of_prompt_and_example(tmp_path):
    run = _train(tmp_path, "mqar", MQAR)
    both = runner.invoke(app, ["attention", str(run), "--example", "1", "-p", "3 4"])
    neither = runner.invoke(app, ["attention", str(run)])
    for result in (both, neither):
        assert result.exit_code != 0 and "exactly one of --prompt" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("image_format", ["svg", "pdf"])
def test_attention_pictures_for_papers_and_a_clear_error_for_other_formats(tmp_path, image_format):
    run = _train(tmp_path, "vanilla", MQAR, "vanilla")
    result = runner.invoke(
        app, ["attention", str(run), "--example", "0", "-o", str(tmp_path / "f"), "--format", image_format]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == sorted(
        ["attention.html", f"layer_0.{image_format}", f"layer_1.{image_format}", f"overview.{image_format}"]
    )
    head = (tmp_path / "f" / f"overview.{image_format}").read_bytes()[:200]
    assert (b"<svg" in head or b"<?xml" in head) if image_format == "svg" else head.startswith(b"%PDF")
    refused = runner.invoke(
        app, ["attention", str(run), "--example", "0", "-o", str(tmp_path / "g"), "--format", "gif"]
    )
    assert refused.exit_code != 0 and "--format must be one of png, svg, pdf" in refused.output
    assert not (tmp_path / "g").exists()
