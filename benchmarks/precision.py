"""Whole training steps in float32 and in bf16 autocast (and compiled, with --compile), for every kind.

One step = forward, loss, backward, gradient clipping and the AdamW update, as the training
loop does it (the library's optimizer, loss and autocast). Every (kind, mode) pair is timed
in interleaved rounds in this one process, so machine drift hits all of them alike; the
table reports the median step, tokens/s, model FLOPs per token (docs/formulas.md §11), MFU
against the device's peak in that precision, the speed-up over the same kind's float32
eager step, and the step time relative to vanilla's in the same mode.

    python benchmarks/precision.py                      # d_model 256, 6 layers, T=256, batch 8
    python benchmarks/precision.py --length 1024 --batch 2 --compile
"""

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from diffformer import ModelConfig, Transformer
from diffformer.devices import autocast_for, benchmark_machine_line, peak_flops
from diffformer.metrics import scored_loss
from diffformer.model.attention import ATTENTION_KINDS
from diffformer.model.flops import training_flops_per_token
from diffformer.training.config import TrainConfig
from diffformer.training.optimizer import build_optimizer

PRECISIONS = ("fp32", "bf16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(ATTENTION_KINDS), choices=list(ATTENTION_KINDS))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=6)
    parser.add_argument("--n-heads", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def build_step(args, kind: str, precision: str, compiled: bool = False):
    """A zero-argument function running one full training step; returns its duration in seconds,
    and the model's training FLOPs per token."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = ModelConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        max_seq_len=args.length,
        attention={"kind": kind},
    )
    model = Transformer(config).to(device)
    optimizer = build_optimizer(model, TrainConfig(steps=10**6))
    forward = torch.compile(model) if compiled else model
    tokens = torch.randint(0, args.vocab, (args.batch, args.length + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, precision):
            loss = scored_loss(forward(inputs), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step, training_flops_per_token(model, args.length)


def main(argv=None) -> None:
    args = parse_args(argv)
    modes = [(p, False) for p in PRECISIONS] + ([(p, True) for p in PRECISIONS] if args.compile else [])
    built = {(kind, mode): build_step(args, kind, *mode) for kind in args.kinds for mode in modes}
    for step, _ in built.values():
        step()  # warm-up: allocations, kernel selection, compilation
        step()
    times = {key: [] for key in built}
    for _ in range(args.repeats):
        for key, (step, _) in built.items():
            times[key].append(step())
    median = {key: statistics.median(values) for key, values in times.items()}
    tokens = args.batch * args.length
    device = torch.device(args.device)
    peaks = {p: peak_flops(device, p) for p in PRECISIONS}
    table = Table(
        title=f"training step, {args.device}, d_model {args.d_model}, {args.n_layers} layers, "
        f"T={args.length}, batch {args.batch} (median of {args.repeats}, interleaved)"
    )
    for column in ("kind", "mode", "ms", "tok/s", "GFLOP/token", "MFU", "× fp32 eager speed", "time ÷ vanilla"):
        table.add_column(column, justify="left" if column in ("kind", "mode") else "right", no_wrap=True)
    for kind in args.kinds:
        for mode in modes:
            seconds, flops = median[(kind, mode)], built[(kind, mode)][1]
            vanilla = median.get(("vanilla", mode))
            table.add_row(
                kind,
                mode[0] + (" compiled" if mode[1] else ""),
                f"{1000 * seconds:.0f}",
                f"{tokens / seconds:,.0f}",
                f"{flops / 1e9:.3f}",
                f"{flops * tokens / seconds / peaks[mode[0]].flops_per_second:.1%}",
                f"{median[(kind, ('fp32', False))] / seconds:.2f}×",
                f"{seconds / vanilla:.2f}" if vanilla else "–",
            )
    table.caption = benchmark_machine_line()
    console = Console(width=160)
    console.print(table)
    for precision, peak in peaks.items():
        console.print(f"peak {precision}: {peak.flops_per_second / 1e9:,.0f} GFLOP/s ({peak.source})")


if __name__ == "__main__":
    main()
