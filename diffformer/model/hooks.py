"""Named hook points: read or edit any activation of a forward pass by name (docs/hooks.md).

Every block carries hook points with TransformerLens-style names, e.g. for layer i::

    blocks.{i}.hook_resid_pre      (B, T, d_model)  the block's input
    blocks.{i}.attn.hook_q         (B, T, heads, d_head)  queries before rotary (hook_k, hook_v alike)
    blocks.{i}.attn.hook_pattern   (B, heads, T, T)  the effective map each output head applies to its values
    blocks.{i}.attn.hook_pattern_1 / hook_pattern_2 / hook_lambda   differential kinds: A1, A2 and λ
    blocks.{i}.attn.hook_z         (B, T, heads, w)  each output head's result before the output projection
    blocks.{i}.hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post   (B, T, d_model)

plus `hook_embed` (token and learned-position embeddings, before the first block). A hook point is an
identity module until a function is attached; an unattached point costs one list check.

Usage::

    logits, cache = run_with_cache(model, tokens, names=["blocks.0.attn.hook_pattern"])
    cache["blocks.0.attn.hook_pattern"]                      # (B, heads, T, T)

    def zero_head_1(pattern, hook):
        pattern = pattern.clone(); pattern[:, 1] = 0; return pattern
    logits = run_with_hooks(model, tokens, [("blocks.0.attn.hook_pattern", zero_head_1)])

A hook function takes (activation, hook point) and returns a replacement or None (keep it). Pattern
hooks (hook_pattern*) make the layer compute its maps explicitly, T×T per head, instead of its fused
path; they read whole sequences, so they refuse a decoding cache in one line. Every other hook point
works during cached decoding too and sees the new positions only.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

HookFunction = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]

# Our module paths use `attention`; the names researchers know (TransformerLens) use `attn`.
_MODULE_TO_HOOK_NAME = (".attention.", ".attn.")


class HookPoint(nn.Module):
    """An identity on the forward pass that runs attached functions on what flows through it."""

    def __init__(self):
        super().__init__()
        self.functions: list[HookFunction] = []
        self.name = ""  # its public name, set by the model (hook_points)

    def through(self, activation: torch.Tensor) -> torch.Tensor:
        """The activation, after every attached function in turn (unchanged when none is attached)."""
        if not self.functions:
            return activation
        for function in self.functions:
            replaced = function(activation, self)
            if replaced is not None:
                if not isinstance(replaced, torch.Tensor) or replaced.shape != activation.shape:
                    raise ValueError(
                        f"a hook on {self.name} returned {type(replaced).__name__} "
                        f"{tuple(getattr(replaced, 'shape', ()))}; it must return a tensor of shape "
                        f"{tuple(activation.shape)} or None"
                    )
                activation = replaced
        return activation

    @property
    def active(self) -> bool:
        return bool(self.functions)

    def extra_repr(self) -> str:
        return self.name


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of `model` by its public name, in forward order (names set on the points)."""
    points = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            name = path.replace(*_MODULE_TO_HOOK_NAME)
            module.name = name
            points[name] = module
    return points


def _resolve(model: nn.Module, names: Iterable[str] | Callable[[str], bool] | None) -> list[HookPoint]:
    points = hook_points(model)
    if names is None:
        return list(points.values())
    if callable(names):
        return [point for name, point in points.items() if names(name)]
    chosen = []
    for name in names:
        if name not in points:
            raise ValueError(f"no hook point {name!r}; this model has e.g. {', '.join(_examples(points, name))}")
        chosen.append(points[name])
    return chosen


def _examples(points: dict[str, HookPoint], asked: str) -> list[str]:
    """A few names close to `asked` (same last part first), for the error message."""
    tail = asked.rsplit(".", 1)[-1]
    same_tail = [name for name in points if name.endswith(tail)]
    return (same_tail or list(points))[:4]


@contextmanager
def hooks(model: nn.Module, attached: Sequence[tuple[str | Callable[[str], bool], HookFunction]]) -> Iterator[None]:
    """Attach (name or name predicate, function) pairs for the block; every one is removed afterwards,
    also on errors."""
    added: list[tuple[HookPoint, HookFunction]] = []
    try:
        for names, function in attached:
            for point in _resolve(model, [names] if isinstance(names, str) else names):
                point.functions.append(function)
                added.append((point, function))
        yield
    finally:
        for point, function in added:
            point.functions.remove(function)


def run_with_hooks(
    model: nn.Module, tokens: torch.Tensor, attached: Sequence[tuple[str | Callable[[str], bool], HookFunction]]
) -> torch.Tensor:
    """model(tokens) with the hooks attached for that one pass; returns the logits."""
    with hooks(model, attached):
        return model(tokens)


def run_with_cache(
    model: nn.Module,
    tokens: torch.Tensor,
    names: Iterable[str] | Callable[[str], bool] | None = None,
    attached: Sequence[tuple[str | Callable[[str], bool], HookFunction]] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, {hook name: activation}) for the chosen hook points (default: every one), detached.
    `attached` hooks run too, before the recording (so the cache holds what they returned)."""
    cache: dict[str, torch.Tensor] = {}

    def record(activation: torch.Tensor, point: HookPoint) -> None:
        cache[point.name] = activation.detach()

    chosen = [point.name for point in _resolve(model, names)]
    with hooks(model, list(attached) + [(name, record) for name in chosen]):
        logits = model(tokens)
    return logits, cache
