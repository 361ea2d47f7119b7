"""Attention dynamics: the attention probe's measurements on one fixed batch, every `track.every` steps.

RUN/dynamics.jsonl gets one line per measurement, a DynamicsRecord (dynamics/records.py):
{"step": s, "model": {...}, "layers": {"0": {...}, ...}, "average": {...},
"heads": {"0": {name: [one value per head]}, ...}}. "model" holds what the whole
model does on the batch: token accuracy and exact match on the scored positions, and with
`track.ktiw` the KTIW probe (probes/ktiw.py). Per layer, averaged over heads and the batch's
scored positions (and per head where a measurement is one) (docs/formulas.md §6): normalised
entropy, head diversity, the share of attention on each answer's source where the task marks one
(MQAR: the queried pair; needle tasks: the needle; copy: the aligned source position), the
context share besides it, and how often a head's largest weight lands on the source (copy: the
diagonal attention accuracy; exactly, and within ±1); for differential kinds λ, A1/A2 cosine
and JS divergence and the share of negative weight; for rows that are not distributions the net
signed mass on the source and the row sum; with `track.key_coverage` the key-coverage minimum
(any kind: explaining away is a question about vanilla attention too). The batch is a pure function
of `track.seed` and the data settings, so
runs that differ in anything else are measured on the same sequences; step 0 is the state
before training.
"""

import torch
from pydantic import Field

from diffformer.data import IGNORE
from diffformer.devices import autocast_for
from diffformer.dynamics.records import DynamicsRecord
from diffformer.metrics import evaluation_mode
from diffformer.probes.full_capture import coverage_and_outliers
from diffformer.probes.ktiw import ktiw
from diffformer.probes.retrieval import AnswerAttention, exact_rows, logits_and_maps
from diffformer.sections import MAX_SEED, MAX_TOKENS, Section


class TrackSettings(Section):
    """The `track:` section: measure attention while training (it does not change what is trained)."""

    every: int = Field(25, gt=0, description="Steps between measurements (step 0, before training, is one).")
    batch_size: int = Field(8, gt=0, le=MAX_TOKENS, description="Sequences in the fixed measurement batch.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of that batch: the same batch for every run.")
    ktiw: bool = Field(
        False, description="Also the KTIW probe (one forward per source position; tasks that mark sources)."
    )
    key_coverage: bool = Field(
        False,
        description="Also each layer's key-coverage minimum (explaining away; captures every query row: "
        "T×T per layer).",
    )


class AttentionTracker:
    """Measures one model's attention on its fixed batch; `measure(step)` returns the dynamics record."""

    def __init__(self, settings: TrackSettings, model, data, device: torch.device, precision: str):
        self.model, self.device, self.precision = model, device, precision
        self.batch = data.batch(settings.seed, "probe", 0, settings.batch_size).to(device)
        self.coverage = settings.key_coverage
        self.whole_answers = getattr(data, "whole_answers", True)
        self.ktiw = settings.ktiw  # the recipe schema allows it only on tasks that mark sources

    def measure(self, step: int) -> DynamicsRecord:
        with evaluation_mode(self.model), torch.no_grad(), autocast_for(self.device, self.precision):
            logits, maps = logits_and_maps(self.model, self.batch, want_maps=True)
            scored = self.batch.targets != IGNORE
            model = {"token_accuracy": float((logits.argmax(-1) == self.batch.targets)[scored].float().mean())}
            if self.whole_answers:  # text: no sequence is ever entirely right, so no flat-at-0 panel
                model["exact_match"] = float(exact_rows(logits, self.batch.targets).float().mean())
            if self.ktiw:
                model.update(ktiw(self.model, self.batch))
            coverage = coverage_and_outliers(self.model, self.batch.inputs)[0] if self.coverage else {}
        attention = AnswerAttention()
        attention.add(maps, self.batch, self.batch.inputs.shape[1])
        summary = attention.summary()
        layers = {layer: values.measured() for layer, values in summary.layers.items()}
        for layer, layer_coverage in coverage.items():
            layers[layer]["key_coverage_min"] = layer_coverage.min
        average = summary.average.measured() if summary.average else {}
        if coverage:
            average["key_coverage_min"] = min(c.min for c in coverage.values())
        return DynamicsRecord(step, model, layers, average, attention.head_means())
