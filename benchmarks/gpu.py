"""Training throughput on one GPU, ready for a lent device: every attention kind × precision × compile at
T = 1k / 4k / 16k — tokens/s, MFU against the datasheet's dense bf16 peak, peak memory, and which SDPA backend
PyTorch takes for that shape — and a timed slice of recipes/gpt2-small-gpu.yaml's model on random tokens
(the recipe's data needs the network; the slice measures the model, not the stream).

    python benchmarks/gpu.py                              # everything, on cuda
    python benchmarks/gpu.py --lengths 1024 --kinds vanilla differential --no-compile --json
    python benchmarks/gpu.py --device cpu --lengths 16 --d-model 32 --n-layers 1 --steps 1   # the logic, on a CPU

A shape that does not fit is reported as "out of memory" and the rest go on. Each row is its own model and
optimizer; times are the median step over --steps after --warmup steps, synchronised on CUDA.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from diffformer import ModelConfig, Transformer
from diffformer.devices import DATASHEET_BF16_PEAK, autocast_for, machine_description
from diffformer.model.attention import ATTENTION_KINDS
from diffformer.model.flex import flex_wanted
from diffformer.model.flops import training_flops_per_token

GPT2_RECIPE = Path(__file__).parent.parent / "recipes" / "gpt2-small-gpu.yaml"
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")  # PyTorch's order


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--kinds", nargs="+", default=list(ATTENTION_KINDS), choices=list(ATTENTION_KINDS))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--no-compile", action="store_true", help="eager only (default: eager and compiled)")
    parser.add_argument("--tokens-per-step", type=int, default=32768, help="batch = this ÷ T (at least 1)")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-gpt2-slice", action="store_true", help="skip the gpt2-small-gpu.yaml slice")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--position", choices=["rope", "alibi"], default="rope", help="alibi: the softmax kinds take FlexAttention"
    )
    parser.add_argument(
        "--flex", choices=["auto", "on", "off"], default="auto", help="DIFFFORMER_FLEX for the run (model/flex.py)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def datasheet_peak(device: torch.device) -> tuple[float | None, str]:
    """The dense bf16 peak of a known GPU (FLOP/s) and its name; None off a known GPU."""
    if device.type != "cuda":
        return None, "none (not a GPU)"
    name = torch.cuda.get_device_name(device)
    for model, peak in DATASHEET_BF16_PEAK.items():
        if model in name:
            return peak, f"{model} datasheet, dense bf16"
    return None, f"none known for {name}"


def sdpa_backend(device: torch.device, dtype: torch.dtype, heads: int, length: int, width: int) -> str:
    """The first SDPA backend, in PyTorch's order of preference, that runs a causal product of this shape."""
    if device.type != "cuda":
        return "n/a (cpu)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, heads, length, width, device=device, dtype=dtype)
    for name in SDPA_BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            return name.lower()
        except RuntimeError:
            continue
    return "none"


def time_training(config: ModelConfig, batch: int, length: int, precision: str, compiled: bool, args) -> dict:
    """Median step time, tokens/s, model FLOP/s and peak memory of AdamW training steps on random tokens."""
    device = torch.device(args.device)
    model = Transformer(config).to(device)
    flops_per_token = training_flops_per_token(model, length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if compiled else model
    tokens = torch.randint(0, config.vocab_size, (batch, length + 1), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for index in range(args.warmup + args.steps):
        started = time.perf_counter()
        with autocast_for(device, precision):
            logits = step_model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    tokens_per_second = batch * length / seconds
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "step_seconds": seconds,
        "tokens_per_second": tokens_per_second,
        "model_flops_per_second": flops_per_token * tokens_per_second,
        "peak_memory_bytes": peak_memory,
        "parameters": model.num_parameters(),
    }


def measure(args) -> list[dict]:
    device = torch.device(args.device)
    peak, _ = datasheet_peak(device)
    rows = []
    compile_modes = [False] if args.no_compile else [False, True]
    for length, kind, precision, compiled in itertools.product(
        args.lengths, args.kinds, args.precisions, compile_modes
    ):
        config = ModelConfig(
            vocab_size=50304,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            max_seq_len=length,
            position=args.position,
            attention={"kind": kind},
        )
        rows.append(_row(config, kind, length, precision, compiled, args, peak, device))
    if not args.no_gpt2_slice:
        recipe = yaml.safe_load(GPT2_RECIPE.read_text())
        config = ModelConfig(**{**recipe["model"], "vocab_size": 50304})
        length = min(config.max_seq_len, max(args.lengths))
        row = _row(
            config,
            "gpt2-small-gpu.yaml",
            length,
            "bf16" if device.type == "cuda" else "fp32",
            False,
            args,
            peak,
            device,
        )
        rows.append(row)
    return rows


def _row(config, label, length, precision, compiled, args, peak, device) -> dict:
    batch = max(1, args.tokens_per_step // length)
    row = {"kind": label, "length": length, "batch": batch, "precision": precision, "compiled": compiled}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    row["sdpa_backend"] = sdpa_backend(device, dtype, config.n_heads, length, config.d_model // config.n_heads)
    if config.position == "alibi" and flex_wanted(device):  # softmax kinds with ALiBi skip SDPA (model/flex.py)
        row["sdpa_backend"] = "FlexAttention (softmax kinds)"
    try:
        row.update(time_training(config, batch, length, precision, compiled, args))
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
        torch.cuda.empty_cache()
        return row
    # MFU against the dense bf16 datasheet peak; fp32 (TF32 or not is a setting) has none to read against.
    known = peak is not None and precision == "bf16"
    row["mfu"] = row["model_flops_per_second"] / peak if known else None
    return row


def render(rows: list[dict], device: torch.device) -> None:
    _, peak_name = datasheet_peak(device)
    print(f"machine: {machine_description()}; torch {torch.__version__}; MFU peak: {peak_name}")
    columns = f"{'kind':<20} {'T':>6} {'batch':>5} {'prec':>5} {'compile':>7}"
    header = f"{columns} {'tokens/s':>11} {'MFU':>6} {'peak mem':>9} sdpa"
    print(header)
    for row in rows:
        if "error" in row:
            print(
                f"{row['kind']:<20} {row['length']:>6} {row['batch']:>5} {row['precision']:>5} "
                f"{str(row['compiled']):>7} {row['error']}"
            )
            continue
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        memory = "n/a" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / 2**30:.1f} GiB"
        print(
            f"{row['kind']:<20} {row['length']:>6} {row['batch']:>5} {row['precision']:>5} {str(row['compiled']):>7} "
            f"{row['tokens_per_second']:>11,.0f} {mfu:>6} {memory:>9} {row['sdpa_backend']}"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["DIFFFORMER_FLEX"] = args.flex
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but this machine has no CUDA device (use --device cpu to check the logic)")
    rows = measure(args)
    if args.json:
        print(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    else:
        render(rows, torch.device(args.device))


if __name__ == "__main__":
    main()
