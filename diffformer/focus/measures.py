"""What the focus lab measures (docs/formulas.md §14), as a held-out evaluation and as tracked dynamics.

Per example, with α the focus distribution and ĵ = argmax_j α_j:
- focus true: ĵ is the foreground segment; prediction true: the hard read-out g(φ_ĵ) names the label.
  FTPT / FFPT / FTPF / FFPF split the examples by these two (they sum to 1).
- accuracy under three read-outs: hard argmax g(φ_ĵ), mixture argmax Σ_j α_j p_j, soft argmax g(Σ_j α_j φ_j);
- foreground mass: α on the foreground segment.
The objective object here is what training and `diffformer eval` use for a focus run.
"""

import math

import torch

from diffformer.devices import autocast_for
from diffformer.dynamics.records import DynamicsRecord
from diffformer.focus.objectives import FocusSettings, example_losses, fixed_focus, focus_loss
from diffformer.metrics import evaluation_mode

# The read-out each objective trains: its "accuracy".
OWN_READOUT = {"soft": "accuracy_soft", "hard": "accuracy_hard", "lvml": "accuracy_mixture"}
INCENTIVE_STEP = 0.01


def readouts(model, outputs, batch, alpha=None, signed_map: str = "positive_part") -> dict[str, torch.Tensor]:
    """Per-example measurements (B,) as floats; `alpha` replaces the focus model's weights (fixed focus);
    a signed map is read as the distribution `signed_map` makes of it (the one the objective trains)."""
    weights = outputs.weights if alpha is None else alpha
    distribution = model.focus_distribution(outputs, signed_map) if alpha is None else alpha
    labels, foreground = batch.targets[:, 0], batch.foreground
    focused = distribution.argmax(-1)
    focus_true = focused == foreground
    rows = torch.arange(len(labels), device=labels.device)
    hard = outputs.segment_logits[rows, focused].argmax(-1) == labels
    mixture = (distribution[..., None] * outputs.segment_logits.float().softmax(-1)).sum(1).argmax(-1) == labels
    soft = model.classify((weights[..., None] * outputs.features).sum(1)).argmax(-1) == labels
    measured = {
        "ftpt": focus_true & hard,
        "ffpt": ~focus_true & hard,
        "ftpf": focus_true & ~hard,
        "ffpf": ~focus_true & ~hard,
        "accuracy_hard": hard,
        "accuracy_mixture": mixture,
        "accuracy_soft": soft,
    }
    measured = {name: value.float() for name, value in measured.items()}
    measured["foreground_mass"] = distribution.gather(1, foreground[:, None]).squeeze(1).float()
    return measured


class FocusObjective:
    """The focus task's loss, held-out evaluation and tracker, as the trainer uses them."""

    distributed = False  # fixed focus reads the classifier outside forward; one process trains a focus run

    def __init__(self, settings: FocusSettings):
        self.settings = settings

    def alpha(self, model, batch) -> torch.Tensor | None:
        weight = self.settings.fixed_foreground
        return None if weight is None else fixed_focus(batch.foreground, model.segments, weight)

    def loss(self, model, outputs, batch, step: int) -> torch.Tensor:
        objective = self.settings.objective_at(step)
        alpha, signed_map = self.alpha(model, batch), self.settings.signed_map
        return focus_loss(objective, model, outputs, batch.targets[:, 0], alpha, signed_map)

    @torch.no_grad()
    def evaluate(
        self, model, data, seed, batches, batch_size, device, precision="fp32", split="val", on_batch=None
    ) -> dict:
        """Means over `batches` held-out batches with standard errors over examples; loss is the final objective's,
        accuracy its own read-out's (soft: soft, hard and hybrid: hard, lvml: mixture)."""
        collected: dict[str, list[torch.Tensor]] = {}
        objective = self.settings.final_objective
        with evaluation_mode(model):
            for index in range(batches):
                batch = data.batch(seed, split, index, batch_size).to(device)
                with autocast_for(device, precision):
                    outputs = model(batch.inputs)
                    alpha = self.alpha(model, batch)
                    signed_map = self.settings.signed_map
                    measured = readouts(model, outputs, batch, alpha, signed_map)
                    labels = batch.targets[:, 0]
                    measured["loss"] = example_losses(objective, model, outputs, labels, alpha, signed_map)
                for name, values in measured.items():
                    collected.setdefault(name, []).append(values.cpu())
                if on_batch is not None:
                    on_batch(index + 1, batches)
        metrics: dict[str, float] = {}
        for name, parts in collected.items():
            values = torch.cat(parts).double()
            metrics[name] = float(values.mean())
            metrics[f"{name}_se"] = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
        metrics["accuracy"] = metrics[OWN_READOUT[objective]]
        metrics["accuracy_se"] = metrics[f"{OWN_READOUT[objective]}_se"]
        metrics["examples"] = len(torch.cat(collected["loss"]))
        return metrics

    def tracker(self, settings, model, data, device, precision) -> "FocusTracker":
        return FocusTracker(self, settings, model, data, device, precision)


class FocusTracker:
    """The focus measurements on one fixed batch (as `track:` fixes it), into dynamics.jsonl's "model" part;
    with fixed focus also L(α) and the incentive L(α) − L(α + 0.01) (backwards, L(α − 0.01) − L(α), at α = 1)."""

    def __init__(self, objective: FocusObjective, settings, model, data, device, precision):
        self.objective, self.model, self.device, self.precision = objective, model, device, precision
        self.batch = data.batch(settings.seed, "probe", 0, settings.batch_size).to(device)

    @torch.no_grad()
    def measure(self, step: int) -> DynamicsRecord:
        model, batch, settings = self.model, self.batch, self.objective.settings
        with evaluation_mode(model), autocast_for(self.device, self.precision):
            outputs = model(batch.inputs)
            alpha = self.objective.alpha(model, batch)
            readings = readouts(model, outputs, batch, alpha, settings.signed_map)
            measured = {name: float(v.mean()) for name, v in readings.items()}
            measured["loss"] = float(self.objective.loss(model, outputs, batch, step))
            if settings.fixed_foreground is not None:
                measured.update(self._incentive(outputs, settings.objective, settings.fixed_foreground))
        return DynamicsRecord(step, model=measured)

    def _incentive(self, outputs, objective: str, weight: float) -> dict[str, float]:
        def loss_at(a: float) -> float:
            alpha = fixed_focus(self.batch.foreground, self.model.segments, a)
            return float(focus_loss(objective, self.model, outputs, self.batch.targets[:, 0], alpha))

        here = loss_at(weight)
        if weight + INCENTIVE_STEP <= 1.0:
            incentive = here - loss_at(weight + INCENTIVE_STEP)
        else:
            incentive = loss_at(weight - INCENTIVE_STEP) - here
        return {"loss_at_alpha": here, "incentive": incentive}
