"""What caching ALiBi's bias saves: a training step (forward + backward) with the bias built once per length
and shared by the layers, against rebuilt by every layer on every forward — side by side, per kind and length.

    python benchmarks/position_bias.py                   # T = 256 and 1024, every kind
    python benchmarks/position_bias.py --lengths 2048 --kinds vanilla

Both variants run in one process in interleaved rounds (cached, rebuilt, cached, rebuilt, …), so machine drift
hits both alike; each time is the median over --repeats rounds after a warm-up. The table names the machine.
"""

import argparse
import statistics
import time

import torch

import diffformer.model.position as position
from diffformer import ModelConfig, Transformer
from diffformer.devices import benchmark_machine_line
from diffformer.model.attention import ATTENTION_KINDS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--kinds", nargs="+", default=list(ATTENTION_KINDS), choices=list(ATTENTION_KINDS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=8)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def step_seconds(model, tokens) -> float:
    started = time.perf_counter()
    model(tokens).float().logsumexp(-1).mean().backward()
    return time.perf_counter() - started


def measure(args, kind: str, length: int) -> tuple[float, float]:
    """(cached, rebuilt) median seconds of one training step."""
    config = ModelConfig(
        vocab_size=256,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        max_seq_len=length,
        position="alibi",
        attention={"kind": kind},
    )
    model = Transformer(config)
    tokens = torch.randint(0, 256, (args.batch, length))
    times = {True: [], False: []}
    for round_index in range(args.repeats + 1):
        for cached in (True, False):
            position.USE_BIAS_CACHE = cached
            seconds = step_seconds(model, tokens)
            if round_index:  # the first round warms both up
                times[cached].append(seconds)
    position.USE_BIAS_CACHE = True
    return statistics.median(times[True]), statistics.median(times[False])


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"{benchmark_machine_line()}, fp32")
    print(f"model: {args.n_layers} layers, d_model {args.d_model}, {args.n_heads} heads, batch {args.batch}, ALiBi")
    print(f"{'kind':<18} {'T':>6} {'cached (ms)':>12} {'rebuilt (ms)':>13} {'rebuilt ÷ cached':>17}")
    for length in args.lengths:
        for kind in args.kinds:
            cached, rebuilt = measure(args, kind, length)
            print(f"{kind:<18} {length:>6} {cached * 1e3:>12.1f} {rebuilt * 1e3:>13.1f} {rebuilt / cached:>17.3f}")


if __name__ == "__main__":
    main()
