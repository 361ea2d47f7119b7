"""One line of RUN/dynamics.jsonl, typed: what the attention tracker measured on its fixed batch at one step.

Written by the trainer's step-log listener (`to_json`), read back by field (`read_dynamics`) by the figure,
the milestones, `compare` and the trackers, so a renamed part is a type error rather than a silent gap.
"""

from dataclasses import dataclass, field

from diffformer.errors import CheckpointError
from diffformer.run_folder import DYNAMICS_FILE, RunFolder
from diffformer.strict_json import from_json, json_ready


@dataclass
class DynamicsRecord:
    step: int
    model: dict[str, float] = field(default_factory=dict)  # the whole model: token accuracy, KTIW, focus measures
    layers: dict[int, dict[str, float]] = field(default_factory=dict)  # per layer: means over heads and positions
    average: dict[str, float] = field(default_factory=dict)  # each layer measurement's mean over layers
    heads: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # per layer: a value per head

    def to_json(self) -> dict:
        return json_ready(self)


def read_dynamics(folder: RunFolder, up_to_step: int | None = None) -> list[DynamicsRecord]:
    """RUN/dynamics.jsonl's records (those up to `up_to_step`); [] for a run that tracked nothing."""
    path = folder.path / DYNAMICS_FILE
    try:
        records = [from_json(DynamicsRecord, line) for line in folder.read_log(DYNAMICS_FILE)]
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} holds a record this diffformer does not read (was it edited?)") from None
    return [record for record in records if up_to_step is None or record.step <= up_to_step]
