"""Ways to compute differential attention's (A1 − λA2)·V, timed side by side against vanilla attention.

    python benchmarks/differential_layout.py [--length 1024] [--d-head 32 64] [--batch 4] [--dtype bf16]

Layouts (P pairs, each map's q/k of width d, V of width 2d):
  vanilla   the reference: vanilla attention of the same model, 2P heads of width d through SDPA
  split-v   two calls, V split into halves of width d (q/k computed twice)
  padded-qk one call, q and k zero-padded to width 2d (what diffformer uses)
  wide-v    one call with V twice as wide as q/k (leaves the fused kernel on CPU)
  explicit  the maps materialised, combined, then one product with V: vanilla's FLOPs, T×T memory
Forward+backward of the attention op alone; ratios are to vanilla in the same run. Through
fused kernels differential attention must multiply both maps by V (twice vanilla's A·V), so
`padded-qk ÷ vanilla` is the floor of its attention cost on a device; a whole training step's
ratio is that floor diluted by the projections and MLP.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from diffformer.devices import benchmark_machine_line


def layouts(q, k, v, d, lam=0.8):
    both_v = v.repeat(1, 2, 1, 1)
    pairs = v.shape[1]
    vanilla_v = torch.cat(v.split(d, -1), dim=1)  # 2P heads of width d: the same values, laid out for vanilla

    def explicit():
        length = q.shape[-2]
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = (q * d**-0.5) @ k.transpose(-1, -2)
        maps = scores.masked_fill(future, float("-inf")).softmax(-1)
        return (maps[:, :pairs] - lam * maps[:, pairs:]) @ v

    return {
        "vanilla": lambda: F.scaled_dot_product_attention(q, k, vanilla_v, is_causal=True),
        "split-v": lambda: torch.cat(
            [F.scaled_dot_product_attention(q, k, half.repeat(1, 2, 1, 1), is_causal=True) for half in v.split(d, -1)],
            dim=-1,
        ),
        "padded-qk": lambda: F.scaled_dot_product_attention(
            F.pad(q, (0, d)), F.pad(k, (0, d)), both_v, is_causal=True, scale=d**-0.5
        ),
        "wide-v": lambda: F.scaled_dot_product_attention(q, k, both_v, is_causal=True),
        "explicit": explicit,
    }


def best_time(fn, repeats: int) -> float:
    fn().sum().backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().sum().backward()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--d-head", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    table = Table(
        title=f"differential attention op, fwd+bwd, {args.dtype}, T={args.length}, batch {args.batch}, "
        f"{args.pairs} pairs (best of {args.repeats})"
    )
    for column in ("d_head", "layout", "time (ms)", "× vanilla"):
        table.add_column(column, justify="right")
    for d in args.d_head:
        shape = (args.batch, 2 * args.pairs, args.length, d)
        q, k = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(args.batch, args.pairs, args.length, 2 * d, dtype=dtype, requires_grad=True)
        timings = {name: best_time(fn, args.repeats) for name, fn in layouts(q, k, v, d).items()}
        for name, seconds in timings.items():
            table.add_row(str(d), name, f"{seconds * 1e3:.0f}", f"{seconds / timings['vanilla']:.2f}")
    table.caption = benchmark_machine_line()
    Console().print(table)


if __name__ == "__main__":
    main()
