"""Validation errors as one line a researcher can act on: the dotted field, the problem, a did-you-mean."""

import difflib
import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from diffformer.recipe.schema import Recipe
from diffformer.sections import BOOLEAN_NOT_NUMBER


def describe_validation_error(error: ValidationError, raw: dict) -> str:
    """The first problem as 'dotted.path: message', with a did-you-mean for unknown keys."""
    problems = error.errors()
    first = problems[0]
    path, node = [], raw
    for part in first["loc"]:
        if isinstance(node, dict) and part in node:
            path.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path[-1] = f"{path[-1]}[{part}]"
            node = node[part]
        elif first["type"] == "missing" and part == first["loc"][-1]:
            path.append(str(part))
        # other parts are union tags or validator names, not keys the user wrote
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "union_tag_invalid":
        context = first["ctx"]
        path.append(context["discriminator"].strip("'"))
        expected = [tag.strip("'") for tag in context["expected_tags"].split(", ")]
        suggestion = difflib.get_close_matches(str(context["tag"]), expected, n=1, cutoff=0.6)
        message = (
            f"unknown value {context['tag']!r}"
            + (f" (did you mean '{suggestion[0]}'?)" if suggestion else "")
            + f"; expected one of: {', '.join(expected)}"
        )
    elif first["type"] == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], raw)
        suggestion = difflib.get_close_matches(path[-1], allowed, n=1, cutoff=0.6)
        message = "unknown key" + (f" (did you mean '{suggestion[0]}'?)" if suggestion else "")
        if allowed:
            message += f"; expected one of: {', '.join(allowed)}"
    elif first["type"] == "missing":
        message = "required but missing"
    elif first["type"] == BOOLEAN_NOT_NUMBER:
        path.append(first["ctx"]["field"])
    elif not isinstance(node, (dict, list)) and first["type"] not in ("value_error", "assertion_error"):
        message += f" (got {json.dumps(node) if not isinstance(node, str) else repr(node)})"
    more = len(problems) - 1
    where = f"{'.'.join(path)}: " if path else ""
    return f"{where}{message}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _allowed_keys(section_path: list[str], raw: dict) -> list[str]:
    """The keys the schema allows in the section at `section_path` (for did-you-mean)."""
    model: type[BaseModel] | None = Recipe
    node: Any = raw
    for part in section_path:
        if model is None or part not in model.model_fields:
            return []
        node = node.get(part, {}) if isinstance(node, dict) else {}
        model = _model_for(model.model_fields[part].annotation, node)
    return list(model.model_fields) if model is not None else []


def _model_for(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The BaseModel an annotation stands for, choosing a union member by the tag written in `node`."""
    candidates = []
    stack = [annotation]
    while stack:
        current = stack.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            candidates.append(current)
        elif typing.get_origin(current) in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(typing.get_args(current))
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    for candidate in candidates:
        for name, field in candidate.model_fields.items():
            if typing.get_origin(field.annotation) is Literal and isinstance(node, dict):
                if node.get(name) in typing.get_args(field.annotation):
                    return candidate
    return None
