"""The attention kinds by name: the one place a kind is named outside its own file.

Adding a kind is one new file in this folder and one entry below (docs/adding-an-attention-kind.md).
The entry declares what the rest of diffformer needs to know about the kind:
- rows: what the rows of its effective map are (a distribution; signed, summing to 1 − λ; or
  unnormalised); measurements and tables read it (docs/formulas.md §6);
- focus_scorer: its map in the focus lab (docs/formulas.md §14), or None — the focus lab refuses it;
- exports: whether the exported modelling code (hf/remote/modeling_diffformer.py) implements it — False
  makes `diffformer export` refuse the kind in one line; llama_layout: with rotary positions the standard
  Llama layout expresses it exactly (no custom code).
How its maps take position biases is the kind's own (`Attention.set_alibi_slopes`, one slope per map).
"""

from dataclasses import dataclass
from typing import Annotated, Union

from pydantic import Field

from diffformer.model.attention.base import Attention
from diffformer.model.attention.differential import DifferentialAttention, DifferentialScorer
from diffformer.model.attention.differential_v2 import DifferentialV2Attention
from diffformer.model.attention.doubly_normalized import DoublyNormalizedAttention, DoublyNormalizedScorer
from diffformer.model.attention.sigmoid import SigmoidAttention
from diffformer.model.attention.vanilla import SoftmaxScorer, VanillaAttention
from diffformer.model.capture import Rows
from diffformer.model.focus_scoring import FocusScorer


@dataclass(frozen=True)
class AttentionKind:
    """One attention kind as the rest of diffformer sees it."""

    name: str
    module: type[Attention]
    rows: Rows
    focus_scorer: type[FocusScorer] | None = None
    exports: bool = True
    llama_layout: bool = False


ATTENTION_KINDS: dict[str, AttentionKind] = {
    kind.name: kind
    for kind in (
        AttentionKind("vanilla", VanillaAttention, Rows.DISTRIBUTION, SoftmaxScorer, llama_layout=True),
        AttentionKind("differential", DifferentialAttention, Rows.SIGNED, DifferentialScorer),
        AttentionKind("differential_v2", DifferentialV2Attention, Rows.SIGNED),
        AttentionKind("doubly_normalized", DoublyNormalizedAttention, Rows.DISTRIBUTION, DoublyNormalizedScorer),
        AttentionKind("sigmoid", SigmoidAttention, Rows.UNNORMALISED),
    )
}

# The kind every other is compared against, and the layout pretrained models arrive in (`diffformer import`).
BASELINE_KIND = "vanilla"

# The `model.attention` section: one of the kinds' configs, chosen by its `kind` field.
AttentionConfig = Annotated[
    Union[tuple(kind.module.config_class for kind in ATTENTION_KINDS.values())],  # noqa: UP007
    Field(discriminator="kind"),
]


def kind_entry(name: str) -> AttentionKind:
    """The registry entry of kind `name` (a validated config's `attention.kind` always has one)."""
    return ATTENTION_KINDS[name]


def row_semantics(model) -> Rows:
    """What the rows of `model`'s (a ModelConfig's) captured maps are: its kind's, except under the
    uniform-attention control, whose rows are uniform distributions whatever the kind."""
    return Rows.DISTRIBUTION if model.uniform_attention else kind_entry(model.attention.kind).rows


def kinds_with(predicate) -> list[str]:
    """The names of the kinds whose entry satisfies `predicate`, in registry order (for messages)."""
    return [name for name, kind in ATTENTION_KINDS.items() if predicate(kind)]
