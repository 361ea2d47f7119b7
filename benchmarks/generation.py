"""Generation speed with and without the decoding cache, per attention kind.

Greedy decoding of --new tokens after a --prompt-token prompt, batch --batch, on an untrained model of the
given shape; both ways timed in this process, alternating, the median of --repeats. The cache makes each
new token cost one row of attention per layer instead of a forward pass over the whole sequence.

    python benchmarks/generation.py
    python benchmarks/generation.py --prompt 256 --new 256 --kinds vanilla doubly_normalized
"""

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from diffformer import ModelConfig, Transformer
from diffformer.devices import benchmark_machine_line
from diffformer.generation import SamplingSettings, generate
from diffformer.model.attention import ATTENTION_KINDS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(ATTENTION_KINDS), choices=list(ATTENTION_KINDS))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    parser.add_argument("--new", type=int, default=192, help="tokens to generate")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    table = Table(title=f"greedy generation: {args.prompt}-token prompt + {args.new} new, batch {args.batch}, CPU fp32")
    for column in ("kind", "cached tok/s", "recomputed tok/s", "speed-up"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    prompt = torch.randint(0, 512, (args.batch, args.prompt))
    for kind in args.kinds:
        config = ModelConfig(
            vocab_size=512,
            d_model=args.d_model,
            n_layers=args.layers,
            n_heads=args.heads,
            max_seq_len=args.prompt + args.new,
            attention={"kind": kind},
        )
        model = Transformer(config).eval()
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for cached in (True, False):
                start = time.perf_counter()
                generate(model, prompt, args.new, SamplingSettings(temperature=0, use_cache=cached))
                times[cached].append(time.perf_counter() - start)
        rate = {cached: args.new * args.batch / statistics.median(t) for cached, t in times.items()}
        table.add_row(kind, f"{rate[True]:,.0f}", f"{rate[False]:,.0f}", f"{rate[True] / rate[False]:.1f}×")
    table.caption = benchmark_machine_line()
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
