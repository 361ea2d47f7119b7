"""Which device to run on, and the precision context a recipe asks for."""

from contextlib import nullcontext

import torch

from diffformer.errors import RecipeError


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """`auto` takes this process's GPU when there is one (under torchrun, the local rank's), else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RecipeError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """A device named on the command line (cpu, cuda, cuda:N or auto), refused clearly when absent."""
    if name == "auto":
        return pick_device("auto")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RecipeError(f"{option} {name!r} is not a device; expected cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise RecipeError(f"{option} {name!r}: diffformer runs on cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError(f"{option} {name}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RecipeError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_for(device: torch.device, precision: str):
    """bf16: autocast matrix products to bfloat16 (CPU or CUDA); fp32: nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
