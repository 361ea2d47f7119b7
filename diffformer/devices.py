"""Which device to run on, the precision context a recipe asks for, and the device's peak FLOP/s (for MFU)."""

import math
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache

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


@cache
def machine_description() -> str:
    """This machine in one line, for every reported figure: the CPU model, its cores and torch's threads, whether
    it has bf16 matrix units (AMX or AVX-512 BF16: where bf16 beats fp32), and the GPUs torch sees."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    units = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16")) if flag in flags]
    bf16 = f"bf16 matrix units ({', '.join(units)})" if units else "no bf16 matrix units (fp32 is fastest)"
    text = f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {bf16}"
    if torch.cuda.is_available():
        text += "; " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return text


def benchmark_machine_line() -> str:
    """What every benchmark table names: the machine, torch's version, its threads (figures depend on them)."""
    import torch

    return f"machine: {machine_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def autocast_for(device: torch.device, precision: str):
    """bf16: autocast matrix products to bfloat16 (CPU or CUDA); fp32: nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# Dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s, no sparsity); fp32 runs are
# measured instead, since whether fp32 matmuls use TF32 is a setting, not a property of the card.
DATASHEET_BF16_PEAK = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
}


@dataclass(frozen=True)
class PeakFlops:
    """A device's peak matmul FLOP/s in a precision, and where the number comes from."""

    flops_per_second: float
    source: str  # "datasheet: <name>" or "measured: <how>"


# A machine's peak FLOP/s per process, in TFLOP/s, for MFU where no datasheet peak is known (CPUs, fp32 runs,
# unlisted GPUs): a property of the machine, so an environment variable rather than a recipe key.
PEAK_VARIABLE = "DIFFFORMER_PEAK_TFLOPS"


def peak_flops(device: torch.device, precision: str) -> PeakFlops | None:
    """The peak MFU is read against: the datasheet peak of a known GPU in bf16, else the one the user gives in
    $DIFFFORMER_PEAK_TFLOPS, else None — MFU is then "n/a". A CPU's peak is not measured for MFU: a short
    measurement at start-up reads a fraction of the real peak on a busy machine (MFU of 480% was shown)."""
    if device.type == "cuda" and precision == "bf16":
        name = torch.cuda.get_device_name(device)
        for model, peak in DATASHEET_BF16_PEAK.items():
            if model in name:
                return PeakFlops(peak, f"datasheet: {model}")
    given = os.environ.get(PEAK_VARIABLE)
    if given:
        try:
            tflops = float(given)
        except ValueError:
            tflops = -1.0
        if not tflops > 0 or not math.isfinite(tflops):
            raise RecipeError(f"{PEAK_VARIABLE}={given!r}: expected a positive number of TFLOP/s")
        return PeakFlops(tflops * 1e12, f"given: {PEAK_VARIABLE}={given}")
    return None


def mfu_text(mfu: float | None) -> str:
    """MFU as shown: a share up to 100%, else "n/a" (no peak known, or the measured rate above the peak
    given, which cannot be right)."""
    if mfu is None or not math.isfinite(mfu):
        return "MFU n/a"
    if mfu > 1:
        return f"MFU n/a (above the {PEAK_VARIABLE} peak)"
    return f"MFU {mfu:.1%}"


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where this device multiplies bf16 matrices at least twice as fast as float32
    (CUDA GPUs with bf16 support; CPUs with AMX or similar bf16 units, measured), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    bf16, fp32 = _measured_peak(device.type, device.index, "bf16"), _measured_peak(device.type, device.index, "fp32")
    return "bf16" if bf16.flops_per_second >= 2 * fp32.flops_per_second else "fp32"


@cache
def _measured_peak(device_type: str, index: int | None, precision: str, size: int = 1024) -> PeakFlops:
    """The best rate of `size`² products in `precision`. A few 256² products come first: where the precision
    is emulated (bf16 on a CPU without bf16 units takes seconds per 1024² product), their rate is the answer,
    so deciding `precision: auto` costs a fraction of a second on any machine."""
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    measured, rounds = min(256, size), 3
    seconds = _best_matmul_seconds(device, dtype, measured, rounds)
    if seconds * (size / measured) ** 3 < 0.05:  # a full-size product would take under 50 ms
        measured, rounds = size, 8
        seconds = _best_matmul_seconds(device, dtype, measured, rounds)
    how = f"measured: best of {rounds} {dtype} {measured}² matmuls, {torch.get_num_threads()} threads"
    return PeakFlops(2 * measured**3 / seconds, how)


def _best_matmul_seconds(device: torch.device, dtype: torch.dtype, size: int, rounds: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(rounds):  # the first rounds warm up kernels and caches; the best is the least disturbed
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best
