"""Forward+backward time and peak memory of each attention kind, as a table with ratios to vanilla.

    python benchmarks/attention.py                      # whole-model training step, T = 256..2048
    python benchmarks/attention.py --scope attention    # the attention layer alone
    python benchmarks/attention.py --dtype bf16 --json

Times are measured side by side: for each T one process builds every kind and times
them in interleaved rounds (A B C D A B C D ...), so machine drift hits all kinds alike;
each is the median over --repeats rounds after a warm-up. Peak memory is measured per
(kind, T) in a fresh process: on CUDA, torch.cuda.max_memory_allocated; on CPU, the rise
of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) over the
resident set before the step, with glibc told to return every large block to the OS on
free so that freed tensors do not hide the peak.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from diffformer.devices import benchmark_machine_line
from diffformer.model.attention import ATTENTION_KINDS

KINDS = list(ATTENTION_KINDS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument(
        "--scope",
        choices=["model", "attention"],
        default="model",
        help="a whole model's training step, or one attention layer alone",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=8)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model or layer first")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--time-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, metavar=("KIND", "T"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_step(args, kind: str, length: int):
    """A zero-argument function running one forward+backward of `kind` at length T, and the module it trains."""
    import torch

    from diffformer import ModelConfig, Transformer

    torch.manual_seed(0)
    device = torch.device(args.device)
    config = ModelConfig(
        vocab_size=512,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        max_seq_len=max(length, 16),
        attention={"kind": kind},
    )
    model = Transformer(config).to(device)
    if args.scope == "attention":
        module = model.blocks[1].attention
        forward = torch.compile(module) if args.compile else module
        inputs = torch.randn(args.batch, length, args.d_model, device=device, requires_grad=True)

        def loss():
            return forward(inputs).float().square().mean()
    else:
        module = model
        forward = torch.compile(model) if args.compile else model
        tokens = torch.randint(0, 512, (args.batch, length), device=device)

        def loss():
            logits = forward(tokens)
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())

    def step() -> float:
        module.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            value = loss()
        value.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step, module


def time_side_by_side(args, length: int) -> dict[str, float]:
    """Median step time of every kind at length T, timed in interleaved rounds in this process."""
    steps = {kind: build_step(args, kind, length)[0] for kind in args.kinds}
    for step in steps.values():
        step()  # warm-up
    times = {kind: [] for kind in args.kinds}
    for _ in range(args.repeats):
        for kind, step in steps.items():
            times[kind].append(step())
    return {kind: statistics.median(values) for kind, values in times.items()}


def peak_memory(args, kind: str, length: int) -> int:
    """Bytes the step needs above what was resident before it (run in a fresh process)."""
    import torch

    step, module = build_step(args, kind, length)
    step()
    module.zero_grad(set_to_none=True)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - baseline
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    baseline = _resident_kib("VmRSS") * 1024
    step()
    return _resident_kib("VmHWM") * 1024 - baseline


def _subprocess(args, extra: list[str], env: dict) -> dict:
    command = [
        sys.executable,
        __file__,
        *extra,
        "--scope",
        args.scope,
        "--batch",
        str(args.batch),
        "--d-model",
        str(args.d_model),
        "--n-heads",
        str(args.n_heads),
        "--n-layers",
        str(args.n_layers),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--kinds",
        *args.kinds,
        *(["--compile"] if args.compile else []),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {' '.join(extra)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def measure_length(args, length: int) -> list[dict]:
    """Rows for every kind at length T: times side by side in one process, memory one process each."""
    times = _subprocess(args, ["--time-length", str(length)], dict(os.environ))
    memory_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    return [
        {
            "kind": kind,
            "length": length,
            "seconds": times[kind],
            "peak_bytes": _subprocess(args, ["--memory", kind, str(length)], memory_env)["peak_bytes"],
        }
        for kind in args.kinds
    ]


def render(args, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    vanilla = {r["length"]: r for r in rows if r["kind"] == "vanilla"}
    table = Table(
        title=f"{args.scope} forward+backward, {args.device}, {args.dtype}, batch {args.batch}, "
        f"d_model {args.d_model}, {args.n_heads} heads" + (f", {args.n_layers} layers" if args.scope == "model" else "")
    )
    for column in ("kind", "T", "time (ms)", "× vanilla", "peak mem (MiB)", "mem × vanilla"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in rows:
        base = vanilla.get(row["length"])
        table.add_row(
            row["kind"],
            str(row["length"]),
            f"{row['seconds'] * 1e3:.1f}",
            f"{row['seconds'] / base['seconds']:.2f}" if base else "-",
            f"{row['peak_bytes'] / 2**20:.1f}",
            f"{row['peak_bytes'] / base['peak_bytes']:.2f}" if base and base["peak_bytes"] > 0 else "-",
        )
    table.caption = benchmark_machine_line()
    Console().print(table)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.time_length or args.memory:
        import torch

        if args.device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        if args.time_length:
            print(json.dumps(time_side_by_side(args, args.time_length)))
        else:
            print(json.dumps({"peak_bytes": peak_memory(args, args.memory[0], int(args.memory[1]))}))
        return
    rows = [row for length in args.lengths for row in measure_length(args, length)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        render(args, rows)


if __name__ == "__main__":
    main()
