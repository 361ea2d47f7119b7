"""The focus lab's model (Vashisht & Ramaswamy 2023; docs/formulas.md §14): a focus model f and a classifier g.

tokens (B, m·s) -> per segment: mean token embedding, + SwiGLU(RMSNorm(·))  = φ_j     (B, m, d)
f: one learned query scores every segment with the recipe's attention kind -> focus weights w (B, m)
g: RMSNorm -> linear -> class logits, applied to each φ_j (the hard read-out) or to Σ_j w_j φ_j (soft).

The focus weights come from the scorer that `model.attention.kind`'s registry entry names (each defined
beside its kind: vanilla softmax(s); differential softmax(s₁) − λ·softmax(s₂); doubly normalized σ(s_j − b)
row-normalised, mixed with softmax). Objectives that need a distribution (hard, LVML) and the focus
measurements use `focus_distribution`: w itself, or for the signed differential map the recipe's
`focus.signed_map` choice (positive part renormalised, |w| normalised, or softmax of s₁ − λ·s₂).
"""

from typing import NamedTuple

import torch
from torch import nn

from diffformer.model.attention.registry import kind_entry
from diffformer.model.config import ModelConfig
from diffformer.model.norm import RMSNorm
from diffformer.model.transformer import SwiGLU


class FocusOutputs(NamedTuple):
    weights: torch.Tensor  # (B, m) the focus map (signed for differential)
    features: torch.Tensor  # (B, m, d) φ_j
    segment_logits: torch.Tensor  # (B, m, classes) g(φ_j)
    scores: torch.Tensor | None = None  # (B, queries, m) the scorer's raw scores (what a signed map's softmax reads)


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
        scorer = kind_entry(config.attention.kind).focus_scorer
        if scorer is None:
            raise ValueError(f"the focus lab has no scorer for {config.attention.kind} attention")
        self.scorer = scorer(config)
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
        return FocusOutputs(self.scorer(features), features, self.classify(features), self.scorer.scores(features))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """g: class logits of segment features (..., d) -> (..., classes)."""
        return self.classifier(self.classifier_norm(features))

    def focus_distribution(self, outputs: FocusOutputs, signed_map: str = "positive_part") -> torch.Tensor:
        """α (B, m): the focus map of `outputs` as a distribution (FocusScorer.distribution)."""
        return self.scorer.distribution(outputs.weights, outputs.scores, signed_map)

    def attention_penalty(self) -> None:
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
