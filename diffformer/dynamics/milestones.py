"""When did a run learn? Milestones read from its RUN/dynamics.jsonl (docs/formulas.md §12).

A milestone is the first tracked step at which a measurement reached its threshold:
- learned: the model's token accuracy on the fixed batch (copy: the copied half);
- KTIW: the share of positions whose best forced source is the aligned one;
- focus (the focus task): the focus weights' mean mass on the foreground segment;
- diagonal: the best head's share of rows whose largest weight is on the source
  (copy: the aligned position, Snell et al.'s diagonal attention; MQAR: the queried pair;
  the best over every layer and head, because one head that finds it is enough),
  exactly and within ±1.
A run "learned" when its last measurement's token accuracy is at or above the threshold.
Steps are those of the tracking cadence, so a crossing is known to within track.every.
"""

from dataclasses import dataclass

from diffformer.dynamics.records import DynamicsRecord

THRESHOLD = 0.9


@dataclass(frozen=True)
class Milestone:
    name: str  # how tables and reports call it
    reading: str  # what it reads, in the words of the docstring


MILESTONES = {
    "token_accuracy": Milestone("token accuracy", "model token accuracy on the fixed batch"),
    "ktiw": Milestone("KTIW", "share of positions whose best forced source is aligned"),
    "foreground_mass": Milestone("foreground mass", "focus weight on the foreground segment"),
    "diagonal": Milestone("source argmax (copy: diagonal)", "best head's argmax on the source"),
    "diagonal_near": Milestone("source argmax ±1", "best head's argmax within ±1 of it"),
}


def readings(record: DynamicsRecord) -> dict[str, float]:
    """One dynamics record's milestone measurements (those it has)."""
    values = {name: record.model.get(name) for name in ("token_accuracy", "ktiw", "foreground_mass")}
    for name, measured in (("diagonal", "source_argmax"), ("diagonal_near", "source_argmax_near")):
        per_head = [v for layer in record.heads.values() for v in layer.get(measured, [])]
        values[name] = max(per_head) if per_head else None
    return {name: value for name, value in values.items() if value is not None}


def crossing_steps(records: list[DynamicsRecord], threshold: float = THRESHOLD) -> dict[str, int | None]:
    """Per milestone the run measures: the first step it reached `threshold`, None if it never did."""
    crossed: dict[str, int | None] = {}
    for record in records:
        for name, value in readings(record).items():
            crossed.setdefault(name, None)
            if crossed[name] is None and value >= threshold:
                crossed[name] = record.step
    return crossed


def learned(records: list[DynamicsRecord], threshold: float = THRESHOLD) -> bool | None:
    """Whether the last measurement's token accuracy is at least `threshold` (None: nothing tracked)."""
    if not records or "token_accuracy" not in records[-1].model:
        return None
    return records[-1].model["token_accuracy"] >= threshold
