"""Strict JSON for files and `--json` output: dataclasses become objects, NaN and ±inf become null."""

import dataclasses
import json
import math
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
