"""Whole training steps in float32 and in bf16 autocast, for every attention kind, side by side.

One step = forward, loss, backward, gradient clipping and the AdamW update, as the training
loop does it (the library's optimizer, loss and autocast). Every (kind, precision) pair is
timed in interleaved rounds in this one process, so machine drift hits all of them alike;
the table reports the median step, tokens/s and bf16's speed-up over float32 per kind.

    python benchmarks/precision.py                      # d_model 256, 6 layers, T=256, batch 8
    python benchmarks/precision.py --d-model 512 --length 1024
"""

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from diffformer import ModelConfig, Transformer
from diffformer.devices import autocast_for
from diffformer.metrics import scored_loss
from diffformer.model.attention import ATTENTION_KINDS
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def build_step(args, kind: str, precision: str):
    """A zero-argument function running one full training step; returns its duration in seconds."""
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
    tokens = torch.randint(0, args.vocab, (args.batch, args.length + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, precision):
            loss = scored_loss(model(inputs), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main(argv=None) -> None:
    args = parse_args(argv)
    steps = {(kind, p): build_step(args, kind, p) for kind in args.kinds for p in PRECISIONS}
    for step in steps.values():
        step()  # warm-up: allocations, kernel selection
    times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in steps.items():
            times[key].append(step())
    median = {key: statistics.median(values) for key, values in times.items()}
    tokens = args.batch * args.length
    table = Table(
        title=f"training step, {args.device}, d_model {args.d_model}, {args.n_layers} layers, "
        f"T={args.length}, batch {args.batch} (median of {args.repeats}, interleaved)"
    )
    table.add_column("kind", no_wrap=True)
    for column in ("fp32 ms", "fp32 tok/s", "bf16 ms", "bf16 tok/s", "bf16 ÷ fp32 time", "bf16 × vanilla"):
        table.add_column(column, justify="right")
    vanilla = median.get(("vanilla", "bf16"))
    for kind in args.kinds:
        fp32, bf16 = median[(kind, "fp32")], median[(kind, "bf16")]
        table.add_row(
            kind,
            f"{1000 * fp32:.0f}",
            f"{tokens / fp32:,.0f}",
            f"{1000 * bf16:.0f}",
            f"{tokens / bf16:,.0f}",
            f"{fp32 / bf16:.2f}× faster",
            f"{bf16 / vanilla:.2f}" if vanilla else "–",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
