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


def autocast_for(device: torch.device, precision: str):
    """bf16: autocast matrix products to bfloat16 (CPU or CUDA); fp32: nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
