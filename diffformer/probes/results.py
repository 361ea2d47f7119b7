"""Typed probe results: what `diffformer probe` measures, as it is written to probe.json and read back.

Readers (tables, plots, comparisons) use these fields, never string keys, so a renamed
measurement is a type error rather than a silent "–".
"""

import dataclasses
import math
import statistics
from dataclasses import dataclass, field

from diffformer.errors import CheckpointError
from diffformer.probes.ablation import AblationReport
from diffformer.quantization import QuantizedEval
from diffformer.strict_json import from_json, json_ready

RULER_THRESHOLD = 0.856  # RULER's effective-length threshold


@dataclass
class RetrievalGrid:
    """Greedy exact match over context length (rows) × needle depth (columns) for one prompt variant."""

    variant: str
    lengths: list[int]
    depths: list[float]
    accuracy: list[list[float | None]]  # None: no prompt of that variant fits the length
    samples: list[list[int]]
    threshold: float = RULER_THRESHOLD
    effective_length: int | None = None
    mean_rank: list[list[float | None]] | None = None  # text needle: rank of the truth among `candidates`
    candidates: int | None = None

    def mean_accuracy(self, length_index: int) -> float | None:
        """Accuracy at one length, averaged over the depths that have prompts."""
        cells = [a for a in self.accuracy[length_index] if a is not None]
        return statistics.fmean(cells) if cells else None

    def standard_error(self, length_index: int) -> float | None:
        """Binomial standard error of mean_accuracy over all prompts at that length."""
        p, n = self.mean_accuracy(length_index), sum(self.samples[length_index])
        return math.sqrt(p * (1 - p) / n) if n and p is not None else None


@dataclass
class KeyCoverage:
    """Explaining away (Ding et al.): attention each key receives r_j against the uniform causal baseline H_j."""

    min: float  # smallest r̃_j = r_j / H_j
    below_0_1: float  # share of keys with r̃ < 0.1
    below_0_01: float
    largest_share: float  # mean over rows of the largest r_j / Σ r (an attention sink)


@dataclass
class LayerAttention:
    """One layer's attention at the answer positions, averaged over heads and prompts (docs/formulas.md §6)."""

    needle_mass: float | None = None  # share of the row's |weight| on the evidence (docs/formulas.md §6)
    noise: float | None = None  # share on the rest of the context before the question
    needle_net_mass: float | None = None  # rows that are not distributions: Σw on the evidence, signed
    row_sum: float | None = None  # ... and Σw over the whole row (1 − λ for differential; any for sigmoid)
    a1_needle_mass: float | None = None  # differential kinds: A1's share on the evidence (a softmax row) …
    a2_needle_mass: float | None = None  # … and A2's (what A1 − λ·A2 subtracts)
    source_argmax: float | None = None  # share of rows whose largest weight is on the source (copy: diagonal)
    source_argmax_near: float | None = None  # ... on the source or a key next to it (±1)
    source_coverage: float | None = None  # attention a row's source gets from all scored rows, best head (§24)
    source_dropped: float | None = None  # share of sources whose coverage is below 0.5 (explained away)
    entropy: float | None = None
    head_diversity: float | None = None
    lambda_value: float | None = None  # differential kinds only, from here down
    a1_a2_cosine: float | None = None
    a1_a2_js: float | None = None
    negative_share: float | None = None
    key_coverage: KeyCoverage | None = None

    def measured(self) -> dict[str, float]:
        """The scalar measurements this layer has (kind-specific ones only where they apply)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "key_coverage" and getattr(self, f.name) is not None
        }


@dataclass
class AttentionSummary:
    layers: dict[int, LayerAttention] = field(default_factory=dict)  # per layer, over every probed length
    average: LayerAttention | None = None  # each measurement's mean over layers (shown only where asked)
    by_length: dict[int, dict[int, LayerAttention]] = field(default_factory=dict)  # length -> layer -> measures
    # The same at the heads ablation found the task needs (probe -P ablation), when there are any.
    at_retrieval_heads: dict[int, dict[int, LayerAttention]] = field(default_factory=dict)
    rows: str = "distribution"  # what the maps' rows are (model/capture.py Rows), so tables can say what they show


@dataclass
class LogitOutliers:
    """The Diff Transformer paper's "top activation" statistics of a set of magnitudes (docs/formulas.md §6)."""

    top1: float
    median: float
    top10: float | None = None  # the 10th largest
    ratio: float | None = None  # top1 / median: how far the largest stands out

    @classmethod
    def of(cls, magnitudes) -> "LogitOutliers":
        """From a 1-D tensor of magnitudes."""
        top = magnitudes.topk(min(10, magnitudes.numel())).values
        median = float(magnitudes.median())
        return cls(float(top[0]), median, float(top[-1]), float(top[0]) / median if median > 0 else None)


@dataclass
class LayerOutliers:
    """|q·k/√d| per attention map ("logits", or "logits1"/"logits2") and |hidden state| at the layer's output."""

    logits: dict[str, LogitOutliers]
    hidden_top1: float
    hidden_median: float
    hidden_top10: float | None = None
    hidden_ratio: float | None = None  # hidden_top1 / hidden_median


@dataclass
class ProbeReport:
    checkpoint: str
    step: int
    attention_kind: str
    seed: int
    retrieval: dict[str, RetrievalGrid] = field(default_factory=dict)
    attention: AttentionSummary | None = None
    outliers: dict[int, LayerOutliers] | None = None
    ablation: AblationReport | None = None
    quantization: list[QuantizedEval] | None = None  # the quantization probe: each scheme against full precision
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the ProbeSettings used (device aside)

    def scalars(self) -> dict[str, float]:
        """The summary as named numbers for experiment trackers: accuracy at each length (mean over depths)
        and the effective length per variant, and the attention measurements averaged over layers."""
        named = {}
        for variant, grid in self.retrieval.items():
            for index, length in enumerate(grid.lengths):
                if (accuracy := grid.mean_accuracy(index)) is not None:
                    named[f"probe/{variant}/accuracy_at_{length}"] = accuracy
            if grid.effective_length is not None:
                named[f"probe/{variant}/effective_length"] = float(grid.effective_length)
        if self.attention is not None and self.attention.average is not None:
            named.update({f"probe/attention/{k}": float(v) for k, v in self.attention.average.measured().items()})
        return {name: value for name, value in named.items() if math.isfinite(value)}

    def to_dict(self) -> dict:
        """Plain JSON-ready data; non-finite numbers become null so the output is strict JSON."""
        return json_ready(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "probe.json") -> "ProbeReport":
        try:
            return from_json(cls, data)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{source} is not a probe report this diffformer reads; run `diffformer probe` again"
            ) from None
