"""KTIW, "knowing to translate individual words" (Snell et al. 2021), for a decoder-only model.

Snell et al. ask whether a model already maps a source word to its output when it is
made to attend to that word, and find this comes before it learns where to attend.
Here, for every scored position t (it must predict y_t) and every source position s
before the question of its row (s < question_start), the model runs with the attention
of row t forced one-hot on s in every layer and head (model/forcing.py) and yields
p_s(t) = P(y_t | row t attends to s alone). Then, docs/formulas.md §12:
- KTIW(t) holds when the best source, argmax_s p_s(t), lies in t's evidence span
  (copy: the aligned position t − L, the token to output);
- `ktiw` is the share of scored positions where it holds; `ktiw_probability` the mean of
  max p_s(t) over s in the span.
Other rows keep their attention; since a forced row reads only s, which precedes every
question position, forcing row t cannot change what another forced row sees, so one
forward per s serves every scored position of the batch.
"""

import torch

from diffformer.data import IGNORE, Batch
from diffformer.model.forcing import force_attention


@torch.no_grad()
def ktiw(model, batch: Batch) -> dict[str, float]:
    """KTIW share and aligned-source probability over the batch's scored positions (needs evidence spans)."""
    if batch.evidence is None or batch.question_start is None:
        raise ValueError("KTIW needs a task that marks each answer's source (copy, MQAR, needle)")
    scored = batch.targets != IGNORE  # (B, T)
    targets = batch.targets.clamp_min(0)
    sources = int(batch.question_start.max())
    probabilities = torch.full((sources, *scored.shape), float("-inf"), device=scored.device)
    for source in range(sources):
        usable = scored & (source < batch.question_start)[:, None]  # s must lie before the row's question
        if not bool(usable.any()):
            continue
        keys = torch.where(usable, source, -1)
        with force_attention(model, keys):
            logits = model(batch.inputs)
        p = logits.float().softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
        probabilities[source] = torch.where(usable, p, float("-inf"))
    start, end = batch.evidence[..., 0], batch.evidence[..., 1]  # (B, T)
    best = probabilities.argmax(0)
    holds = (best >= start) & (best < end)
    candidates = torch.arange(sources, device=scored.device)[:, None, None]
    in_span = (candidates >= start) & (candidates < end)
    aligned = torch.where(in_span, probabilities, float("-inf")).amax(0).clamp_min(0)
    return {"ktiw": float(holds[scored].float().mean()), "ktiw_probability": float(aligned[scored].mean())}
