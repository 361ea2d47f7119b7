"""Fair comparisons: collapse a swept setting (e.g. train.lr) to its best value per everything else.

With a learning-rate axis in `variants`, comparing every kind at one shared lr favours whichever kind
that lr suits. `collapse_to_best` keeps, among columns that differ only in `key`, the one whose mean
held-out `metric` over its seeds is best (lowest for losses, highest otherwise), and says which won.
"""

import json
import statistics

from diffformer.errors import RecipeError

LOWER_IS_BETTER = ("loss", "bits_per_byte", "perplexity")


def collapse_to_best(columns, key: str, metric: str, settings_of) -> tuple[list, list[str]]:
    """(the kept columns, a note per collapsed group naming the winner). `columns`: lists of RunRecords;
    settings_of(record) -> its compared settings (flattened)."""
    if not any(key in settings_of(group[0]) for group in columns):
        raise RecipeError(f"no compared run sets {key}; --best-of needs a setting of the runs, e.g. train.lr")
    if not any(_mean(group, metric) is not None for group in columns):
        raise RecipeError(f"no compared run has an eval {metric}; --by names an eval metric, e.g. loss or exact_match")
    families: dict[str, list] = {}
    for group in columns:
        rest = {k: v for k, v in settings_of(group[0]).items() if k != key}
        families.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(group)
    kept, notes = [], []
    lower = metric in LOWER_IS_BETTER
    for family in families.values():
        scored = [(score, group) for group in family if (score := _mean(group, metric)) is not None]
        if not scored:
            kept.extend(family)
            continue
        best_score, best = (min if lower else max)(scored, key=lambda pair: pair[0])
        kept.append(best)
        if len(family) > 1:
            tried = ", ".join(f"{_value(g, key, settings_of)} → {s:.4g}" for s, g in scored)
            notes.append(
                f"{key} = {_value(best, key, settings_of)} is the best of {len(family)} by eval {metric} "
                f"({tried}) for {_describe(best, key, settings_of, families)}"
            )
    return kept, notes


def _mean(group, metric: str) -> float | None:
    values = [r.eval.get(metric) for r in group if r.eval.get(metric) is not None]
    return statistics.fmean(values) if values else None


def _value(group, key: str, settings_of):
    return settings_of(group[0]).get(key)


def _describe(group, key: str, settings_of, families) -> str:
    """The settings that tell this family from the others (or the run name when nothing does)."""
    others = [json.loads(k) for k in families]
    mine = {k: v for k, v in settings_of(group[0]).items() if k != key}
    telling = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in mine.items() if any(o.get(k) != v for o in others)]
    return ", ".join(telling) or group[0].recipe.get("name", "the runs")
