"""The training loop itself: step (forward, loss, backward, clip, optimizer step), record, checkpoint.

Exact resume rests on three facts: every batch is a pure function of (seed, batch
index); dropout's generator is re-seeded from (seed, step, rank) at every step; and
checkpoints hold weights, AdamW moments and the step. So a run killed at any moment
and resumed ends with the same weights as one never interrupted (on the same
device and thread count).
"""

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffformer.checkpoint import save_checkpoint
from diffformer.devices import PeakFlops, autocast_for, machine_description, peak_flops
from diffformer.errors import CompileFailed, DiffformerError, TrainingDiverged, first_line
from diffformer.experiments import experiment_for
from diffformer.model.flops import training_flops_per_token
from diffformer.recipe import Recipe
from diffformer.run_folder import RunFolder, RunSummary
from diffformer.training import distributed
from diffformer.training.listeners import StepReport, notify
from diffformer.training.optimizer import learning_rate


class Interrupted(DiffformerError):
    """Ctrl-C: a checkpoint was saved and the run can be resumed."""

    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path
    name: str
    steps: int
    tokens_seen: int
    parameters: int
    wall_seconds: float
    final_loss: float
    resumed_from: int | None
    eval: dict[str, float] = field(default_factory=dict)
    already_finished: bool = False
    throughput: dict = field(default_factory=dict)  # this session's tokens/s and MFU, and the peak used
    stopped_early_at: int | None = None  # train.early_stop: the step whose evaluation met the threshold

    def summary(self) -> RunSummary:
        """What RUN/summary.json records."""
        return RunSummary(
            name=self.name,
            steps=self.steps,
            tokens_seen=self.tokens_seen,
            parameters=self.parameters,
            wall_seconds=self.wall_seconds,
            final_loss=self.final_loss,
            eval=self.eval,
            throughput=self.throughput,
            stopped_early_at=self.stopped_early_at,
            machine=machine_description(),
        )

    @classmethod
    def already_trained(cls, run_dir: Path, summary: RunSummary) -> "TrainResult":
        """The result of a run that finished before, read back from its summary."""
        return cls(
            run_dir,
            summary.name,
            summary.steps,
            summary.tokens_seen,
            summary.parameters,
            summary.wall_seconds,
            summary.final_loss,
            summary.steps,
            summary.eval,
            already_finished=True,
            stopped_early_at=summary.stopped_early_at,
        )


class _Throughput:
    """Tokens and model FLOPs per second since the last reading, and MFU: FLOP/s per rank ÷ the device's peak
    (None where no peak is known: devices.peak_flops)."""

    def __init__(self, peak: PeakFlops | None, world_size: int):
        self.peak, self.world_size = peak, world_size
        self.started, self.tokens, self.flops = time.perf_counter(), 0, 0

    def add(self, tokens: int, flops: int) -> None:
        self.tokens += tokens
        self.flops += flops

    def read_and_reset(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rates = {
            "tokens_per_sec": self.tokens / elapsed,
            "mfu": None if self.peak is None else self.flops / elapsed / self.world_size / self.peak.flops_per_second,
        }
        self.started, self.tokens, self.flops = time.perf_counter(), 0, 0
        return rates


class Trainer:
    """One training run's state and the steps that advance it; reports to `listeners` (rank 0 only)."""

    def __init__(self, recipe: Recipe, stored_recipe: dict, data, model, optimizer, progress, parallel, listeners):
        self.recipe, self.stored_recipe = recipe, stored_recipe
        self.config = recipe.train
        self.folder = RunFolder(recipe.run_dir)
        self.data, self.model, self.optimizer = data, model, optimizer
        self.progress, self.parallel = progress, parallel
        self.device, self.info = parallel.device, parallel.info
        self.listeners = list(listeners) if self.info.is_main else []
        self.forward_model = parallel.for_training(model)
        if self.config.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.interrupted = False
        self.flops_per_token: dict[int, int] = {}  # by sequence length
        self.objective = experiment_for(recipe.data).objective(recipe.focus)
        self.tracker = None
        if recipe.track is not None and parallel.measures_here:
            self.tracker = self.objective.tracker(recipe.track, model, data, self.device, self.config.precision)
        self.last_loss = math.nan
        self.stopped_early_at: int | None = None
        self.last_eval: dict[str, float] = {}
        self.eval_batch_size = recipe.eval.batch_size or self.config.batch_size

    def run(self) -> TrainResult:
        """Train up to train.steps; returns the result (the caller writes the summary)."""
        started, wall_before = time.perf_counter(), self.progress.wall_seconds
        peak = peak_flops(self.device, self.config.precision)
        throughput, session = _Throughput(peak, self.info.world_size), _Throughput(peak, self.info.world_size)
        if self.progress.step == 0:
            self._track(0, last=False)
        with self._ctrl_c_saves_a_checkpoint():
            while self.progress.step < self.config.steps:
                tokens, flops, grad_norm, lr = self._compiled_step() if self.config.compile else self._step()
                throughput.add(tokens, flops)
                session.add(tokens, flops)
                self.progress.wall_seconds = wall_before + time.perf_counter() - started
                step, last = self.progress.step, self.progress.step == self.config.steps
                notify(self.listeners, "on_step", StepReport(step, self.config.steps, self.last_loss, lr))
                record = self._record(step, last, grad_norm, lr, throughput)
                if record:
                    notify(self.listeners, "on_record", record)
                self._track(step, last)
                if not last and self._stops_early(step):
                    self.stopped_early_at, last = step, True
                if step % self.config.checkpoint_every == 0 or last or self.interrupted:
                    self._checkpoint()
                if self.interrupted and not last:
                    raise Interrupted(
                        f"interrupted at step {step}; checkpoint saved in {self.folder.path}; "
                        f"continue with: diffformer train {self.folder.path} --resume"
                    )
                if last:
                    break
        return TrainResult(
            self.folder.path,
            self.recipe.name,
            self.progress.step,
            self.progress.tokens_seen,
            self.model.num_parameters(),
            self.progress.wall_seconds,
            self.last_loss,
            None,
            self.last_eval,
            throughput={
                **session.read_and_reset(),
                "peak_flops": None if peak is None else peak.flops_per_second,
                "peak_source": "none known (set DIFFFORMER_PEAK_TFLOPS)" if peak is None else peak.source,
            },
            stopped_early_at=self.stopped_early_at,
        )

    def _stops_early(self, step: int) -> bool:
        """Whether train.early_stop's threshold was met by this step's evaluation (every rank gets rank 0's word)."""
        rule = self.config.early_stop
        if rule is None or step % self.recipe.eval.every:
            return False
        met = torch.tensor(float(rule.met(self.last_eval)), device=self.device)
        return bool(distributed.mean_across_ranks(met, self.info) > 0)

    def _record(self, step: int, last: bool, grad_norm: float, lr: float, throughput: _Throughput) -> dict:
        """The metrics record of this step: training numbers on the log cadence, eval_* on the eval cadence."""
        record = {}
        if step % self.config.log_every == 0 or last:
            record = {
                "step": step,
                "tokens": self.progress.tokens_seen,
                "loss": self.last_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                **throughput.read_and_reset(),
                "elapsed": self.progress.wall_seconds,
            }
        if step % self.recipe.eval.every == 0 or last:
            self.last_eval = self._evaluate()
            record = {
                "step": step,
                "tokens": self.progress.tokens_seen,
                **record,
                **{f"eval_{k}": v for k, v in self.last_eval.items()},
            }
        return record

    def _track(self, step: int, last: bool) -> None:
        """An attention measurement on the tracking cadence (and at the last step), when the recipe asks."""
        if self.tracker is not None and (step % self.recipe.track.every == 0 or last):
            self._at_step(step)  # measured as the model stands after `step` steps (λ warm-up)
            notify(self.listeners, "on_dynamics", self.tracker.measure(step))

    @contextmanager
    def _ctrl_c_saves_a_checkpoint(self):
        def on_interrupt(signum, frame) -> None:
            # The first Ctrl-C finishes the step and saves; a second one stops at once.
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)
            notify(self.listeners, "on_interrupt")

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _step(self) -> tuple[int, int, float, float]:
        """One optimizer step over grad_accumulation micro-batches; returns (tokens, model FLOPs, grad norm, lr),
        tokens and FLOPs summed over ranks."""
        config, step, info = self.config, self.progress.step, self.info
        self._at_step(step)
        lr = learning_rate(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=self.device)
        tokens = flops = 0
        for micro in range(config.grad_accumulation):
            # The global batch of a step is the same sequences however it is split into ranks × micro-batches,
            # so N ranks reproduce one process accumulating N micro-batches (dropout included).
            index = (step * config.grad_accumulation + micro) * info.world_size + info.rank
            torch.manual_seed(_dropout_seed(self.recipe.seed, index))  # resumable
            batch = self.data.batch(self.recipe.seed, "train", index, config.batch_size).to(self.device)
            with autocast_for(self.device, config.precision):
                outputs = self.forward_model(batch.inputs)
                loss = self.objective.loss(self.model, outputs, batch, step) / config.grad_accumulation
            penalty = self.model.attention_penalty()  # recorded losses stay the language-model loss
            (loss if penalty is None else loss + penalty / config.grad_accumulation).backward()
            total_loss += loss.detach()
            tokens += batch.inputs.numel() * info.world_size
            flops += batch.inputs.numel() * info.world_size * self._flops_per_token(batch.inputs.shape[1])
        total_loss = distributed.mean_across_ranks(total_loss, info)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor replicated on every rank
            grad_norm = grad_norm.full_tensor()
        if not (torch.isfinite(total_loss) and torch.isfinite(grad_norm)):
            kept = self.folder.complete_checkpoints()
            where = f"the last good checkpoint ({kept[-1].name}) is kept" if kept else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"loss became {total_loss.item()} (grad norm {grad_norm.item()}) at step "
                f"{step + 1}; training stopped and {where} in {self.folder.path}"
            )
        self.optimizer.step()
        self.last_loss = total_loss.item()
        self.progress.step += 1
        self.progress.tokens_seen += tokens
        return tokens, flops, grad_norm.item(), lr

    def _compiled_step(self) -> tuple[int, int, float, float]:
        """A step of the compiled model; a compiler failure is one line naming the way out, not a traceback."""
        from torch._dynamo.exc import TorchDynamoException

        try:
            return self._step()
        except TorchDynamoException as error:
            raise CompileFailed(
                f"torch.compile failed at step {self.progress.step + 1} ({first_line(error)}); "
                "train without it: --set train.compile=false"
            ) from None

    def _at_step(self, step: int) -> None:
        """Tell the model which training step its next forwards belong to (a kind's schedule: λ warm-up)."""
        if hasattr(self.model, "at_step"):
            self.model.at_step(step)

    def _flops_per_token(self, length: int) -> int:
        if length not in self.flops_per_token:
            self.flops_per_token[length] = training_flops_per_token(self.model, length)
        return self.flops_per_token[length]

    def _evaluate(self) -> dict[str, float]:
        # Rank 0 evaluates while the others wait (all ranks under FSDP, whose forward is a collective);
        # metrics are logged once, from rank 0.
        metrics = {}
        self._at_step(self.progress.step)
        if self.parallel.measures_here:
            metrics = self.objective.evaluate(
                self.model,
                self.data,
                self.recipe.seed,
                self.recipe.eval.batches,
                self.eval_batch_size,
                self.device,
                self.config.precision,
            )
        distributed.barrier(self.info)
        return metrics

    def _checkpoint(self) -> None:
        full_state = self.parallel.full_state(self.model, self.optimizer)  # a collective under FSDP
        if full_state is not None:
            weights, optimizer_state = full_state
            keep = self.config.keep_checkpoints
            save_checkpoint(self.folder.path, weights, optimizer_state, self.stored_recipe, self.progress, keep)
        distributed.barrier(self.info)


def _dropout_seed(seed: int, batch_index: int) -> int:
    return (seed * 1_000_003 + batch_index * 7_919) % (2**63)
