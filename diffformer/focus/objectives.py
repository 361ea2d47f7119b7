"""How the focus lab trains attention (Vashisht & Ramaswamy 2023; docs/formulas.md §14): the `focus:` section.

With focus weights α over the m segments (the focus model's, or fixed), segment features φ_j,
the classifier g and p_j = softmax(g(φ_j)), for an example with label y:
    soft   = CE(y, g(Σ_j α_j φ_j))
    hard   = Σ_j α_j CE(y, g(φ_j))            (the exact expectation over the focused segment)
    lvml   = −log Σ_j α_j p_j(y)
    hybrid = soft while the optimizer step is at most `switch_step`, hard from the step after it.
Soft uses the focus map as the model applies it (signed for differential); hard and LVML, which need a
distribution, use `focus_distribution` of it (for a signed map, as `signed_map` says). Each loss is the
mean over the batch.
Fixed focus (`fixed_foreground: a`): α is a on the foreground and (1 − a)/(m − 1) on every other
segment, whatever the focus model says; only g (and the segment encoder) learn.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from diffformer.model.focus import FocusOutputs
from diffformer.sections import Section

Objective = Literal["soft", "hard", "lvml", "hybrid"]
SignedMap = Literal["positive_part", "absolute", "softmax"]


class FocusSettings(Section):
    """The `focus:` section of a focus-task recipe."""

    objective: Objective = Field("soft", description="soft, hard, lvml, or hybrid (soft, then hard).")
    switch_step: int | None = Field(
        None, ge=0, description="hybrid: the last step trained with the soft loss; hard from the next step on."
    )
    signed_map: SignedMap = Field(
        "positive_part",
        description="How a signed focus map (differential) becomes the distribution hard and LVML read: "
        "positive_part (max(w,0) renormalised), absolute (|w|/Σ|w|) or softmax (of s₁ − λ·s₂).",
    )
    fixed_foreground: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Fixed focus: α is this on the foreground segment, the rest spread evenly; only the "
        "classifier learns. Tracking then records L(α) and the incentive L(α) − L(α + 0.01).",
    )

    @model_validator(mode="after")
    def _switch_for_hybrid(self) -> "FocusSettings":
        if (self.objective == "hybrid") != (self.switch_step is not None):
            raise ValueError("focus.switch_step is needed by, and only by, focus.objective: hybrid")
        if self.objective == "hybrid" and self.fixed_foreground is not None:
            raise ValueError("fixed focus trains the classifier alone; choose soft, hard or lvml")
        return self

    def objective_at(self, step: int) -> str:
        """The loss the optimizer step after `step` completed steps uses."""
        if self.objective == "hybrid":
            return "soft" if step < self.switch_step else "hard"
        return self.objective

    @property
    def final_objective(self) -> str:
        return "hard" if self.objective == "hybrid" else self.objective


def fixed_focus(foreground: torch.Tensor, segments: int, weight: float) -> torch.Tensor:
    """(B, m): `weight` on each example's foreground segment, (1 − weight)/(m − 1) elsewhere."""
    rest = torch.full((len(foreground), segments), (1 - weight) / (segments - 1), device=foreground.device)
    return rest.scatter(1, foreground[:, None], weight)


def focus_loss(
    objective: str, model, outputs: FocusOutputs, labels: torch.Tensor, alpha=None, signed_map="positive_part"
) -> torch.Tensor:
    """The objective's mean loss over the batch; `alpha` replaces the focus model's weights (fixed focus)."""
    return example_losses(objective, model, outputs, labels, alpha, signed_map).mean()


def example_losses(
    objective: str, model, outputs: FocusOutputs, labels: torch.Tensor, alpha=None, signed_map="positive_part"
) -> torch.Tensor:
    """The objective's loss of every example, (B,)."""
    weights = outputs.weights if alpha is None else alpha
    if objective == "soft":
        logits = model.classify((weights[..., None] * outputs.features).sum(1)).float()
        return F.cross_entropy(logits, labels, reduction="none")
    distribution = model.focus_distribution(outputs, signed_map) if alpha is None else alpha
    log_p = outputs.segment_logits.float().log_softmax(-1)
    log_p_label = log_p.gather(-1, labels[:, None, None].expand(-1, log_p.shape[1], 1)).squeeze(-1)  # (B, m)
    if objective == "hard":
        return -(distribution * log_p_label).sum(-1)
    if objective == "lvml":
        return -torch.log((distribution * log_p_label.exp()).sum(-1).clamp_min(1e-30))
    raise ValueError(f"unknown focus objective {objective!r}")
