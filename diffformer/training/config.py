"""The `train:` and `eval:` sections of a recipe: optimisation, bookkeeping and periodic evaluation."""

from typing import Literal

from pydantic import Field, model_validator

from diffformer.sections import MAX_TOKENS, Section


class EarlyStop(Section):
    """Stop when a held-out metric (checked on the eval cadence) reaches a threshold; the step is recorded."""

    metric: str = Field(description="An eval metric: exact_match, accuracy, loss, bits_per_byte, …")
    at_least: float | None = Field(None, description="Stop once the metric is at least this (exact_match: 0.99).")
    at_most: float | None = Field(None, description="Stop once the metric is at most this (loss: 0.05).")

    @model_validator(mode="after")
    def _one_threshold(self) -> "EarlyStop":
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("train.early_stop needs exactly one of at_least and at_most")
        return self

    def met(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        return value >= self.at_least if self.at_least is not None else value <= self.at_most


class TrainConfig(Section):
    """Optimisation and bookkeeping of a training run."""

    steps: int = Field(1000, gt=0, le=10**9, description="Optimizer steps.")
    batch_size: int = Field(
        32, gt=0, le=MAX_TOKENS, description="Sequences per micro-batch (per process under torchrun)."
    )
    grad_accumulation: int = Field(1, gt=0, le=MAX_TOKENS, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Cosine decay ends at lr × this.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warm-up steps; default min(100, steps/10).")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW decay on weight matrices only.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the global gradient norm (null: no clipping).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="bf16 = autocast on CPU or CUDA; auto = bf16 where the device's bf16 matrix products are at "
        "least 2x float32's (GPUs with bf16, CPUs with AMX), else fp32. The run folder records the choice.",
    )
    compile: bool = Field(False, description="torch.compile the model (same results within float tolerance).")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Under torchrun: ddp (a replica per rank) or fsdp (FSDP2, parameters sharded)."
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in backward: less memory, ~1/3 more compute."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = Field(10, gt=0, description="Steps between metrics.jsonl lines.")
    checkpoint_every: int = Field(
        200, gt=0, description="Steps between checkpoints (one is always written at the end)."
    )
    keep_checkpoints: int = Field(2, gt=0, description="How many of the latest checkpoints to keep.")
    early_stop: EarlyStop | None = Field(
        None, description="Stop at a held-out metric threshold and record the step: steps to learn."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.warmup_steps is not None and self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1) (got {list(self.betas)})")
        return self

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.steps // 10)


class EvalConfig(Section):
    """Periodic evaluation on held-out batches (the same batches every time)."""

    every: int = Field(200, gt=0, description="Steps between evaluations (and one at the end).")
    batches: int = Field(8, gt=0, le=MAX_TOKENS, description="Held-out batches per evaluation.")
    batch_size: int | None = Field(None, gt=0, le=MAX_TOKENS, description="Default: train.batch_size.")
