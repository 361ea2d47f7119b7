"""Text as researchers have it: a .txt is a stream with its newlines; folders and globs; the hub's own
validation split; token budgets; pretrained tokenizers by name (offline: one clear line)."""

import pytest
import yaml

from diffformer.data import prepare_data
from diffformer.data.text import TextTask
from diffformer.errors import DataError

PLAY = "".join(
    f"{speaker}:\nLine {i} of the speech, with its own words.\nAnd a second line, {i}.\n\n"
    for i, speaker in enumerate(["First Citizen", "All", "Second Citizen", "Menenius"] * 30)
)


def _text(tmp_path, **settings):
    return TextTask(task="text", tokenizer={"kind": "byte"}, seq_len=16, **settings)


def _stream(data) -> str:
    tokens = [*data.train_tokens.tolist(), *data.val_tokens.tolist()]
    return data.tokenizer.decode(tokens)


def test_a_txt_file_is_one_stream_with_its_line_breaks(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    data = prepare_data(_text(tmp_path, path=tmp_path / "play.txt"), tmp_path / "cache")
    assert _stream(data) == PLAY, "every byte, newlines included, in order"
    assert "First Citizen:\nLine 0 of the speech" in data.tokenizer.decode(data.train_tokens.tolist())


def test_documents_can_still_be_lines_or_paragraphs(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    lines = prepare_data(_text(tmp_path, path=tmp_path / "play.txt", documents="line"), tmp_path / "cache")
    assert "\n" not in _stream(lines) and "First Citizen:Line 0" in _stream(lines)
    bpe = TextTask(
        task="text", path=tmp_path / "play.txt", documents="paragraph", tokenizer={"kind": "bpe"}, seq_len=16
    )
    paragraphs = prepare_data(bpe, tmp_path / "cache")
    text = paragraphs.tokenizer.decode(paragraphs.train_tokens[:400].tolist(), skip_special_tokens=False)
    assert "First Citizen:\nLine 0 of the speech, with its own words.\nAnd a second line, 0.<|endoftext|>All:" in text


def test_a_folder_or_a_glob_reads_every_file_in_name_order(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "deeper").mkdir(parents=True)
    (corpus / "b.txt").write_text("Second file.\n" * 40)
    (corpus / "a.txt").write_text("First file.\n" * 40)
    (corpus / "deeper" / "c.txt").write_text("Third file.\n" * 40)
    (corpus / "notes.md").write_text("not data")
    folder = prepare_data(_text(tmp_path, path=corpus, val_fraction=0.1), tmp_path / "cache")
    stream = _stream(folder)
    assert stream.index("First file.") < stream.index("Second file.") < stream.index("Third file.")
    assert "not data" not in stream
    matched = prepare_data(_text(tmp_path, path=corpus / "*.txt", val_fraction=0.1), tmp_path / "cache")
    assert "Third file." not in _stream(matched) and "Second file." in _stream(matched)
    with pytest.raises(DataError, match="matches no file"):
        prepare_data(_text(tmp_path, path=corpus / "*.csv"), tmp_path / "cache")


def test_max_tokens_keeps_about_that_much_text(tmp_path):
    (tmp_path / "many").mkdir()
    for i in range(50):
        (tmp_path / "many" / f"{i:02d}.txt").write_text(f"document {i:02d} " * 20)  # 240 bytes each
    data = prepare_data(_text(tmp_path, path=tmp_path / "many", max_tokens=600), tmp_path / "cache")
    # 600 tokens at 4 bytes each = 2,400 bytes: the first ten documents.
    assert "document 09" in _stream(data) and "document 10" not in _stream(data)


def test_a_hub_dataset_validates_on_its_own_validation_split(tmp_path, monkeypatch):
    import datasets

    loaded = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        loaded.append((name, config, split))
        rows = [f"{split} document {i}: " + "words " * 30 for i in range(40)]
        return datasets.Dataset.from_dict({"text": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda name, config=None: ["train", "validation"])
    config = TextTask(
        task="text", dataset="wikitext", config="wikitext-2-raw-v1", tokenizer={"kind": "byte"}, seq_len=16
    )
    data = prepare_data(config, tmp_path / "cache")
    assert loaded == [("wikitext", "wikitext-2-raw-v1", "train"), ("wikitext", "wikitext-2-raw-v1", "validation")]
    assert "validation document" in data.tokenizer.decode(data.val_tokens.tolist())
    assert "validation document" not in data.tokenizer.decode(data.train_tokens.tolist())
    tail = prepare_data(config.model_copy(update={"val_split": "tail"}), tmp_path / "cache")
    assert "train document 39" in tail.tokenizer.decode(tail.val_tokens.tolist())


def test_a_pretrained_tokenizer_offline_is_one_clear_line_and_a_fetched_one_is_reused(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    config = TextTask(task="text", path=tmp_path / "play.txt", tokenizer={"kind": "pretrained", "name": "gpt2"})
    with pytest.raises(DataError, match="tokenizer 'gpt2' could not be fetched.*kind: file"):
        prepare_data(config, tmp_path / "cache")
    # A tokenizer fetched earlier sits in the cache and works offline.
    byte_level = prepare_data(_text(tmp_path, path=tmp_path / "play.txt"), tmp_path / "cache").tokenizer
    (tmp_path / "cache" / "tokenizers").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "tokenizers" / "pretrained-gpt2.json").write_text(byte_level.to_str())
    assert _stream(prepare_data(config, tmp_path / "cache")) == PLAY


def test_a_shakespeare_style_text_trains_and_samples_with_its_line_breaks(tmp_path):
    from typer.testing import CliRunner

    from diffformer.cli import app

    (tmp_path / "play.txt").write_text(PLAY)
    recipe = {
        "name": "play",
        "output": str(tmp_path / "play"),
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64},
        "data": {"task": "text", "path": str(tmp_path / "play.txt"), "tokenizer": {"kind": "byte"}, "seq_len": 32},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1},
        "eval": {"every": 3, "batches": 1},
    }
    (tmp_path / "play.yaml").write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(tmp_path / "play.yaml")])
    assert trained.exit_code == 0, trained.output
    sampled = runner.invoke(app, ["sample", str(tmp_path / "play"), "-p", "All:\n", "-n", "12", "--json"])
    assert sampled.exit_code == 0, sampled.output
    import json

    sample = json.loads(sampled.stdout)["samples"][0]
    assert sample["prompt"] == "All:\n" and len(sample["tokens"]) == 12
