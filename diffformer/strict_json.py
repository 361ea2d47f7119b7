"""Strict JSON for files and `--json` output: dataclasses become objects, NaN and ±inf become null."""

import dataclasses
import json
import math
import types
import typing
from pathlib import Path


def json_ready(value):
    """Plain data that json.dumps writes as strict JSON (dict keys become strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value, indent: int | None = None) -> str:
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


def from_json(annotation, data):
    """Rebuild `annotation` (a dataclass, container or scalar type) from JSON data, converting dict keys.

    A dataclass takes the fields the data has (missing ones keep their defaults; unknown ones are passed
    over, so files written by other versions still read); a wrong type raises TypeError or ValueError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            if type(None) in args:
                return None
            raise ValueError("missing value")
        return from_json(next(a for a in args if a is not type(None)), data)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {annotation.__name__}")
        hints = typing.get_type_hints(annotation)
        known = {f.name for f in dataclasses.fields(annotation)}
        return annotation(**{name: from_json(hints[name], value) for name, value in data.items() if name in known})
    if origin is dict:
        key_type, value_type = args
        return {key_type(k): from_json(value_type, v) for k, v in data.items()}
    if origin is list:
        return [from_json(args[0], v) for v in data]
    if annotation is float and isinstance(data, (int, float)):
        return float(data)
    if annotation in (int, str, float) and not isinstance(data, annotation):
        raise TypeError(f"expected {annotation.__name__}")
    return data
