"""The retrieval grid (exact match over context length × needle depth) and attention at the answer positions.

Attention maps are captured only at the answer positions, so long contexts cost no
T×T memory. Rows of a batch may ask at different positions (e.g. MQAR with a list of
`num_pairs`): the capture covers the union and each row is measured only where it is
scored.
"""

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import torch

from diffformer.data import IGNORE, Batch
from diffformer.model.capture import AttentionMaps, Rows, capture_attention
from diffformer.probes import attention_stats as stats
from diffformer.probes.prompts import PromptSource
from diffformer.probes.results import AttentionSummary, LayerAttention, RetrievalGrid


def prompt_key(variant: str, length: int, depth: float, batch_index: int) -> int:
    """The prompt key of a cell's batch, from its values (not its place in the grid): the same cell
    gets the same prompts whatever else is probed alongside it."""
    digest = hashlib.sha256(f"{variant}|{length}|{float(depth)!r}|{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def retrieval_grid(
    model,
    source: PromptSource,
    lengths: Sequence[int],
    depths: Sequence[float],
    samples: int,
    batch_size: int,
    device,
    threshold: float,
    with_attention: bool,
    notes: list[str],
    on_cell=None,
) -> tuple[dict[str, RetrievalGrid], "AnswerAttention | None"]:
    """Exact match per (variant, length, depth) and, with_attention, the attention measured at the answers
    (`AnswerAttention.summary()` summarises it)."""
    batches_per_cell = max(1, -(-samples // batch_size))
    attention = AnswerAttention() if with_attention else None
    grids, done, total = {}, 0, len(source.variants) * len(lengths) * len(depths)
    for variant in source.variants:
        accuracy = [[None] * len(depths) for _ in lengths]
        ranks = [[None] * len(depths) for _ in lengths]
        counts = [[0] * len(depths) for _ in lengths]
        for li, length in enumerate(lengths):
            for di, depth in enumerate(depths):
                right, rank_sum = 0, 0.0
                for b in range(batches_per_cell):
                    size = min(batch_size, samples - b * batch_size)  # exactly `samples` prompts per cell
                    cell = source.cell(variant, length, depth, prompt_key(variant, length, depth, b), size)
                    if cell is None:
                        break
                    batch = cell.batch.to(device)
                    exact, maps = answer_and_maps(model, batch, with_attention)
                    if cell.scorer is not None:
                        exact, rank = cell.scorer(batch)
                        rank_sum += float(rank.sum())
                    right += int(exact.sum())
                    counts[li][di] += len(exact)
                    if maps is not None:
                        attention.add(maps, batch, length)
                done += 1
                if on_cell is not None:
                    on_cell(done, total)
                if counts[li][di] == 0:
                    notes.append(f"{variant} prompts do not fit in {length} tokens; that row is empty")
                    break
                accuracy[li][di] = right / counts[li][di]
                if rank_sum:
                    ranks[li][di] = rank_sum / counts[li][di]
        has_ranks = any(r is not None for row in ranks for r in row)
        grids[variant] = RetrievalGrid(
            variant=variant,
            lengths=list(lengths),
            depths=list(depths),
            accuracy=accuracy,
            samples=counts,
            threshold=threshold,
            effective_length=effective_length(lengths, accuracy, threshold),
            mean_rank=ranks if has_ranks else None,
            candidates=source.candidates if has_ranks else None,
        )
    return grids, attention


def effective_length(lengths, accuracy, threshold) -> int | None:
    """The longest length up to which every probed length's mean accuracy over depths stays ≥ threshold.

    Lengths where no prompt fits are skipped: they say nothing either way.
    """
    effective = None
    for length, row in zip(lengths, accuracy):
        cells = [a for a in row if a is not None]
        if not cells:
            continue
        if sum(cells) / len(cells) < threshold:
            break
        effective = length
    return effective


@torch.no_grad()
def answer_and_maps(model, batch: Batch, want_maps: bool):
    """Greedy exact match per prompt and, if asked, the maps at every position some row is scored at."""
    logits, maps = logits_and_maps(model, batch, want_maps)
    return exact_rows(logits, batch.targets), maps


@torch.no_grad()
def logits_and_maps(model, batch: Batch, want_maps: bool):
    """The model's logits on the batch and, if asked, its maps at every position some row is scored at."""
    if not want_maps:
        return model(batch.inputs), None
    positions = (batch.targets != IGNORE).any(dim=0).nonzero().flatten()
    with capture_attention(model, query_positions=positions.tolist()) as capture:
        logits = model(batch.inputs)
    return logits, capture.maps


def exact_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) whether greedy decoding gets every scored position of a row right."""
    return ((logits.argmax(-1) == targets) | (targets == IGNORE)).all(dim=1)


class AnswerAttention:
    """Accumulates docs/formulas.md §6 measurements per layer, and per context length and layer, at the
    positions each row is scored at.

    Masses are shares of each row's total |weight| (for a distribution, its mass itself), so they mean the
    same for every kind; rows that are not distributions (signed differential maps, unnormalised sigmoid
    maps) also get the net signed mass on the source (Σw over the evidence) and the row sum Σw. For the
    differential kinds the shares of A1 and of A2 (each a softmax row) stand beside the effective map's."""

    def __init__(self):
        self.values: dict[int, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
        self.by_head: dict[int, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
        self.by_length: dict[int, dict[int, dict[str, list[torch.Tensor]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.by_length_head: dict[int, dict[int, dict[str, list[torch.Tensor]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.rows = Rows.DISTRIBUTION

    def add(self, maps: dict[int, AttentionMaps], batch: Batch, length: int) -> None:
        for layer, layer_maps in maps.items():
            positions = layer_maps.query_positions
            weights = layer_maps.weights  # (B, H, P, T)
            self.rows = layer_maps.rows
            shares = stats.as_distribution(weights)  # |w| / Σ|w|: the weights themselves for a distribution
            asked = (batch.targets[:, positions] != IGNORE).to(weights.device)  # (B, P): where each row is scored
            collected, by_head, at_length = self.values[layer], self.by_head[layer], self.by_length[length][layer]
            heads_at_length = self.by_length_head[length][layer]
            parts = layer_maps.differential

            def record(name: str, values: torch.Tensor, per_head: bool = True) -> None:
                """values (B, H, P) per head, or (B, P) for the layer; only the scored entries are kept."""
                rows = (values.transpose(1, 2) if per_head else values)[asked].cpu()  # (N, H) or (N,)
                collected[name].append(rows.flatten())
                at_length[name].append(rows.flatten())
                if per_head:
                    by_head[name].append(rows)
                    heads_at_length[name].append(rows)

            if batch.evidence is not None:  # tasks that mark each answer's source
                spans = batch.evidence[:, positions].to(weights.device)[:, None]  # (B, 1, P, 2)
                keys = torch.arange(weights.shape[-1], device=weights.device)
                needle = stats.span_mass(shares, spans)  # (B, H, P)
                before_question = keys[None, :] < batch.question_start.to(weights.device)[:, None]  # (B, T)
                record("needle_mass", needle)
                record("noise", (shares * before_question[:, None, None]).sum(-1) - needle)
                if self.rows != Rows.DISTRIBUTION:
                    record("needle_net_mass", stats.span_mass(weights, spans))
                if parts is not None:
                    record("a1_needle_mass", stats.span_mass(parts.a1, spans))
                    record("a2_needle_mass", stats.span_mass(parts.a2, spans))
                peak = weights.argmax(-1)  # (B, H, P): the key each head weights most
                start, end = spans[..., 0], spans[..., 1]
                record("source_argmax", ((peak >= start) & (peak < end)).float())
                record("source_argmax_near", ((peak >= start - 1) & (peak < end + 1)).float())
                coverage = stats.source_coverage(shares, spans[:, 0], asked)
                record("source_coverage", coverage, per_head=False)
                record("source_dropped", (coverage < stats.DROPPED_BELOW).float(), per_head=False)
            if self.rows != Rows.DISTRIBUTION:
                record("row_sum", weights.sum(-1))
            record("entropy", stats.normalized_entropy(weights, positions))
            record("head_diversity", stats.head_diversity(weights.transpose(1, 2)), per_head=False)
            if parts is not None:
                if parts.lam.dim() == 0:  # V1: one λ per layer
                    for where in (collected, at_length):
                        where["lambda_value"].append(parts.lam.reshape(1).cpu())
                else:  # V2: per token and head
                    record("lambda_value", parts.lam)
                record("a1_a2_cosine", stats.cosine_similarity(parts.a1, parts.a2))
                record("a1_a2_js", stats.js_divergence(parts.a1, parts.a2))
                record("negative_share", stats.negative_share(weights))

    def head_means(self) -> dict[int, dict[str, list[float]]]:
        """Per layer, each per-head measurement's mean for every head (head diversity and V1's λ are per layer)."""
        return {
            layer: {name: torch.cat(rows).nanmean(0).tolist() for name, rows in sorted(values.items())}
            for layer, values in sorted(self.by_head.items())
        }

    def at_heads(self, heads: dict[int, list[int]]) -> dict[int, dict[int, LayerAttention]]:
        """Per length and layer, each per-head measurement over the chosen heads of that layer only (e.g. the
        heads ablation finds the task needs), so noise is read where retrieval happens."""
        chosen = {}
        for length, layers in sorted(self.by_length_head.items()):
            chosen[length] = {
                layer: LayerAttention(
                    **{name: stats.summarize(torch.cat(rows)[:, heads[layer]]) for name, rows in measured.items()}
                )
                for layer, measured in sorted(layers.items())
                if heads.get(layer)
            }
        return chosen

    def summary(self) -> AttentionSummary:
        """Per layer (over every length), per length and layer, and — labelled as such — the mean over layers."""
        layers = _layer_summaries(self.values)
        average = None
        if layers:
            names = next(iter(layers.values())).measured()
            average = LayerAttention(
                **{
                    name: stats.summarize(torch.tensor([layer.measured()[name] for layer in layers.values()]))
                    for name in names
                }
            )
        by_length = {length: _layer_summaries(values) for length, values in sorted(self.by_length.items())}
        return AttentionSummary(layers, average, by_length, rows=self.rows.value)


def _layer_summaries(values: dict[int, dict[str, list[torch.Tensor]]]) -> dict[int, LayerAttention]:
    return {
        layer: LayerAttention(**{name: stats.summarize(torch.cat(v)) for name, v in measured.items()})
        for layer, measured in sorted(values.items())
    }
