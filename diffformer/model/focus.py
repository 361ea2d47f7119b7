"""The focus lab's model (Vashisht & Ramaswamy 2023; docs/formulas.md §14): a focus model f and a classifier g.

tokens (B, m·s) -> per segment: mean token embedding, + SwiGLU(RMSNorm(·))  = φ_j     (B, m, d)
f: one learned query scores every segment with the recipe's attention kind -> focus weights w (B, m)
g: RMSNorm -> linear -> class logits, applied to each φ_j (the hard read-out) or to Σ_j w_j φ_j (soft).

The focus weights come from the formula of `model.attention.kind` for one query over m keys:
vanilla softmax(s); differential softmax(s₁) − λ·softmax(s₂) with V1's λ and λ_init (layer 0);
doubly normalized with one query: each key's column normalisation against the learned sink b is
σ(s_j − b), then the row is normalised (without a sink, one query makes it uniform), mixed with
softmax by `mix`. Objectives that need a distribution (hard, LVML) and the focus measurements use
`focus_distribution(w)`: w itself, or for the signed differential map its positive part renormalised.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from diffformer.model.config import ModelConfig
from diffformer.model.norm import RMSNorm
from diffformer.model.transformer import SwiGLU


class FocusOutputs(NamedTuple):
    weights: torch.Tensor  # (B, m) the focus map (signed for differential)
    features: torch.Tensor  # (B, m, d) φ_j
    segment_logits: torch.Tensor  # (B, m, classes) g(φ_j)


class FocusModel(nn.Module):
    def __init__(self, config: ModelConfig, classes: int, segments: int, segment_length: int):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set to build a model")
        self.config, self.classes, self.segments, self.segment_length = config, classes, segments, segment_length
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.encoder_norm = RMSNorm(d, config.norm_eps)
        self.encoder = SwiGLU(d, config.mlp_hidden)
        self.scorer = FOCUS_SCORERS[config.attention.kind](config)
        self.classifier_norm = RMSNorm(d, config.norm_eps)
        self.classifier = nn.Linear(d, classes, bias=False)
        self.activation_checkpointing = False  # nothing deep enough to recompute; kept for the trainer
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=(3 * module.in_features) ** -0.5)  # the fan-in rule (§8)

    def fresh_copy(self) -> "FocusModel":
        return FocusModel(self.config, self.classes, self.segments, self.segment_length)

    def forward(self, tokens: torch.Tensor) -> FocusOutputs:
        segments = self.embed(tokens).view(tokens.shape[0], self.segments, self.segment_length, -1).mean(2)
        features = segments + self.encoder(self.encoder_norm(segments))
        return FocusOutputs(self.scorer(features), features, self.classify(features))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """g: class logits of segment features (..., d) -> (..., classes)."""
        return self.classifier(self.classifier_norm(features))

    def focus_distribution(self, weights: torch.Tensor) -> torch.Tensor:
        return self.scorer.distribution(weights)

    def attention_penalty(self) -> None:
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _Scorer(nn.Module):
    """One learned query against the segments' keys: s_j = q·k_j/√d."""

    def __init__(self, config: ModelConfig, queries: int = 1):
        super().__init__()
        self.key = nn.Linear(config.d_model, config.d_model, bias=False)
        self.query = nn.Parameter(torch.randn(queries, config.d_model // queries) * config.d_model**-0.5)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, m, d) -> (B, queries, m)."""
        keys = self.key(features).view(*features.shape[:2], self.query.shape[0], -1).transpose(1, 2)
        return (keys * self.query[None, :, None, :]).sum(-1) / math.sqrt(keys.shape[-1])

    def distribution(self, weights: torch.Tensor) -> torch.Tensor:
        return weights


class SoftmaxScorer(_Scorer):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scores(features)[:, 0].softmax(-1)


class DifferentialScorer(_Scorer):
    """softmax(s₁) − λ·softmax(s₂), two queries of width d/2, λ re-parameterised as in V1 (§2)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, queries=2)
        half = config.d_model // 2
        self.lambda_init = config.attention.lambda_init.value_at(0)
        self.lambda_vectors = nn.Parameter(torch.randn(4, half) * 0.1)  # λ_q1, λ_k1, λ_q2, λ_k2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        first, second = self.scores(features).softmax(-1).unbind(1)
        q1, k1, q2, k2 = self.lambda_vectors
        lam = torch.exp(torch.dot(q1, k1)) - torch.exp(torch.dot(q2, k2)) + self.lambda_init
        return first - lam * second

    def distribution(self, weights: torch.Tensor) -> torch.Tensor:
        positive = weights.clamp_min(0)
        return positive / positive.sum(-1, keepdim=True).clamp_min(1e-12)


class DoublyNormalizedScorer(_Scorer):
    """σ(s_j − b) normalised over j (one query's doubly normalized row with the sink b, §4), mixed with softmax."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.sink = nn.Parameter(torch.zeros(())) if config.attention.sink else None
        mix = config.attention.mix
        self.mix_logit = nn.Parameter(torch.zeros(())) if mix == "learned" else None
        self.fixed_mix = None if mix == "learned" else float(mix)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = self.scores(features)[:, 0]
        columns = torch.sigmoid(scores - self.sink) if self.sink is not None else torch.ones_like(scores)
        doubly = columns / columns.sum(-1, keepdim=True)
        mix = torch.sigmoid(self.mix_logit) if self.mix_logit is not None else self.fixed_mix
        return mix * doubly + (1 - mix) * F.softmax(scores, -1)


FOCUS_SCORERS = {
    "vanilla": SoftmaxScorer,
    "differential": DifferentialScorer,
    "doubly_normalized": DoublyNormalizedScorer,
}
