"""What attention tracking (`track:`) costs: one measurement against the training steps between two.

For the quickstart recipe (or --recipe) with each attention kind: the median time of a training
step (forward, loss, backward, clipping, AdamW, in the recipe's precision) and of one
measurement on the fixed batch, timed interleaved in this process; the overhead is
measurement ÷ (every × step).

    python benchmarks/tracking.py                       # quickstart, every 25 steps, batch 8
    python benchmarks/tracking.py --every 10 --batch 16
    python benchmarks/tracking.py --recipe recipes/dynamics/copy.yaml --kinds vanilla --every 20 --batch 16 --ktiw
"""

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from diffformer import Transformer
from diffformer.data import prepare_data
from diffformer.devices import autocast_for, benchmark_machine_line, resolve_precision
from diffformer.dynamics.tracker import AttentionTracker, TrackSettings
from diffformer.metrics import scored_loss
from diffformer.model.attention import ATTENTION_KINDS
from diffformer.recipe import load_recipe
from diffformer.training.optimizer import build_optimizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--kinds", nargs="+", default=list(ATTENTION_KINDS), choices=list(ATTENTION_KINDS))
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8, help="sequences in the measurement batch")
    parser.add_argument("--ktiw", action="store_true", help="measure KTIW too (one forward per source position)")
    parser.add_argument("--repeats", type=int, default=10)
    return parser.parse_args(argv)


def build(args, kind: str):
    """(one training step, one measurement): zero-argument functions returning their duration."""
    recipe = load_recipe(args.recipe, [f"model.attention.kind={kind}"])
    data = prepare_data(recipe.data)
    device = torch.device("cpu")
    precision = resolve_precision(recipe.train.precision, device)
    torch.manual_seed(0)
    model = Transformer(recipe.resolved_model(data.vocab_size))
    optimizer = build_optimizer(model, recipe.train)
    batch = data.batch(recipe.seed, "train", 0, recipe.train.batch_size)
    tracker = AttentionTracker(
        TrackSettings(every=args.every, batch_size=args.batch, ktiw=args.ktiw), model, data, device, precision
    )

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, precision):
            loss = scored_loss(model(batch.inputs), batch.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - start

    def measure() -> float:
        start = time.perf_counter()
        tracker.measure(0)
        return time.perf_counter() - start

    return step, measure, precision


def main(argv=None) -> None:
    args = parse_args(argv)
    built = {kind: build(args, kind) for kind in args.kinds}
    times = {kind: ([], []) for kind in args.kinds}
    for step, measure, _ in built.values():
        step(), measure()  # warm-up
    for _ in range(args.repeats):
        for kind, (step, measure, _) in built.items():
            times[kind][0].append(step())
            times[kind][1].append(measure())
    ktiw = ", with KTIW" if args.ktiw else ""
    table = Table(title=f"tracking cost, {args.recipe}, every {args.every} steps, batch {args.batch}{ktiw}")
    for column in ("kind", "precision", "step ms", "measurement ms", "overhead"):
        table.add_column(column, justify="left" if column in ("kind", "precision") else "right")
    for kind, (steps, measures) in times.items():
        step_time, measure_time = statistics.median(steps), statistics.median(measures)
        overhead = measure_time / (args.every * step_time)
        table.add_row(kind, built[kind][2], f"{1e3 * step_time:.1f}", f"{1e3 * measure_time:.1f}", f"{overhead:.1%}")
    table.caption = benchmark_machine_line()
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
