"""What every attention kind shares: its contract with the transformer block.

A kind is a subclass of `Attention` plus a pydantic config class with a literal `kind` field, declared
by one entry in `registry.py` (docs/adding-an-attention-kind.md walks through adding one).

The contract:
- forward(x, call): (B, T, d_model) -> (B, T, d_model), causal. `call` (an AttentionCall) is everything
  one forward needs beyond x — where x's tokens sit (after a decoding cache's), the layer's decoding
  cache, an active capture, forced keys, the keys an attention layout masks, whether the block is being
  recomputed. The Transformer builds it for every layer of every forward; `attention(x)` alone is a
  plain pass over positions 0..T−1.
- A forward honours the call through the helpers here, so no kind re-implements them: `rotate` (rotary
  at the call's positions), `keys_and_values` (the cache), `causal_attention` (SDPA with the causal mask,
  the keys a layout masks and ALiBi), `forced` (forced keys and the uniform control), `record_maps`
  (capture) and `write_heads` (each head's output into the residual stream, where probes edit heads).
  A kind that builds its own scores hides keys with `capture.hidden_keys` / `causal_logits(..., masked_keys)`.
  Kinds with one map per head subclass `SingleMapAttention`, which does all of that; such a kind supplies
  only `map_weights` (its formula: scores -> weights) and, for speed, may override `attend`.
- maps: a function of the layer's q, k (and the kind's extras), the query positions and the keys a layout
  masks (keywords `positions`, `masked_keys`) returning AttentionMaps, passed to `record_maps`.
- position biases: with ALiBi each map the kind computes gets a slope; the config's `map_alibi_slopes`
  says which (by default vanilla's slope set at the same n_heads), the module lays them out for its
  kernels (`set_alibi_slopes`).
- initialise: the kind owns the initialisation of its parameters (the default covers plain matrices).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffformer.model.capture import AttentionCapture, AttentionMaps, causal_logits, hidden_keys
from diffformer.model.decoding import LayerCache
from diffformer.model.flex import flex_causal_attention, flex_wanted
from diffformer.model.hooks import HookPoint
from diffformer.model.position import RotaryEmbedding, alibi_bias, alibi_bias_for_range, alibi_slopes
from diffformer.sections import Section

if TYPE_CHECKING:
    from diffformer.model.config import ModelConfig


# (tensor, dim, heads): the tensor is `heads` equal slices along `dim`, one per head or group.
HeadSlices = tuple[torch.Tensor, int, int]


@dataclass(frozen=True)
class MapLayout:
    """How a layer's attention is laid out: what the recipe's n_heads and d_model become for a kind."""

    heads: int  # heads whose outputs the layer mixes (differential V1: its pairs)
    maps_per_head: int
    query_key_width: int  # width of each map's queries and keys
    value_width: int  # width of the values each head reads

    def describe(self) -> str:
        maps = "1 map" if self.maps_per_head == 1 else f"{self.maps_per_head} maps"
        return f"{self.heads} heads × {maps} of q·k width {self.query_key_width}, values {self.value_width} wide"


class AttentionKindConfig(Section):
    """Base for the `model.attention` section of one kind; unknown keys are errors."""

    def check_model(self, model: "ModelConfig") -> None:
        """Raise ValueError if this kind cannot be built with `model`'s shape."""

    def map_layout(self, model: "ModelConfig") -> MapLayout:
        """Default: one map per head, queries, keys and values d_model/n_heads wide."""
        return MapLayout(model.n_heads, 1, model.d_head, model.d_head)

    def map_alibi_slopes(self, model: "ModelConfig") -> torch.Tensor:
        """With ALiBi, the slope of each map, in the kind's own numbering of its maps (docs/formulas.md §10).

        Default, one map per head: vanilla's slopes for n_heads heads. A kind with more maps chooses how
        they share those slopes; its default keeps vanilla's slope set at the same n_heads, so kinds
        compared at equal n_heads have the same positional prior."""
        return alibi_slopes(model.n_heads)

    def export_refusal(self) -> str | None:
        """Why the exported modelling code cannot express these options, or None."""
        return None

    def exported_options(self, model: "ModelConfig") -> dict:
        """The kind's options as the exported modelling code reads them (config.json's `attention`):
        every option by default; a kind adds what it derives from the model (per-layer values)."""
        return self.model_dump(mode="json", exclude={"kind"})


class AttentionCall(NamedTuple):
    """What one forward of one attention layer needs beyond its input x (B, T, d_model).

    offset: tokens before x's first, so x holds positions offset … offset+T−1 (a decoding cache's length).
    cache: this layer's decoding cache (model/decoding.py); the forward extends it by x's keys and values.
    capture: record explicit maps at the capture's query rows (model/capture.py); never during cached steps.
    forced_keys: (B, T) the key each of x's rows attends to alone, −1 where a row is left as computed
        (model/forcing.py).
    recomputed: the block runs inside activation checkpointing (train.activation_checkpointing).
    head_edit: f(layer index, heads (B, heads, T, w)) -> heads, applied to every head's output just before
        the residual projection mixes them (head ablation, activation patching, hooks; `write_heads`).
    masked_keys: (L, L) bool over absolute positions, True where query i may not see key j although j ≤ i (an
        attention layout a task asks for: the masked copy task; docs/formulas.md §23), or None: causal only.
    """

    offset: int = 0
    cache: LayerCache | None = None
    capture: AttentionCapture | None = None
    forced_keys: torch.Tensor | None = None
    recomputed: bool = False
    head_edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None
    masked_keys: torch.Tensor | None = None

    def query_positions(self, length: int, device) -> torch.Tensor:
        """(length,) the absolute positions of x's tokens."""
        return torch.arange(self.offset, self.offset + length, device=device)


PLAIN_CALL = AttentionCall()


class Attention(nn.Module):
    """Causal self-attention: (B, T, d_model) -> (B, T, d_model)."""

    config_class: ClassVar[type[AttentionKindConfig]]
    # Whether the decoding cache reproduces a full pass under an attention layout (masked_keys).
    caches_under_layout: ClassVar[bool] = True
    # Whether the kind's maps are A1 − λ·A2 (it then has hook_pattern_1, hook_pattern_2 and hook_lambda).
    differential_hooks: ClassVar[bool] = False
    # Whether `diffformer import` can start this kind from a pretrained vanilla layer (state_from_vanilla).
    imports_pretrained: ClassVar[bool] = False

    @classmethod
    def state_from_vanilla(cls, vanilla: dict, model: "ModelConfig", layer_index: int, second_map: str) -> dict:
        """This kind's layer weights (names inside the attention module) from a pretrained vanilla layer's
        q_proj, k_proj, v_proj, out_proj (and their biases) (docs/formulas.md §27); second_map is zero or mirror.
        Raise ValueError where the conversion cannot be made. Only kinds with imports_pretrained define it."""
        raise NotImplementedError

    def __init__(self, model: "ModelConfig", layer_index: int, rotary: RotaryEmbedding | None):
        super().__init__()
        self.n_heads = model.n_heads
        self.n_kv_heads = model.kv_heads
        self.d_head = model.d_model // model.n_heads
        self.layer_index = layer_index
        self.rotary = rotary
        self.uses_alibi = model.position == "alibi"
        # The uniform-attention control: the kind's map is computed (its parameters exist) but not applied.
        self.uniform = model.uniform_attention
        self.output_heads = self.n_heads  # heads whose outputs are mixed (differential V1: its pairs)
        # Non-persistent: derived from the config, so checkpoints do not carry it.
        self.register_buffer("alibi_slopes", None, persistent=False)
        # Named hook points (model/hooks.py, docs/hooks.md); identities until a function is attached.
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern, self.hook_z = HookPoint(), HookPoint()
        if self.differential_hooks:
            self.hook_pattern_1, self.hook_pattern_2, self.hook_lambda = HookPoint(), HookPoint(), HookPoint()

    def project_heads(self, projected: torch.Tensor, heads: int, hook: HookPoint) -> torch.Tensor:
        """A projection's output (B, T, heads·w) as heads (B, heads, T, w), through `hook` in between, where it
        is laid out (B, T, heads, w) as TransformerLens lays out hook_q, hook_k and hook_v."""
        batch, length, _ = projected.shape
        return hook.through(projected.view(batch, length, heads, -1)).transpose(1, 2)

    def pattern_hooked(self) -> bool:
        """Whether a function is attached to one of this layer's attention patterns (hook_pattern*)."""
        points = [self.hook_pattern]
        if self.differential_hooks:
            points += [self.hook_pattern_1, self.hook_pattern_2]
        return any(point.active for point in points)

    def through_pattern_hooks(self, fused, values, call: AttentionCall, maps_of, q: torch.Tensor, *inputs):
        """`fused()` (B, heads, T, w), the kind's fast path, unless a pattern hook is attached: then, instead, the
        layer's maps over the whole sequence, through hook_pattern_1, hook_pattern_2 (differential kinds: the
        effective map is rebuilt as A1 − λ·A2 from what they return) and hook_pattern, applied to `values`
        (B, heads, T, w), the values each output head reads. maps_of and its inputs are the kind's map function."""
        if not self.pattern_hooked():
            return fused()
        if call.cache is not None:
            raise ValueError("pattern hooks (hook_pattern*) read whole sequences: run without a decoding cache")
        if self.uniform:
            raise ValueError("the uniform-attention control applies no attention pattern to hook")
        length = q.shape[-2]
        maps = maps_of(q, *inputs, positions=torch.arange(length, device=q.device), masked_keys=call.masked_keys)
        weights = maps.weights
        if maps.differential is not None:
            first = self.hook_pattern_1.through(maps.differential.a1)
            second = self.hook_pattern_2.through(maps.differential.a2)
            lam = maps.differential.lam
            weights = first - (lam if lam.dim() == 0 else lam[..., None]) * second
        weights = self.hook_pattern.through(weights)
        return weights.to(values.dtype) @ values

    def set_alibi_slopes(self, slopes: torch.Tensor) -> None:
        """With position `alibi`: the slope of each map this kind computes, in the order it lays them out."""
        if self.uses_alibi:
            self.alibi_slopes = slopes

    def position_bias(self, query_positions: torch.Tensor, keys: int) -> torch.Tensor | None:
        """ALiBi's bias for every map (maps, P, keys), or None without ALiBi."""
        return None if self.alibi_slopes is None else alibi_bias(self.alibi_slopes, query_positions, keys)

    def rotate(self, call: AttentionCall, *heads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Apply rotary position encoding to (B, heads, T, d_head) tensors at the call's positions."""
        if self.rotary is None:
            return heads
        return tuple(self.rotary(h, call.offset) for h in heads)

    def keys_and_values(self, k: torch.Tensor, v: torch.Tensor, call: AttentionCall):
        """The new positions' keys and values -> those of every position x's queries may see (the cache's
        first, which the cache keeps); (B, heads, K, width) each."""
        return (k, v) if call.cache is None else call.cache.extend(k, v)

    def causal_attention(self, q, k, v, call: AttentionCall, scale: float | None = None) -> torch.Tensor:
        """SDPA of queries q (B, heads, T, d) at the call's positions against keys and values (B, heads, K, ·)
        of positions 0..K−1 (see keys_and_values): key j ≤ query position i unless the call's layout masks
        it, plus ALiBi's bias."""
        length, keys = q.shape[-2], k.shape[-2]
        # FlexAttention for whole sequences (training, evaluation); a decoding step's lengths change every token,
        # and each new shape would be another compilation.
        flex_shapes = call.cache is None and (self.alibi_slopes is not None or call.masked_keys is not None)
        if flex_shapes and flex_wanted(q.device):
            return flex_causal_attention(q, k, v, self.alibi_slopes, call.offset, call.masked_keys, scale)
        if self.alibi_slopes is not None and call.masked_keys is None:  # the common ALiBi case: one cached mask
            mask = alibi_bias_for_range(self.alibi_slopes, call.offset, length, keys, causal_mask=True, dtype=q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        queries = call.query_positions(length, q.device)
        bias = self.position_bias(queries, keys)
        if bias is None and call.offset == 0 and keys == length and call.masked_keys is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        mask = torch.zeros(length, keys, device=q.device) if bias is None else bias
        mask = mask.masked_fill(hidden_keys(queries, keys, call.masked_keys), float("-inf")).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    @property
    def residual_projection(self) -> nn.Linear:
        """The projection that writes into the residual stream (gets the scaled-down init)."""
        raise NotImplementedError

    def per_head_parameters(self) -> tuple[list[HeadSlices], list[HeadSlices]]:
        """How this kind's weights split into heads: (what the heads read with, what they write with).

        Each entry (tensor, dim, heads) says the tensor is `heads` equal slices along `dim`, one per
        head (or key/value group), numbered as the kind numbers its heads. Default: q/k/v rows per
        head or group; the residual projection's columns per head.
        """
        reading = [(self.q_proj.weight, 0, self.n_heads), (self.k_proj.weight, 0, self.n_kv_heads)]
        reading.append((self.v_proj.weight, 0, self.n_kv_heads))
        return reading, [(self.residual_projection.weight, 1, self.n_heads)]

    def map_flops_per_token(self, context: int) -> int:
        """Forward matmul FLOPs per query token of the attention maps and what they read (docs/formulas.md §11):
        Q·Kᵀ and A·V over `context` keys; the projections are counted as linear layers.

        Default, one map per head: 2·context·(heads·d_head) for Q·Kᵀ and as much again for A·V.
        """
        width = self.n_heads * self.d_head
        return 2 * context * width + 2 * context * width

    def initialise(self, matrix_std: Callable[[int], float], residual_scale: float) -> None:
        """Every matrix ~ N(0, matrix_std(fan_in)²); the residual projection's std is further ÷ residual_scale.

        Kinds with parameters of their own (λ vectors, sinks, gates) override this or set
        those parameters in __init__, which this leaves alone.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=matrix_std(module.in_features))
        projection = self.residual_projection
        nn.init.normal_(projection.weight, std=matrix_std(projection.in_features) / residual_scale)

    def record_maps(self, call: AttentionCall, maps_of: Callable[..., AttentionMaps], q: torch.Tensor, *inputs):
        """If the call carries a capture, record maps_of(q, *inputs, positions=the requested query rows).

        q: (B, heads, T, d_head); `inputs` are whatever else the kind's map function needs.
        """
        if call.capture is not None and call.cache is None:  # maps read whole sequences, not cached steps
            positions = call.capture.positions(q.shape[-2], q.device)
            if self.uniform:
                maps = uniform_maps(q.shape[0], self.output_heads, positions, q.shape[-2], call.masked_keys)
            else:
                maps = maps_of(q, *inputs, positions=positions, masked_keys=call.masked_keys)
            call.capture.record(self.layer_index, maps)

    def write_heads(self, heads: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """Every output head's result (B, output_heads, T, w) into the residual stream (B, T, d_model) through the
        residual projection; a call's head edit (ablation, patching) sees and may replace them first."""
        if call.head_edit is not None:
            heads = call.head_edit(self.layer_index, heads)
        if self.hook_z.active:  # laid out (B, T, heads, w), as TransformerLens's hook_z
            heads = self.hook_z.through(heads.transpose(1, 2)).transpose(1, 2)
        return self.residual_projection(merge_heads(heads))

    def penalty(self) -> torch.Tensor | None:
        """A term this layer adds to the training loss, from its last training forward (None: nothing)."""
        return None

    def at_step(self, step: int) -> None:
        """Told before a forward after `step` completed training steps (a kind with a schedule uses it)."""

    def forced(self, attended: torch.Tensor, values: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """`attended` (B, heads, T, w), the rows of x's positions, except rows whose forced key s ≥ 0 become
        values[:, :, s]: what one-hot attention on s gives. values: (B, heads, K, w), the values each output
        head reads at every position 0..K−1 the rows can see (a decoding cache's included).
        Under the uniform-attention control every row first becomes the mean of the values it can see."""
        if self.uniform and call.masked_keys is not None:  # the control's rows as capture shows them
            queries = call.query_positions(attended.shape[2], values.device)
            rows = uniform_maps(1, 1, queries, values.shape[2], call.masked_keys).weights[0, 0]
            attended = (rows @ values.float()).to(attended.dtype)
        elif self.uniform:
            length = attended.shape[2]
            seen = call.query_positions(length, values.device).float() + 1
            running_sum = values.float().cumsum(2)[:, :, call.offset : call.offset + length]
            attended = (running_sum / seen[:, None]).to(attended.dtype)
        keys = call.forced_keys
        if keys is None:
            return attended
        index = keys.clamp_min(0)[:, None, :, None].expand(-1, values.shape[1], -1, values.shape[-1])
        one_hot_rows = values.gather(2, index).to(attended.dtype)
        return torch.where((keys >= 0)[:, None, :, None], one_hot_rows, attended)


class SingleMapAttention(Attention):
    """A kind with one map per head over its key/value group, out = A·V per head, heads mixed by out_proj.

    Projections, grouped-query attention, rotary, the decoding cache, forcing, capture and the uniform
    control live here. A kind supplies `map_weights` — its formula on explicit scores — and may override
    `attend` (a faster path: fused kernels, blocks) and `maps` (when a row depends on more than its scores).
    """

    query_block: int = 128  # rows per block of the explicit path: memory ~ block × T, not T²

    def __init__(self, model, layer_index, rotary):
        super().__init__(model, layer_index, rotary)
        d_model = model.d_model
        self.q_proj = nn.Linear(d_model, self.n_heads * self.d_head, bias=model.bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=model.bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.d_head, bias=model.bias)
        self.out_proj = nn.Linear(self.n_heads * self.d_head, d_model, bias=model.bias)
        self.set_alibi_slopes(model.attention.map_alibi_slopes(model))

    @property
    def residual_projection(self) -> nn.Linear:
        return self.out_proj

    def forward(self, x: torch.Tensor, call: AttentionCall = PLAIN_CALL) -> torch.Tensor:
        q = self.project_heads(self.q_proj(x), self.n_heads, self.hook_q)  # (B, H, T, d)
        k = self.project_heads(self.k_proj(x), self.n_kv_heads, self.hook_k)  # (B, G, T, d)
        v = self.project_heads(self.v_proj(x), self.n_kv_heads, self.hook_v)
        q, k = self.rotate(call, q, k)
        k, v = repeat_kv_groups(k, self.n_heads), repeat_kv_groups(v, self.n_heads)
        k, v = self.keys_and_values(k, v, call)  # (B, H, K, d): every key the queries may see
        attended = self.through_pattern_hooks(lambda: self.attend(q, k, v, call), v, call, self.maps, q, k)
        out = self.forced(attended, v, call)
        self.record_maps(call, self.maps, q, k)
        return self.write_heads(out.to(x.dtype), call)

    def map_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """The kind's formula: rows of weights (…, P, K) from scaled scores q·k/√d (+ ALiBi), float32,
        −inf on keys after each row's query."""
        raise NotImplementedError

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """A·V for x's queries q (B, H, T, d) against every visible key and value (B, H, K, d).

        Default: explicit maps from `map_weights`, query block by query block; under autograd each block
        is recomputed in backward, so memory stays linear in T."""
        recompute = torch.is_grad_enabled() and not torch.compiler.is_compiling() and not call.recomputed
        outputs = []
        for start in range(0, q.shape[-2], self.query_block):
            end = min(start + self.query_block, q.shape[-2])
            last_key = call.offset + end  # a query block sees keys up to its last row
            block = (q[:, :, start:end], k[:, :, :last_key], v[:, :, :last_key], call.offset + start, call.masked_keys)
            if recompute:
                outputs.append(checkpoint(self._explicit_rows, *block, use_reentrant=False))
            else:
                outputs.append(self._explicit_rows(*block))
        return torch.cat(outputs, dim=2)

    def _explicit_rows(self, q_rows, k_prefix, v_prefix, first_position: int, masked_keys) -> torch.Tensor:
        positions = torch.arange(first_position, first_position + q_rows.shape[-2], device=q_rows.device)
        logits = causal_logits(q_rows, k_prefix, positions, self.alibi_slopes, masked_keys, first_position)
        weights = self.map_weights(logits)
        return weights.to(v_prefix.dtype) @ v_prefix

    def maps(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, masked_keys=None) -> AttentionMaps:
        """The rows at `positions`; q, k: (B, H, T, d) -> weights (B, H, P, T) and the scores as "logits"."""
        logits = causal_logits(q[:, :, positions], k, positions, self.alibi_slopes, masked_keys)
        return AttentionMaps(self.map_weights(logits), {"logits": logits}, positions)


def uniform_maps(batch: int, heads: int, positions: torch.Tensor, keys: int, masked_keys=None) -> AttentionMaps:
    """The uniform-attention control's rows: 1/(i+1) on each key j ≤ i for the query at position i (with an
    attention layout: equal weight on each key the row may see)."""
    visible = ~hidden_keys(positions, keys, masked_keys)  # (P, T)
    weights = visible.float() / visible.sum(-1, keepdim=True)
    return AttentionMaps(weights.expand(batch, heads, -1, -1), {}, positions)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, T, heads·d)."""
    batch, heads, length, width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * width)


def repeat_kv_groups(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Expand grouped key/value heads (B, G, T, d) to (B, n_heads, T, d); head h uses group h // (n_heads/G)."""
    groups = x.shape[1]
    return x if groups == n_heads else x.repeat_interleave(n_heads // groups, dim=1)
