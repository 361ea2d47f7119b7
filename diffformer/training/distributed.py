"""torchrun awareness: which process this is, how the model is spread over ranks, and the few collectives.

Started by torchrun (RANK/WORLD_SIZE set), every rank draws its own batches and only rank 0
writes the run folder, logs and shows progress. `train.parallel` chooses how the model is
spread: `ddp` keeps a whole replica on each rank and averages gradients; `fsdp` (FSDP2,
`fully_shard` per block and at the root) keeps 1/N of every parameter, gradient and AdamW
moment on each rank. Checkpoints are always the full, unsharded state, so a run trained
under either (or in one process) resumes, evaluates and probes in any of the three.
Started plainly, everything here is a no-op.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from diffformer.checkpoint import load_named_optimizer_state, named_optimizer_state


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_info() -> ProcessInfo:
    return ProcessInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def start(info: ProcessInfo, device: torch.device) -> None:
    if info.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def stop(info: ProcessInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(value: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()


class Parallelism:
    """How one run's model lives on the ranks: whole (one process or DDP) or sharded (FSDP2)."""

    def __init__(self, strategy: str, info: ProcessInfo, device: torch.device):
        self.info, self.device = info, device
        self.sharded = info.distributed and strategy == "fsdp"
        self._unsharded_copy: nn.Module | None = None

    def shard(self, model: nn.Module) -> nn.Module:
        """Under FSDP, shard `model` in place (each block its own unit, the rest at the root); before the
        optimizer is built, so that AdamW's moments are sharded too."""
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        return model

    def for_training(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: DDP's wrapper when replicas average gradients."""
        if self.info.distributed and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # The uniform-attention control leaves queries and keys without gradients.
            unused = model.config.uniform_attention
            return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)
        return model

    @property
    def measures_here(self) -> bool:
        """Whether this rank runs evaluations and attention measurements: rank 0, or every rank under FSDP,
        whose forward is a collective (the results are still reported from rank 0 alone)."""
        return self.info.is_main or self.sharded

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, dict] | None:
        """(a module holding the full weights, the optimizer state keyed by parameter name) on rank 0,
        None elsewhere. Under FSDP every rank must call it (it gathers the shards)."""
        if not self.sharded:
            return (model, named_optimizer_state(model, optimizer)) if self.info.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights, optimizer_state = get_state_dict(model, optimizer, options=options)
        if not self.info.is_main:
            return None
        if self._unsharded_copy is None:
            # One plain CPU copy, refilled at every checkpoint: safetensors' save_model needs a module
            # (it keeps one name for the tied embedding, as in a single-process run).
            self._unsharded_copy = model.fresh_copy()
        self._unsharded_copy.load_state_dict(weights)
        return self._unsharded_copy, optimizer_state

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Put a full, name-keyed optimizer state into `optimizer` (scattering it into shards under FSDP)."""
        if not self.sharded:
            load_named_optimizer_state(model, optimizer, state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
