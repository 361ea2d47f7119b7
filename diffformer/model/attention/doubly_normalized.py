"""Causal doubly-normalized attention, prefix form (Ding et al. 2020, arXiv 2009.14308; docs/formulas.md §4).

Normalising key j's column over all queries would let output i see future queries.
The causal form normalises each column only over the queries that exist at time i:
    C_ij = logsumexp_{j ≤ i' ≤ i} S_i'j          (optionally logaddexp'd with a learned
                                                   per-head background query b_h: the sink)
    A_ij = softmax_{j ≤ i}(S_ij − m·C_ij)        (m = 1 doubly normalized, m = 0 vanilla)
Without the sink every key receives ≥ 1/j in total, but every token also gives itself
≥ 1/i; the sink removes that bias against sharp retrieval.

C depends on both i and j, so no fused kernel applies. Queries are processed in
blocks carrying the column log-sum-exp forward; in eager training each block is
recomputed in backward (activation checkpointing), so autograd keeps only the
inputs and one (B, H, T) carry per block instead of several B·H·T² intermediates.
Under torch.compile the elementwise passes of a block fuse, and the compiler's
partitioner chooses what to keep for backward.

Under an attention layout that masks keys beyond causality (docs/formulas.md §23) the queries that
count in key j's normaliser at row i are those row i itself can see (and that see j), so a masked
position cannot reach row i through a column normaliser either; that set differs from row to row, so
the layout path is explicit (memory ~ T³ per head, for the short sequences of the tasks that ask for one).
"""

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffformer.model.attention.base import AttentionCall, AttentionKindConfig, SingleMapAttention
from diffformer.model.capture import AttentionMaps, causal_logits, hidden_keys
from diffformer.model.focus_scoring import FocusScorer
from diffformer.model.position import alibi_bias_for_range

# Masked scores enter the column log-sum-exp as a large finite number, not −inf,
# so no inf − inf can arise in the cumulative log-sum-exp or its gradient.
MASKED_SCORE = -1e9
DEFAULT_QUERY_BLOCK = 64


class DoublyNormalizedConfig(AttentionKindConfig):
    kind: Literal["doubly_normalized"]
    sink: bool = True
    mix: float | Literal["learned"] = Field(1.0)

    @field_validator("mix")
    @classmethod
    def _mix_in_range(cls, mix):
        if mix != "learned" and not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be a number in [0, 1] or 'learned' (got {mix})")
        return mix


class DoublyNormalizedAttention(SingleMapAttention):
    """A row depends on the earlier queries' scores too (C_ij), so this kind supplies its whole map (`maps`)
    and its blocked computation (`attend`), not a row-by-row `map_weights`."""

    config_class = DoublyNormalizedConfig
    caches_under_layout = False  # a layout's column normalisers need every visible query's scores (§23)

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        settings = model.attention
        # b_h starts at 0: the background query scores like an average query at init.
        self.sink_logit = nn.Parameter(torch.zeros(self.n_heads)) if settings.sink else None
        self.fixed_mix = None if settings.mix == "learned" else float(settings.mix)
        # Learned per-head mix m = sigmoid(mix_logit), starting half-way between vanilla and doubly normalized.
        self.mix_logit = nn.Parameter(torch.zeros(self.n_heads)) if settings.mix == "learned" else None
        self.query_block = DEFAULT_QUERY_BLOCK

    def per_head_parameters(self):
        reading, writing = super().per_head_parameters()
        reading += [(p, 0, self.n_heads) for p in (self.sink_logit, self.mix_logit) if p is not None]
        return reading, writing

    def mix(self) -> float | torch.Tensor:
        """m as a float, or a (1, H, 1, 1) tensor when learned per head."""
        if self.mix_logit is None:
            return self.fixed_mix
        return torch.sigmoid(self.mix_logit).view(1, -1, 1, 1)

    def attend(self, q, k, v, call: AttentionCall) -> torch.Tensor:
        if call.masked_keys is not None:
            if call.cache is not None:
                raise ValueError(
                    "doubly normalized attention under an attention layout does not decode with a cache: its "
                    "column normalisers need every visible query's scores; run full passes"
                )
            weights = masked_doubly_normalized_rows(
                q, k, self.mix(), self.sink_logit, self.alibi_slopes, call.masked_keys
            )
            return weights.to(v.dtype) @ v
        if call.cache is not None:
            return self._cached_attention(q, k, v, call)
        return prefix_doubly_normalized_attention(
            q, k, v, self.mix(), self.sink_logit, self.query_block, self.alibi_slopes, call.recomputed
        )

    def maps(self, q, k, positions, masked_keys=None) -> AttentionMaps:
        if masked_keys is not None:
            weights = masked_doubly_normalized_rows(q, k, self.mix(), self.sink_logit, self.alibi_slopes, masked_keys)
            logits = causal_logits(q[:, :, positions], k, positions, self.alibi_slopes, masked_keys)
            return AttentionMaps(weights[:, :, positions], {"logits": logits}, positions)
        return doubly_normalized_maps(
            q, k, self.mix(), self.sink_logit, self.query_block, self.alibi_slopes, positions=positions
        )

    def _cached_attention(self, q, keys, values, call: AttentionCall) -> torch.Tensor:
        """The new queries' rows given every key and value (the cache extended) and the cached column
        log-sum-exp (docs/formulas.md §15): the same block step as the full pass, starting at the offset."""
        cache = call.cache
        fresh = _initial_carry(q, self.sink_logit)  # the new keys' columns: no query has seen them yet
        carry = fresh if cache.column_lse is None else torch.cat([cache.column_lse, fresh], dim=-1)
        out, cache.column_lse = _attend_query_block(q, keys, values, carry, self.mix(), call.offset, self.alibi_slopes)
        return out


def prefix_doubly_normalized_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mix: float | torch.Tensor = 1.0,
    sink_logit: torch.Tensor | None = None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    slopes: torch.Tensor | None = None,
    recomputed: bool = False,
) -> torch.Tensor:
    """Causal prefix doubly-normalized attention of q, k, v: (B, H, T, d) -> (B, H, T, d).

    mix: m, a float or a (1, H, 1, 1) tensor. sink_logit: (H,) background query b_h or None.
    slopes: (H,) ALiBi slopes, added to the scores before both normalisations, or None.
    recomputed: the caller is inside activation checkpointing (train.activation_checkpointing).

    Eager, or compiled inside activation checkpointing, each query block is recomputed in
    backward: memory stays linear in T. Compiled otherwise, the exactness check becomes a
    torch.cond (which checkpointing cannot run) so the whole layer fuses into one graph, and the
    compiler's partitioner keeps what backward needs: much faster, but memory grows like T².
    """
    length = q.shape[-2]
    fused = torch.compiler.is_compiling() and not recomputed
    recompute_in_backward = torch.is_grad_enabled() and not fused
    carry = _initial_carry(q, sink_logit)
    outputs = []
    for start in range(0, length, query_block):
        end = min(start + query_block, length)
        block = (q[:, :, start:end], k[:, :, :end], v[:, :, :end], carry[..., :end], mix, start, slopes, fused)
        if recompute_in_backward:
            out, last_lse = checkpoint(_attend_query_block, *block, use_reentrant=False)
        else:
            out, last_lse = _attend_query_block(*block)
        outputs.append(out)
        carry = torch.cat([last_lse, carry[..., end:]], dim=-1)
    return torch.cat(outputs, dim=2)


def doubly_normalized_maps(
    q: torch.Tensor,
    k: torch.Tensor,
    mix: float | torch.Tensor,
    sink_logit: torch.Tensor | None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    slopes: torch.Tensor | None = None,
    *,
    positions: torch.Tensor,
) -> AttentionMaps:
    """The attention rows at `positions` (any order), computed block by block like the forward pass.

    q, k: (B, H, T, d) -> weights (B, H, P, T) and raw scores "logits", −inf on future keys.
    Only the requested rows are kept, so memory is one block plus P rows, never T×T.
    """
    length = q.shape[-2]
    sorted_positions, order = positions.sort()
    carry = _initial_carry(q, sink_logit)
    weights, logits = [], []
    for start in range(0, length, query_block):
        end = min(start + query_block, length)
        block = (q[:, :, start:end], k[:, :, :end], carry[..., :end], mix, start, slopes)
        probs, last_lse, scores = _block_probabilities(*block)
        carry = torch.cat([last_lse, carry[..., end:]], dim=-1)
        inside = sorted_positions[(sorted_positions >= start) & (sorted_positions < end)] - start
        pad = length - end
        future = torch.arange(end, device=q.device)[None, :] > (start + inside)[:, None]
        weights.append(torch.nn.functional.pad(probs[:, :, inside], (0, pad)))
        row_logits = scores[:, :, inside].masked_fill(future, float("-inf"))
        logits.append(torch.nn.functional.pad(row_logits, (0, pad), value=float("-inf")))
    restore = order.argsort()  # blocks gave the rows in ascending position order
    return AttentionMaps(
        torch.cat(weights, dim=2)[:, :, restore], {"logits": torch.cat(logits, dim=2)[:, :, restore]}, positions
    )


def masked_doubly_normalized_rows(q, k, mix, sink_logit, slopes, masked_keys: torch.Tensor) -> torch.Tensor:
    """Every row (B, H, T, T) of doubly normalized attention under an attention layout, explicitly:
    C_ij = log(Σ exp(S_i'j) over the queries i' ≤ i that see j and that row i sees, itself included
    (+ exp(b) with a sink)); A_ij = softmax over the keys row i sees of S_ij − m·C_ij (docs/formulas.md §23)."""
    length = q.shape[-2]
    positions = torch.arange(length, device=q.device)
    scores = causal_logits(q, k, positions, slopes, masked_keys)  # (B, H, i', j), −inf where i' does not see j
    sees = ~hidden_keys(positions, length, masked_keys)  # (i, i'): row i sees query i' (and itself)
    counted = scores[:, :, None, :, :].masked_fill(~sees[:, :, None], float("-inf"))  # (B, H, i, i', j)
    column = counted.logsumexp(dim=-2)  # (B, H, i, j)
    if sink_logit is not None:
        column = torch.logaddexp(column, sink_logit.float().view(1, -1, 1, 1))
    # Row i's keys are the positions it sees, the same set as the queries its normalisers count.
    logits = (scores - mix * column.masked_fill(~sees, 0.0)).masked_fill(~sees, float("-inf"))
    return logits.softmax(dim=-1)


def _initial_carry(q: torch.Tensor, sink_logit: torch.Tensor | None) -> torch.Tensor:
    """The column log-sum-exp before any query: −inf, or the sink's b_h. (B, H, T), at least float32."""
    batch, heads, length, _ = q.shape
    lse_dtype = torch.promote_types(q.dtype, torch.float32)  # also under bf16 autocast
    if sink_logit is None:
        return q.new_full((batch, heads, length), float("-inf"), dtype=lse_dtype)
    return sink_logit.to(lse_dtype).view(1, heads, 1).expand(batch, heads, length)


def _attend_query_block(q_block, k_prefix, v_prefix, carry_prefix, mix, first_query, slopes, fused=False):
    """Output rows first_query.. and the updated column log-sum-exp, given that of all earlier queries."""
    probs, last_lse, _ = _block_probabilities(q_block, k_prefix, carry_prefix, mix, first_query, slopes, fused)
    return probs.to(v_prefix.dtype) @ v_prefix, last_lse


def _block_probabilities(q_block, k_prefix, carry_prefix, mix, first_query, slopes=None, fused=False):
    """Attention rows first_query.. given the column log-sum-exp of all earlier queries.

    q_block: (B, H, b, d); k_prefix: (B, H, e, d) for keys 0..e-1 (e = last row + 1);
    carry_prefix: (B, H, e), float32 or wider, sets the precision. Returns the rows'
    probabilities (B, H, b, e), the updated carry (B, H, e) and the raw scores, MASKED_SCORE on future keys.
    """
    scale = q_block.shape[-1] ** -0.5  # applied to the (smaller) query block, not to the scores
    scores = ((q_block * scale) @ k_prefix.transpose(-1, -2)).to(carry_prefix.dtype)
    query_index = torch.arange(first_query, first_query + q_block.shape[-2], device=q_block.device)
    # In place: autograd keeps a matmul's inputs, not its output, so the scores may be overwritten.
    if slopes is not None:
        scores += alibi_bias_for_range(slopes, first_query, q_block.shape[-2], k_prefix.shape[-2], dtype=scores.dtype)
    key_index = torch.arange(k_prefix.shape[-2], device=q_block.device)
    future = key_index[None, :] > query_index[:, None]
    masked_scores = scores.masked_fill_(future, MASKED_SCORE)
    shifted, log_running, shift = _column_prefix_logsumexp(masked_scores, carry_prefix, first_query, fused)
    # C = log_running + shift. Future keys keep their MASKED_SCORE (C is finite there), so softmax
    # gives them exactly 0, as −inf would, without another pass over the block.
    if isinstance(mix, float) and mix == 1.0:
        # S − C, reusing S − shift from the log-sum-exp: one pass, not three; in place, as exp's backward
        # reads exp's output, not S − shift.
        logits = shifted.sub_(log_running)
    else:
        logits = masked_scores - mix * (log_running + shift)
    last_lse = log_running[..., -1, :] + shift[..., 0, :]
    return logits.softmax(dim=-1), last_lse, masked_scores


def _column_prefix_logsumexp(masked_scores, carry, first_query: int, fused: bool = False):
    """C_ij = logaddexp(carry_j, logsumexp_{i' ≤ i} S_i'j) down the query axis of one block, as
    (S − shift, log_running, shift) with C = log_running + shift and shift (B, H, 1, e) per column.

    Fast path: shift each column by its largest value (carry included), then exp, the running sum
    down the column (a matmul with a lower-triangular matrix of ones) and log — vectorised, unlike
    torch.logcumsumexp's sequential scan (~5× faster on CPU). It is
    exact unless a running sum falls where the float format loses precision (scores some 70
    below their column's maximum, e.g. logit outliers); such a block takes the exact scan.
    A running sum only grows down a column, so its smallest value on or below the diagonal is
    in the column's first row that sees the key: checking that row per column suffices.
    """
    shift = torch.maximum(carry, masked_scores.amax(dim=-2)).detach().unsqueeze(-2)  # (B, H, 1, e)
    shifted = masked_scores - shift
    # The smallest normal number, added with the carry's term at no extra pass, keeps log finite on
    # masked entries (i < j, discarded afterwards) and changes C elsewhere by under 2^-24 relative.
    floor = torch.finfo(shifted.dtype).tiny
    # The running sum down each column as a product with a lower-triangular matrix of ones: on CPU a matmul
    # over the block's rows is several times faster than cumsum along a non-contiguous axis, and its backward
    # is a matmul too (benchmarks/attention.py).
    rows = shifted.shape[-2]
    lower = (
        torch.ones(rows, rows, device=shifted.device, dtype=shifted.dtype).tril()  # the compiler folds it
        if torch.compiler.is_compiling()
        else _lower_ones(rows, shifted.device, shifted.dtype)
    )
    running = lower @ shifted.exp()
    running += (carry.unsqueeze(-2) - shift).exp() + floor  # in place: the matmul's backward needs its inputs only
    smallest_safe = floor * 2**24
    keys = running.shape[-1]
    first_row = (torch.arange(keys, device=running.device) - first_query).clamp_min(0)  # key j's first query row
    first_seen = running.gather(-2, first_row.view(1, 1, 1, keys).expand(*running.shape[:2], 1, keys))
    imprecise = (first_seen < smallest_safe).any()
    operands = (masked_scores, carry, running, shift)
    if fused:  # compiling: a data-dependent branch inside the graph instead of a graph break
        return shifted, torch.cond(imprecise, _exact_log_running, _fast_log_running, operands), shift
    log_running = _exact_log_running(*operands) if bool(imprecise) else _fast_log_running(*operands)
    return shifted, log_running, shift


@functools.lru_cache(maxsize=16)
def _lower_ones(rows: int, device, dtype) -> torch.Tensor:
    """(rows, rows) with ones on and below the diagonal: L @ X is X's cumulative sum down its rows."""
    return torch.ones(rows, rows, device=device, dtype=dtype).tril()


def _fast_log_running(masked_scores, carry, running, shift):
    return running.log()


def _exact_log_running(masked_scores, carry, running, shift):
    """C − shift from the sequential scan: exact however far below its column's maximum a score lies."""
    return torch.logaddexp(carry.unsqueeze(-2), masked_scores.logcumsumexp(dim=-2)) - shift


class DoublyNormalizedScorer(FocusScorer):
    """The focus lab's map (docs/formulas.md §14): one query's doubly normalized row against the learned
    sink b is σ(s_j − b) normalised over j (without a sink one query makes it uniform), mixed with softmax."""

    def __init__(self, config):
        super().__init__(config)
        self.sink = nn.Parameter(torch.zeros(())) if config.attention.sink else None
        mix = config.attention.mix
        self.mix_logit = nn.Parameter(torch.zeros(())) if mix == "learned" else None
        self.fixed_mix = None if mix == "learned" else float(mix)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = self.scores(features)[:, 0]
        columns = torch.sigmoid(scores - self.sink) if self.sink is not None else torch.ones_like(scores)
        doubly = columns / columns.sum(-1, keepdim=True)
        mix = torch.sigmoid(self.mix_logit) if self.mix_logit is not None else self.fixed_mix
        return mix * doubly + (1 - mix) * F.softmax(scores, -1)
