"""The settings that define a run's results, and a fingerprint of them.

Two runs with the same defining settings produce the same weights and metrics (on the
same machine); bookkeeping (where the run goes, how often it logs or checkpoints, the
device, compilation, how ranks share the model, activation
checkpointing) does not count. A run folder records its settings and fingerprint in
run.json; a resume or a variants sweep compares them with the recipe at hand.
"""

import hashlib
import json
from typing import Any

# Keys whose value never changes what a run computes.
BOOKKEEPING = (
    "name",
    "output",
    "extends",
    "variants",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.device",
    "train.compile",
    "train.parallel",
    "train.activation_checkpointing",
)
# Sections that only measure (probing a sweep's runs after training, tracking attention during it).
AFTER_TRAINING = ("probe", "track", "trackers")
# May differ when resuming: training for longer continues the same run.
EXTENDABLE = ("train.steps",)


def defining_settings(stored_recipe: dict) -> dict[str, Any]:
    """The recipe flattened to dotted keys, without bookkeeping."""
    return {
        key: value
        for key, value in flatten(stored_recipe).items()
        if key not in BOOKKEEPING and key.split(".", 1)[0] not in AFTER_TRAINING
    }


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(recorded: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: old → new' for every defining setting that differs.

    model.vocab_size is filled in from the data when a recipe leaves it out, and
    train.precision `auto` is decided when training starts (a resume keeps the recorded one), so
    such a recipe agrees with any recorded value.
    """
    changed = []
    for key in sorted(set(recorded) | set(current)):
        decided_later = (key == "model.vocab_size" and current.get(key) is None) or (
            key == "train.precision" and current.get(key) == "auto"
        )
        if key in ignore or decided_later:
            continue
        old, new = recorded.get(key), current.get(key)
        if json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
            changed.append(f"{key}: {_short(old)} → {_short(new)}")
    return changed


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
