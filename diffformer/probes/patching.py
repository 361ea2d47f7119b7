"""Activation patching: which layers, heads and positions carry a run's answer (docs/formulas.md §26).

Clean and corrupted inputs differ in one token that changes the answer: for each held-out sequence of a
retrieval task (mqar, needle), the value its first scored position must return is replaced, where it
sits in the evidence (the pair, the needle), by another value token. The metric is the logit difference
    m = logit(clean answer) − logit(corrupted answer)
at that scored position. The corrupted run is repeated with one activation taken from the clean run, and
each cell reports the share of the gap it restores,
    restored = (mean m_patched − mean m_corrupted) / (mean m_clean − mean m_corrupted),
1 when the patch brings the clean answer back entirely, 0 when it changes nothing; a 95% interval by
bootstrap over sequences. Patching every position of the residual stream before the first block restores
exactly 1 (the whole clean input); patching nothing, exactly 0.

Granularities (`by`):
- layers: per layer, the attention output, the MLP output and the residual stream before the block, at
  every position;
- heads: per layer and output head (a differential V1 pair is one head), the head's result (hook_z) at
  every position;
- positions: per layer and position, the residual stream before the block at that one position (read
  across sequences only where the task's layout puts the same thing at the same position: a fixed depth).
"""

import dataclasses
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffformer.data import IGNORE
from diffformer.errors import RecipeError
from diffformer.model.hooks import HookPoint, run_with_cache, run_with_hooks

GRANULARITIES = ("layers", "heads", "positions")
LAYER_PARTS = ("attention", "mlp", "residual")  # hook_attn_out, hook_mlp_out, hook_resid_pre
_LAYER_HOOKS = {"attention": "hook_attn_out", "mlp": "hook_mlp_out", "residual": "hook_resid_pre"}
BOOTSTRAP_SAMPLES = 1000


@dataclass
class PatchPairs:
    """Clean and corrupted sequences (N, T), the scored position of each and its two answers (N,)."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    position: torch.Tensor
    clean_answer: torch.Tensor
    corrupted_answer: torch.Tensor


def corrupted_pairs(batch) -> PatchPairs:
    """Pairs from a held-out Batch of a task that marks evidence: each sequence's first scored position; its
    answer token inside the evidence replaced by another sequence's answer (a valid value, never the same)."""
    if batch.evidence is None:
        raise RecipeError(
            "patching needs a task that marks where each answer comes from (mqar, needle), "
            "so that one token can change the answer"
        )
    inputs, targets = batch.inputs, batch.targets
    scored = targets != IGNORE
    keep = scored.any(1)
    position = scored.float().argmax(1)
    rows = torch.arange(inputs.shape[0])
    answer = targets[rows, position]
    start, end = batch.evidence[rows, position, 0], batch.evidence[rows, position, 1]
    candidates = answer[keep].unique()
    if candidates.numel() < 2:
        raise RecipeError("patching needs held-out sequences with at least two different answers; use more examples")
    corrupted = inputs.clone()
    replacement = torch.empty_like(answer)
    for b in range(inputs.shape[0]):
        span = torch.arange(int(start[b]), int(end[b]))
        where = span[inputs[b, span] == answer[b]] if keep[b] and start[b] >= 0 else span[:0]
        if where.numel() == 0:
            keep[b] = False
            continue
        others = candidates[candidates != answer[b]]
        replacement[b] = others[b % others.numel()]
        corrupted[b, where[-1]] = replacement[b]
    if not keep.any():
        raise RecipeError("no held-out sequence has its answer inside its evidence to corrupt")
    return PatchPairs(inputs[keep], corrupted[keep], position[keep], answer[keep], replacement[keep])


@dataclass
class PatchingReport:
    """Shares restored per cell: rows × columns, with 95% bootstrap intervals; rows are layers."""

    by: str
    rows: list[str]
    columns: list[str]
    restored: list[list[float]]
    low: list[list[float]]
    high: list[list[float]]
    sequences: int
    clean_metric: float  # mean logit difference, clean run
    corrupted_metric: float
    clean_accuracy: float  # the clean answer is the argmax at the scored position
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def strongest(self) -> tuple[str, str, float]:
        """(row, column, share) of the cell that restores most."""
        row, column = np.unravel_index(np.nanargmax(np.asarray(self.restored)), (len(self.rows), len(self.columns)))
        return self.rows[row], self.columns[column], self.restored[row][column]

    def _repr_html_(self) -> str:
        """A table coloured by share restored (blue up to 1, red below 0), for Jupyter."""
        header = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for name, shares, lows, highs in zip(self.rows, self.restored, self.low, self.high):
            cells = []
            for share, low, high in zip(shares, lows, highs):
                strength = max(-1.0, min(1.0, share))
                colour = f"rgba(33,102,172,{strength:.2f})" if strength >= 0 else f"rgba(178,24,43,{-strength:.2f})"
                cells.append(
                    f'<td style="background:{colour};text-align:right" title="95% {low:.2f} … {high:.2f}">'
                    f"{share:.2f}</td>"
                )
            body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
        caption = (
            f"share of the clean–corrupted logit gap restored, by {self.by}; {self.sequences} sequences; "
            f"clean {self.clean_metric:.2f}, corrupted {self.corrupted_metric:.2f}"
        )
        return f"<table><caption>{html.escape(caption)}</caption><tr><th></th>{header}</tr>{''.join(body)}</table>"


def logit_difference(logits: torch.Tensor, pairs: PatchPairs) -> torch.Tensor:
    """(N,) logit(clean answer) − logit(corrupted answer) at each pair's scored position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at = logits[rows, pairs.position].float()
    return at[rows, pairs.clean_answer] - at[rows, pairs.corrupted_answer]


def _replace_with(clean: torch.Tensor, where: tuple) -> Callable:
    """A hook function that puts the clean activation's `where` slice into the corrupted one."""

    def patch(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        activation = activation.clone()
        activation[where] = clean.to(activation.dtype)[where]
        return activation

    return patch


def patching_cells(model, by: str, length: int) -> tuple[list[str], list[str], list[tuple[str, tuple]]]:
    """Row labels, column labels and, per cell in row-major order, (hook name, index of the patched slice),
    for sequences of `length` tokens."""
    if by not in GRANULARITIES:
        raise RecipeError(f"--by must be one of {', '.join(GRANULARITIES)} (got {by!r})")
    layers = range(len(model.blocks))
    rows = [f"layer {layer}" for layer in layers]
    if by == "layers":
        cells = [(f"blocks.{layer}.{_LAYER_HOOKS[part]}", (slice(None),)) for layer in layers for part in LAYER_PARTS]
        return rows, list(LAYER_PARTS), cells
    if by == "heads":
        heads = range(model.blocks[0].attention.output_heads)
        cells = [
            (f"blocks.{layer}.attn.hook_z", (slice(None), slice(None), head)) for layer in layers for head in heads
        ]
        return rows, [f"head {head}" for head in heads], cells
    cells = [(f"blocks.{layer}.hook_resid_pre", (slice(None), t)) for layer in layers for t in range(length)]
    return rows, [str(t) for t in range(length)], cells


def patch_activations(
    model, pairs: PatchPairs, by: str, batch_size: int = 64, on_cell: Callable[[int, int], None] | None = None
) -> PatchingReport:
    """Every cell of granularity `by`, as the share of the clean–corrupted gap it restores."""
    model = model.eval()
    device = next(model.parameters()).device
    rows, columns, cells = patching_cells(model, by, pairs.clean.shape[1])
    names = sorted({name for name, _ in cells})
    clean_m, corrupt_m, cell_m, correct = [], [], [[] for _ in cells], []
    done, total = 0, len(cells) * math.ceil(len(pairs.position) / batch_size)
    for start in range(0, len(pairs.position), batch_size):
        part = PatchPairs(*(t[start : start + batch_size].to(device) for t in vars(pairs).values()))
        with torch.no_grad():
            clean_logits, cache = run_with_cache(model, part.clean, names=names)
            clean_m.append(logit_difference(clean_logits, part))
            rows_index = torch.arange(len(part.position), device=device)
            correct.append(clean_logits[rows_index, part.position].argmax(-1) == part.clean_answer)
            corrupt_m.append(logit_difference(model(part.corrupted), part))
            for index, (name, where) in enumerate(cells):
                logits = run_with_hooks(model, part.corrupted, [(name, _replace_with(cache[name], where))])
                cell_m[index].append(logit_difference(logits, part))
                done += 1
                if on_cell is not None:
                    on_cell(done, total)
    clean, corrupt = torch.cat(clean_m).cpu(), torch.cat(corrupt_m).cpu()
    patched = [torch.cat(m).cpu() for m in cell_m]
    restored, low, high = _shares(clean, corrupt, patched)
    width = len(columns)
    report = PatchingReport(
        by,
        rows,
        columns,
        [restored[r * width : (r + 1) * width] for r in range(len(rows))],
        [low[r * width : (r + 1) * width] for r in range(len(rows))],
        [high[r * width : (r + 1) * width] for r in range(len(rows))],
        len(clean),
        float(clean.mean()),
        float(corrupt.mean()),
        float(torch.cat(correct).float().mean()),
    )
    if float(clean.mean() - corrupt.mean()) <= 0:
        report.notes.append("the corruption does not lower the metric: the model does not retrieve this answer")
    if by == "positions" and pairs.position.unique().numel() > 1:
        report.notes.append("the scored position differs between sequences: each column mixes different roles")
    return report


def _shares(clean: torch.Tensor, corrupt: torch.Tensor, patched: list[torch.Tensor]):
    """Shares restored (ratio of means) and their 95% intervals by a bootstrap over sequences."""
    generator = torch.Generator().manual_seed(0)
    draws = torch.randint(0, len(clean), (BOOTSTRAP_SAMPLES, len(clean)), generator=generator)
    gap, gap_draws = clean.mean() - corrupt.mean(), clean[draws].mean(1) - corrupt[draws].mean(1)
    restored, low, high = [], [], []
    for cell in patched:
        share = float((cell.mean() - corrupt.mean()) / gap) if gap != 0 else math.nan
        shares = (cell[draws].mean(1) - corrupt[draws].mean(1)) / gap_draws
        restored.append(share)
        low.append(float(shares.quantile(0.025)))
        high.append(float(shares.quantile(0.975)))
    return restored, low, high


def patch_run(path, by: str, examples: int, device: str = "auto", overrides=(), on_cell=None) -> PatchingReport:
    """Load a run and patch it on `examples` held-out sequences of its own task (with `--set data.*`)."""
    from diffformer.data import prepare_data
    from diffformer.sampling import load_for_sampling

    loaded, tokenizer = load_for_sampling(path, device, command="patch")
    if tokenizer is not None:
        raise RecipeError(f"{loaded.path}: patching needs a synthetic retrieval task (mqar, needle), not text")
    data = prepare_data(loaded.data_config(overrides))
    batch = data.batch(loaded.trained_recipe().seed, "val", 0, examples)
    report = patch_activations(loaded.model, corrupted_pairs(batch), by, on_cell=on_cell)
    if loaded.unfinished:
        report.notes.append(loaded.unfinished)
    if overrides:
        report.notes.append(f"patched on other data settings than trained: {', '.join(overrides)}")
    return report


def draw_patching(report: PatchingReport, title: str, path):
    """A heatmap of shares restored (diverging, centred on 0; 1 = the whole gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = np.asarray(report.restored, dtype=float)
    width = max(4.0, min(16.0, 0.35 * len(report.columns) + 2.5))
    figure, axes = plt.subplots(figsize=(width, 1.6 + 0.45 * len(report.rows)))
    bound = max(1.0, float(np.nanmax(np.abs(shares))))
    image = axes.imshow(shares, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    axes.set_yticks(range(len(report.rows)), report.rows)
    step = max(1, len(report.columns) // 24)
    axes.set_xticks(range(0, len(report.columns), step), report.columns[::step], rotation=90 if step > 1 else 0)
    axes.set_xlabel({"layers": "patched activation", "heads": "head", "positions": "position"}[report.by])
    if len(report.columns) * len(report.rows) <= 64:
        for (r, c), share in np.ndenumerate(shares):
            ink = "white" if abs(share) > 0.6 * bound else "black"
            axes.text(c, r, f"{share:.2f}", ha="center", va="center", fontsize=8, color=ink)
    figure.colorbar(image, ax=axes, label="share restored")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
