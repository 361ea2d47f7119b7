"""Reading recipe files: YAML, `extends` (relative to the recipe), `--set` overrides, validation.

Every problem becomes a RecipeError whose message names the file and the dotted field.
"""

import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from diffformer.data import DataConfig
from diffformer.data.text import TextTask
from diffformer.errors import RecipeError
from diffformer.recipe.messages import describe_validation_error
from diffformer.recipe.schema import Recipe


def load_recipe(path: Path | str, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read, merge (`extends`), override (`--set`) and validate a recipe file."""
    path = Path(path)
    return validate_recipe(read_with_overrides(path, overrides), source=str(path), base_dir=path.parent)


def read_with_overrides(path: Path, overrides: typing.Sequence[str]) -> dict:
    raw = _read_with_extends(path, chain=())
    for override in overrides:
        apply_override(raw, override)
    return raw


def validate_recipe(raw: Any, source: str, base_dir: Path | None = None) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {source}: expected a mapping of sections (name, model, data, ...)")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        raise RecipeError(f"recipe {source}: {describe_validation_error(error, raw)}") from None
    if base_dir is not None and isinstance(recipe.data, TextTask):
        recipe = _resolve_relative_paths(recipe, base_dir)
    return recipe


class _DataSection(BaseModel):
    """Just the `data:` section, for evaluating or probing a trained model on other data."""

    model_config = ConfigDict(extra="forbid")
    data: DataConfig


def data_with_overrides(data: dict, overrides: typing.Sequence[str], source: str) -> DataConfig:
    """A stored recipe's `data:` section with `--set data.key=value` overrides applied and validated."""
    raw = {"data": json.loads(json.dumps(data))}
    for override in overrides:
        if not override.startswith("data."):
            raise RecipeError(f"--set {override.partition('=')[0]}: only data.* keys can be changed here")
        apply_override(raw, override)
    try:
        return _DataSection.model_validate(raw).data
    except ValidationError as error:
        raise RecipeError(f"{source}: {describe_validation_error(error, raw)}") from None


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in chain:
        raise RecipeError(f"recipe {path}: 'extends' forms a cycle ({' -> '.join(str(p) for p in chain + (path,))})")
    raw = _read_yaml(path)
    base_name = raw.get("extends")
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise RecipeError(f"recipe {path}: extends: expected a file name")
    base = _read_with_extends(path.parent / base_name, chain + (resolved,))
    base.pop("extends", None)
    merged = _deep_merge(base, raw)
    merged.pop("extends", None)
    return merged


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise RecipeError(f"recipe {path} is a folder; expected a YAML file (or a run folder to resume)")
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"recipe {path}: YAML syntax error{where}: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path} is not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: expected a mapping of sections (name, model, data, ...)")
    _check_size(raw, path)
    for key in ("output", "init_from"):  # like every path in a recipe, relative to its file
        value = raw.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            raw[key] = str(path.parent / value)
    return raw


MAX_RECIPE_VALUES = 100_000


def _check_size(raw, path: Path) -> None:
    """Refuse a recipe that expands to absurdly many values (YAML aliases can nest exponentially)."""
    budget, stack = MAX_RECIPE_VALUES, [raw]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise RecipeError(f"recipe {path} expands to more than {MAX_RECIPE_VALUES:,} values (nested YAML aliases?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set expects KEY=VALUE with a dotted key, e.g. train.steps=200 (got '{override}')")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise RecipeError(f"--set {key}: the value '{text}' is not valid YAML") from None
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {key}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _resolve_relative_paths(recipe: Recipe, base_dir: Path) -> Recipe:
    """Data and tokenizer paths in a recipe are relative to the recipe file."""
    data = recipe.data
    updates = {}
    if data.path is not None and not data.path.is_absolute():
        updates["path"] = (base_dir / data.path).resolve()
    tokenizer = data.tokenizer
    if tokenizer.kind == "file" and not tokenizer.path.is_absolute():
        updates["tokenizer"] = tokenizer.model_copy(update={"path": (base_dir / tokenizer.path).resolve()})
    return recipe.model_copy(update={"data": data.model_copy(update=updates)}) if updates else recipe
