"""Synthetic tasks and text data: structure, determinism, depth placement, the token cache."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from diffformer import ModelConfig, Transformer
from diffformer.data import IGNORE, prepare_data
from diffformer.data.copying import CopyTask
from diffformer.data.mqar import MqarTask
from diffformer.data.needle import NEEDLE_MARK, QUERY_MARK, NeedleTask
from diffformer.data.text import TextTask
from diffformer.data.token_cache import HEADER
from diffformer.errors import DataError


def test_batches_are_a_pure_function_of_seed_split_and_index():
    task = MqarTask(task="mqar", vocab_size=64, num_pairs=[2, 4], seq_len=[32, 48])
    first = task.batch(7, "train", 11, 8)
    again = task.batch(7, "train", 11, 8)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(task.batch(7, "train", 12, 8).inputs[:, :24], first.inputs[:, :24])
    assert not torch.equal(task.batch(7, "val", 11, 8).inputs[:, :24], first.inputs[:, :24])
    assert {task.batch(0, "train", i, 2).inputs.shape[1] for i in range(30)} == {32, 48}, "lengths are mixed"


def test_mqar_queries_every_key_and_scores_its_value():
    task = MqarTask(task="mqar", vocab_size=64, num_pairs=6, seq_len=48)
    batch = task.batch(0, "train", 0, 16)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        pairs = dict(zip(inputs[0:12:2], inputs[1:12:2]))
        assert all(1 <= k < 32 for k in pairs) and all(32 <= v < 64 for v in pairs.values())
        scored = [t for t, target in enumerate(targets) if target != IGNORE]
        assert sorted(inputs[t] for t in scored) == sorted(pairs), "each key is asked exactly once"
        for t in scored:
            assert targets[t] == pairs[inputs[t]]
            assert t >= 12, "queries come after the key-value list"
    answered_in_input = sum(
        inputs[t + 1] == targets[t]
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist())
        for t, target in enumerate(targets)
        if target != IGNORE
    )
    # 96 queries; a random filler token equals the answer with chance 1/64.
    assert answered_in_input < 10, "answers are not written after their queries"


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("haystack", ["noise", "distractors"])
def test_needle_sits_at_the_stated_depth(depth, haystack):
    task = NeedleTask(task="needle", seq_len=203, depth=depth, haystack=haystack)
    batch = task.batch(1, "probe", 0, 8)
    for inputs, start in zip(batch.inputs.tolist(), batch.needle_start.tolist()):
        assert inputs[start] == NEEDLE_MARK
        query_start = inputs.index(QUERY_MARK)
        haystack_before = start
        haystack_total = query_start - 3
        assert abs(haystack_before / haystack_total - depth) <= 2 / haystack_total
        assert inputs[start + 1] == inputs[query_start + 1], "the query asks the needle's key"


@pytest.mark.parametrize("variant", ["single", "multi_key", "multi_value", "multi_query"])
def test_needle_targets_are_the_asked_values(variant):
    task = NeedleTask(task="needle", variant=variant, seq_len=96, num_needle_values=3, num_queries=3)
    batch = task.batch(0, "train", 0, 8)
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        needles = [(inputs[i + 1], inputs[i + 2]) for i, t in enumerate(inputs[:-2]) if t == NEEDLE_MARK]
        scored = [(t, target) for t, target in enumerate(targets) if target != IGNORE]
        if variant == "multi_value":
            key = inputs[scored[0][0]]
            assert [target for _, target in scored] == [v for k, v in needles if k == key]
        else:
            for position, target in scored:
                assert (inputs[position], target) in needles
        expected_count = {"single": 1, "multi_key": 1, "multi_value": 3, "multi_query": 3}[variant]
        assert len(scored) == expected_count
        if variant == "multi_key":
            assert len({k for k, _ in needles}) == 4, "three distractor needles with other keys"


def test_copy_tasks():
    easy = CopyTask(task="copy", distribution="easy").batch(0, "train", 0, 4)
    hard = CopyTask(task="copy", distribution="hard").batch(0, "train", 0, 4)
    for batch in (easy, hard):
        assert batch.inputs.shape == (4, 81)
        assert torch.equal(batch.inputs[:, :40], batch.inputs[:, 41:])
        assert (batch.inputs[:, 40] == 1).all()
        assert torch.equal(batch.targets[:, 40:80], batch.inputs[:, :40])
        assert (batch.targets[:, :40] == IGNORE).all()
    assert all(sorted(row) == list(range(2, 42)) for row in hard.inputs[:, :40].tolist()), "hard: one set, permuted"
    assert len({tuple(sorted(row)) for row in easy.inputs[:, :40].tolist()}) > 1


def _write_corpus(path: Path, kind: str) -> Path:
    lines = [f"Document {i} talks about attention heads and tokens number {i * 7 % 13}." for i in range(120)]
    if kind == "txt":
        path.write_text("\n".join(lines) + "\n")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"body": line, "id": i}) + "\n" for i, line in enumerate(lines)))
    elif kind == "csv":
        path.write_text("id,body\n" + "".join(f'{i},"{line}"\n' for i, line in enumerate(lines)))
    elif kind == "parquet":
        import datasets

        datasets.Dataset.from_dict({"body": lines}).to_parquet(str(path))
    return path


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "parquet"])
def test_local_text_files_tokenize_into_train_and_validation(kind, tmp_path):
    corpus = _write_corpus(tmp_path / f"corpus.{kind}", kind)
    config = TextTask(
        task="text",
        path=corpus,
        text_column="text" if kind == "txt" else "body",
        tokenizer={"kind": "bpe", "vocab_size": 300},
        seq_len=16,
        val_fraction=0.1,
    )
    data = prepare_data(config, tmp_path / "cache")
    assert data.vocab_size == 300
    assert len(data.train_tokens) > 8 * len(data.val_tokens) > 0
    batch = data.batch(0, "train", 0, 3)
    assert batch.inputs.shape == (3, 16) and torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert "attention" in data.tokenizer.decode(data.val_tokens[:60].tolist())
    assert 1.5 < data.bytes_per_token("train") < 8


def test_token_cache_is_reused_and_rebuilt_when_stale_or_corrupt(tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.txt", "txt")
    cache = tmp_path / "cache"
    config = TextTask(task="text", path=corpus, tokenizer={"kind": "byte"}, seq_len=16)
    first_tokens = np.array(prepare_data(config, cache).train_tokens)  # a copy, not the mapping
    (token_file,) = (cache / "tokens").glob("*.bin")
    stamp = token_file.stat().st_mtime_ns
    prepare_data(config, cache)
    assert token_file.stat().st_mtime_ns == stamp, "a valid cache is not rewritten"
    with open(token_file, "r+b") as file:  # corrupt: cut the token data short
        file.truncate(HEADER.size + 10)
    rebuilt = prepare_data(config, cache)
    assert np.array_equal(np.asarray(rebuilt.train_tokens), first_tokens)
    other = TextTask(task="text", path=corpus, tokenizer={"kind": "bpe", "vocab_size": 280}, seq_len=16)
    prepare_data(other, cache)
    assert len(list((cache / "tokens").glob("*.bin"))) == 2, "another tokenizer gets its own cache file"


def test_existing_tokenizer_file_is_used(tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.txt", "txt")
    trained = prepare_data(
        TextTask(task="text", path=corpus, tokenizer={"kind": "bpe", "vocab_size": 290}, seq_len=16),
        tmp_path / "cache",
    )
    (tmp_path / "tok.json").write_text(trained.tokenizer.to_str())
    reused = prepare_data(
        TextTask(task="text", path=corpus, tokenizer={"kind": "file", "path": tmp_path / "tok.json"}, seq_len=16),
        tmp_path / "cache",
    )
    assert reused.vocab_size == 290
    assert np.array_equal(np.asarray(reused.train_tokens), np.asarray(trained.train_tokens))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "empty.txt").write_text("\n\n  \n"), "contains no text"),
        (lambda d: (d / "empty.txt").write_text("a b c\n" * 3), r"fewer than seq_len \+ 2"),
        (lambda d: (d / "tok.json").write_text("{not json"), "is not a tokenizers JSON file"),
    ],
)
def test_unusable_text_data_is_a_clear_error(setup, message, tmp_path):
    setup(tmp_path)
    tokenizer = (
        {"kind": "file", "path": tmp_path / "tok.json"} if (tmp_path / "tok.json").exists() else {"kind": "byte"}
    )
    if not (tmp_path / "empty.txt").exists():
        (tmp_path / "empty.txt").write_text("some text\n" * 50)
    config = TextTask(task="text", path=tmp_path / "empty.txt", tokenizer=tokenizer, seq_len=64)
    with pytest.raises(DataError, match=message):
        prepare_data(config, tmp_path / "cache")


def test_unavailable_hub_dataset_names_the_dataset(tmp_path):
    config = TextTask(task="text", dataset="no-such-org/no-such-dataset", seq_len=16)
    with pytest.raises(DataError, match="dataset 'no-such-org/no-such-dataset'"):
        prepare_data(config, tmp_path / "cache")


def test_pydoc_corpus_is_available_offline(tmp_path):
    config = TextTask(task="text", builtin="pydoc_topics", tokenizer={"kind": "byte"}, seq_len=64)
    data = prepare_data(config, tmp_path / "cache")
    assert data.vocab_size == 256 and len(data.train_tokens) > 100_000


def test_bits_per_byte_of_a_split_uses_that_splits_own_bytes_per_token(tmp_path):
    """Validation text that tokenizes very differently from training text gets its own bytes per token."""
    from diffformer.metrics import evaluate

    corpus = tmp_path / "corpus.jsonl"
    prose = [{"text": f"Attention is all that sentence {i} needs to say about tokens."} for i in range(180)]
    digits = [{"text": " ".join(str(1000 + (i * 7919 + j) % 9000) for j in range(20))} for i in range(20)]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in prose + digits))
    config = TextTask(
        task="text", path=corpus, tokenizer={"kind": "bpe", "vocab_size": 300}, seq_len=16, val_fraction=0.1
    )
    data = prepare_data(config, tmp_path / "cache")
    val_texts = [row["text"] for row in digits]
    val_tokens = sum(len(data.tokenizer.encode(text).ids) + 1 for text in val_texts)  # + <|endoftext|>
    val_bytes = sum(len(text.encode()) for text in val_texts)
    assert data.bytes_per_token("val") == pytest.approx(val_bytes / val_tokens)
    assert abs(data.bytes_per_token("val") - data.bytes_per_token("train")) > 0.3, "the splits really differ"
    model = Transformer(ModelConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2))
    metrics = evaluate(model, data, 0, 2, 4, torch.device("cpu"), split="val")
    assert metrics["bits_per_byte"] == pytest.approx(metrics["loss"] / math.log(2) / data.bytes_per_token("val"))


def test_batch_to_moves_every_tensor():
    batch = MqarTask(task="mqar", vocab_size=32, num_pairs=3, seq_len=24, depth=0.5).batch(0, "probe", 0, 2)
    moved = batch.to("meta")
    for name in ("inputs", "targets", "evidence", "question_start"):
        assert getattr(moved, name).device.type == "meta", name
    assert moved.needle_start is None


def test_mqar_random_depth_with_distractors_teaches_retrieval_anywhere():
    task = MqarTask(task="mqar", vocab_size=64, num_pairs=4, seq_len=[48, 64], depth="random", distractors=3)
    half, starts = 32, set()
    for index in range(20):
        batch = task.batch(7, "train", index, 4)
        length = batch.inputs.shape[1]
        for b in range(4):
            row, scored = batch.inputs[b], (batch.targets[b] != IGNORE).nonzero().flatten()
            assert scored.tolist() == list(range(length - 8, length, 2)), "all keys asked at the end"
            spans = batch.evidence[b, scored]
            block = (int(spans[:, 0].min()), int(spans[:, 1].max()))
            starts.add(block[0])
            for (start, end), t in zip(spans.tolist(), scored.tolist()):
                assert row[start] == row[t] and row[start + 1] == batch.targets[b, t], "evidence is the pair"
            context = row[: length - 8]
            is_key = (context >= 1) & (context < half)
            keys_outside_block = torch.cat([is_key[: block[0]], is_key[block[1] :]]).sum().item()
            assert keys_outside_block == 3, "the only other keys are the distractors'"
            asked = set(row[scored].tolist())
            distractor_keys = {
                int(k) for i, k in enumerate(context.tolist()) if is_key[i] and not block[0] <= i < block[1]
            }
            assert not distractor_keys & asked, "distractor keys are never asked"
    assert len(starts) > 10, "the block moves around"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"distractors": 2}, "distractors need the end-query layout"),
        ({"depth": 1.5}, "depth must lie in [0, 1]"),
        ({"depth": "middle"}, "depth"),
        ({"depth": "random", "distractors": 30, "seq_len": 200}, "need more keys than vocab_size has"),
        ({"depth": "random", "distractors": 20}, "too short for 8 pairs (needs 4 per pair) and 20 distractors"),
    ],
)
def test_mqar_layout_settings_are_checked(settings, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        MqarTask(**{"task": "mqar", "vocab_size": 64, "num_pairs": 8, "seq_len": 64, **settings})


def test_a_streamed_hub_dataset_reads_only_its_first_max_documents(tmp_path, monkeypatch):
    """Offline stand-in for the hub: a stream that counts how many documents were pulled from it."""
    import datasets

    pulled = []

    def documents():
        for i in range(10_000):
            pulled.append(i)
            yield {"content": f"Streamed document {i} about attention and keys {i % 11}.", "id": i}

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        assert (name, config, split, streaming) == ("someone/corpus", "sample", "train", True)
        return datasets.IterableDataset.from_generator(documents)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda name, config=None: ["train"])
    config = TextTask(
        task="text",
        dataset="someone/corpus",
        config="sample",
        streaming=True,
        max_documents=200,
        text_column="content",
        tokenizer={"kind": "byte"},
        seq_len=16,
        val_fraction=0.1,
    )
    data = prepare_data(config, tmp_path / "cache")
    assert len(pulled) < 300, "the stream must not be read to its end"
    text = data.tokenizer.decode(data.val_tokens[:2000].tolist())
    assert "document 199 " in text and "document 200 " not in text


def test_streaming_needs_a_hub_dataset_and_a_document_limit():
    with pytest.raises(ValueError, match="streaming reads a hub dataset"):
        TextTask(task="text", dataset="someone/corpus", streaming=True)
    with pytest.raises(ValueError, match="data.config names a configuration"):
        TextTask(task="text", builtin="pydoc_topics", config="sample")
