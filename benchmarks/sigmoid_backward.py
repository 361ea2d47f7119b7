"""Sigmoid attention's training step against vanilla's: the hand-written blocked backward
(BlockedSigmoidAttention) and the generic recomputed blocks it replaced, side by side, per length.

    python benchmarks/sigmoid_backward.py                   # T = 256 and 1024
    python benchmarks/sigmoid_backward.py --lengths 2048 --n-layers 6

The three models run in one process in interleaved rounds (vanilla, hand-written, generic, vanilla, …), so
machine drift hits them alike; each time is the median over --repeats rounds after a warm-up. The table names
the machine. Memory stays linear in T on both sigmoid paths (each keeps q, k, v and one block of weights).
"""

import argparse
import statistics
import time

import torch

import diffformer.model.attention.sigmoid as sigmoid
from diffformer import ModelConfig, Transformer
from diffformer.devices import benchmark_machine_line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=8)
    parser.add_argument("--n-layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def step_seconds(model, tokens, hand_written: bool) -> float:
    sigmoid.HAND_WRITTEN_BACKWARD = hand_written
    started = time.perf_counter()
    model(tokens).float().logsumexp(-1).mean().backward()
    return time.perf_counter() - started


def measure(args, length: int) -> dict[str, float]:
    """Median seconds of one training step: vanilla, sigmoid hand-written, sigmoid generic."""

    def model(kind: str) -> Transformer:
        config = ModelConfig(
            vocab_size=256,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            max_seq_len=length,
            attention={"kind": kind},
        )
        return Transformer(config)

    runs = {"vanilla": (model("vanilla"), True), "hand-written": (model("sigmoid"), True)}
    runs["generic"] = (runs["hand-written"][0], False)
    tokens = torch.randint(0, 256, (args.batch, length))
    times = {name: [] for name in runs}
    for round_index in range(args.repeats + 1):
        for name, (module, hand_written) in runs.items():
            seconds = step_seconds(module, tokens, hand_written)
            if round_index:  # the first round warms everything up
                times[name].append(seconds)
    sigmoid.HAND_WRITTEN_BACKWARD = True
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"{benchmark_machine_line()}, fp32")
    print(f"model: {args.n_layers} layers, d_model {args.d_model}, {args.n_heads} heads, batch {args.batch}, rope")
    header = f"{'T':>6} {'vanilla (ms)':>13} {'hand-written (ms)':>18} {'generic (ms)':>13}"
    print(header + f" {'hand-written ÷ vanilla':>23} {'generic ÷ vanilla':>18}")
    for length in args.lengths:
        t = measure(args, length)
        print(
            f"{length:>6} {t['vanilla'] * 1e3:>13.1f} {t['hand-written'] * 1e3:>18.1f} {t['generic'] * 1e3:>13.1f}"
            f" {t['hand-written'] / t['vanilla']:>23.2f} {t['generic'] / t['vanilla']:>18.2f}"
        )


if __name__ == "__main__":
    main()
