"""The attention registry is the one place a kind is named: every registered kind has what the rest of
diffformer and its tests need, and no module outside the registry and the kinds' own files tells kinds
apart by name (docs/adding-an-attention-kind.md)."""

import ast
import inspect
import typing
from pathlib import Path

import pytest
import torch
import yaml
from conftest import KINDS
from plain_formulas import PLAIN_FORMULAS
from typer.testing import CliRunner

from diffformer.cli import app
from diffformer.hf.remote import modeling_diffformer
from diffformer.model.attention import ATTENTION_KINDS, kind_entry
from diffformer.model.capture import Rows

PACKAGE = Path(__file__).parents[1] / "diffformer"
# Where kind names may be spelled: the registry and the kinds' files, and the exported modelling code, which
# ships without diffformer and so names the kinds it implements itself (checked against the registry below).
NAMING_KINDS_IS_ALLOWED = (PACKAGE / "model" / "attention", PACKAGE / "hf" / "remote")


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_kind_has_a_plain_formula(kind):
    assert kind in PLAIN_FORMULAS, (
        f"attention kind {kind!r} has no plain formula: write one in tests/plain_formulas.py and add it to "
        "PLAIN_FORMULAS; the formula, causality, capture, cache, forcing and export tests then cover it"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_exported_kind_is_implemented_by_the_exported_code(kind):
    if not kind_entry(kind).exports:
        pytest.skip(f"{kind}'s registry entry says export refuses it")
    assert kind in modeling_diffformer.IMPLEMENTED_KINDS, (
        f"attention kind {kind!r} is declared exportable, but diffformer/hf/remote/modeling_diffformer.py does not "
        "implement it: add it there (a single-map kind: its map in SINGLE_MAP_KINDS), or set exports=False in "
        "its registry entry"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_kind_has_its_section_in_the_formulas(kind):
    module_file = Path(inspect.getfile(kind_entry(kind).module)).relative_to(PACKAGE.parent)
    formulas = (PACKAGE.parent / "docs" / "formulas.md").read_text()
    assert f"(`{module_file}`)" in formulas, (
        f"docs/formulas.md has no section for {kind} attention: write its formula there, ending with "
        f"(`{module_file}`) as every kind's section does"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_registry_name_is_its_configs_kind(kind):
    config_class = kind_entry(kind).module.config_class
    assert typing.get_args(config_class.model_fields["kind"].annotation) == (kind,)
    assert isinstance(kind_entry(kind).rows, Rows)


def test_no_module_outside_the_registry_tells_kinds_apart_by_name():
    """A string literal equal to a kind's name anywhere else in the package means a kind is special-cased
    outside its own file: what it declares belongs in its registry entry or its class."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if any(path.is_relative_to(allowed) for allowed in NAMING_KINDS_IS_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ATTENTION_KINDS:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} names {node.value!r}")
    assert not offenders, "kind names outside the registry:\n" + "\n".join(offenders)


@pytest.mark.parametrize("kind", KINDS)
def test_the_focus_lab_builds_a_kinds_scorer_or_refuses_the_kind_in_one_line(tmp_path, kind):
    recipe = {
        "name": "focus",
        "output": str(tmp_path / "focus"),
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "attention": {"kind": kind}},
        "data": {"task": "focus", "segments": 4, "classes": 2},
        "train": {"steps": 2, "batch_size": 4},
        "eval": {"every": 2, "batches": 1},
    }
    (tmp_path / "focus.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "focus.yaml")])
    if kind_entry(kind).focus_scorer is not None:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2 and f"not {kind}" in result.stderr and "Traceback" not in result.output
        assert not (tmp_path / "focus").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_computes_identical_heads_from_identical_weights(kind):
    """model.head_init reads a kind's per-head layout (per_head_parameters): identical heads give identical maps."""
    from diffformer import ModelConfig, Transformer, capture_attention

    config = ModelConfig(
        vocab_size=37, d_model=32, n_layers=2, n_heads=4, head_init="identical", attention={"kind": kind}
    )
    model = Transformer(config).eval()
    with torch.no_grad(), capture_attention(model) as capture:
        model(torch.randint(0, 37, (2, 9)))
    for maps in capture.maps.values():
        torch.testing.assert_close(maps.weights, maps.weights[:, :1].expand_as(maps.weights))


@pytest.mark.parametrize("n_heads", [2, 4, 8])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_vanillas_alibi_slope_set_at_the_same_number_of_heads_by_default(kind, n_heads):
    """The positional prior is not a hidden difference between kinds: with ALiBi each kind's maps, at its
    default options, use exactly the slopes a vanilla layer of the same n_heads uses."""
    from diffformer import ModelConfig, Transformer
    from diffformer.model.position import alibi_slopes

    config = ModelConfig(
        vocab_size=37, d_model=64, n_heads=n_heads, n_layers=1, position="alibi", attention={"kind": kind}
    )
    used = Transformer(config).blocks[0].attention.alibi_slopes
    assert set(used.tolist()) == set(alibi_slopes(n_heads).tolist())
    assert set(config.attention.map_alibi_slopes(config).tolist()) == set(alibi_slopes(n_heads).tolist())


def test_differential_alibi_layouts_assign_the_slopes_they_name():
    from diffformer import ModelConfig

    def slopes(layout):
        config = ModelConfig(
            vocab_size=37,
            d_model=64,
            n_heads=4,
            position="alibi",
            attention={"kind": "differential", "alibi_layout": layout},
        )
        return config.attention.map_alibi_slopes(config).tolist()  # sub-head 2p + s

    assert slopes("per_map") == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    assert slopes("pair_on_head") == [1 / 4, 1 / 4, 1 / 64, 1 / 64]
    assert slopes("pair_count") == [1 / 16, 1 / 16, 1 / 256, 1 / 256], "the rule the 2026-11 study used"
