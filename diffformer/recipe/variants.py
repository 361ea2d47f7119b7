"""Variants: a recipe's `variants:` grid expanded into one validated recipe per combination."""

import itertools
import json
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from diffformer.errors import RecipeError
from diffformer.recipe.fingerprint import flatten
from diffformer.recipe.loading import apply_override, read_with_overrides, validate_recipe
from diffformer.recipe.schema import Recipe


def variant_parts(assignment: dict[str, Any], grid: dict[str, list[Any]]) -> list[tuple[str, str]]:
    """(key, value as text) for each of a variant's values, key the last part of its dotted name.

    A value that is a section (a dict) is named by the settings in which the grid's values
    of that key differ, e.g. 'schedule=constant', 'value=0.5', so distinct sections get distinct names.
    """
    parts = []
    for key, value in assignment.items():
        if isinstance(value, dict):
            flat = flatten(value)
            leaves = _differing_leaves(grid[key]) or sorted(flat)
            parts += [(leaf.rsplit(".", 1)[-1], _text(flat.get(leaf))) for leaf in leaves]
        else:
            parts.append((key.rsplit(".", 1)[-1], _text(value)))
    return parts


def variant_label(assignment: dict[str, Any], grid: dict[str, list[Any]]) -> str:
    """A variant's folder name: 'kind=vanilla+seed=1'. Only letters, digits and . _ - = +, so tools can take
    it as it is: no comma or colon (TensorBoard's --logdir_spec splits on both), nothing a shell expands.
    A value's other characters become '_' ('lengths=64_128' for [64, 128])."""
    parts = variant_parts(assignment, grid)
    return "+".join(f"{key}={re.sub(r'[^A-Za-z0-9._-]+', '_', value).strip('_') or '_'}" for key, value in parts)


def legacy_variant_label(assignment: dict[str, Any], grid: dict[str, list[Any]]) -> str:
    """The folder name sweeps used before variant_label: 'kind=vanilla,seed=1'. A sweep begun then keeps it."""
    parts = variant_parts(assignment, grid)
    return ",".join(f"{key}={value}" for key, value in parts).replace("/", "_").replace(" ", "")


def _differing_leaves(values: list[Any]) -> list[str]:
    flats = [flatten(v) if isinstance(v, dict) else {"": v} for v in values]
    leaves = sorted(set().union(*flats))
    return [leaf for leaf in leaves if len({json.dumps(f.get(leaf), sort_keys=True) for f in flats}) > 1]


def _text(value: Any) -> str:
    if value is None:
        return "none"
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def expand_variants(
    path: Path | str, overrides: typing.Sequence[str] = (), only: typing.Sequence[str] = ()
) -> list[tuple[dict[str, Any], Recipe]]:
    """Every combination of a recipe's `variants:` as (assignment, validated recipe).

    Each variant runs in <output or runs/name>/<label> with name "<name>/<label>". `only`
    entries KEY=VALUE keep the variants whose KEY (dotted, or its last part) has that value.
    All variants are validated before any is trained.
    """
    path = Path(path)
    raw = read_with_overrides(path, overrides)
    grid = raw.pop("variants", None) or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise RecipeError(f"recipe {path}: variants: expected a mapping of dotted keys to non-empty lists")
    filters = []
    for item in only:
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"--only expects KEY=VALUE, e.g. kind=vanilla (got {item!r})")
        matches = [k for k in grid if k == key or k.rsplit(".", 1)[-1] == key]
        if not matches:
            raise RecipeError(f"--only {key}: not a variant key; the variants are {', '.join(grid)}")
        filters.append((matches[0], yaml.safe_load(value)))
    base_output = Path(raw.get("output") or Path("runs") / str(raw.get("name", "recipe")))
    expanded, folders = [], {}
    for values in itertools.product(*grid.values()):
        assignment = dict(zip(grid, values))
        label = variant_label(assignment, grid)
        legacy = legacy_variant_label(assignment, grid)
        if not (base_output / label).exists() and (base_output / legacy).is_dir():
            label = legacy  # a sweep begun with comma names keeps its folders, so --resume and skips still find them
        if label in folders:
            raise RecipeError(
                f"recipe {path}: variants {folders[label]} and {assignment} would share the folder {label}; "
                "every variant needs distinct values"
            )
        folders[label] = assignment
        if any(assignment[key] != value and str(assignment[key]) != str(value) for key, value in filters):
            continue
        variant = json.loads(json.dumps(raw))
        for key, value in assignment.items():
            apply_override(variant, f"{key}={json.dumps(value)}")
        parts = ".".join(f"{key}={value}" for key, value in variant_parts(assignment, grid)).replace(" ", "")
        variant["name"] = re.sub(r"[^A-Za-z0-9._-]", "_", f"{raw.get('name', 'recipe')}.{parts}".replace("=", "-"))
        variant["output"] = str(base_output / label)
        expanded.append((assignment, validate_recipe(variant, f"{path} [variant {label}]", path.parent)))
    if not expanded:
        raise RecipeError(f"--only {' '.join(only)} matches no variant of {path}")
    return expanded
