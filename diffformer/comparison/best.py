"""Fair comparisons: collapse a swept setting (e.g. train.lr) to its best value per everything else.

With a learning-rate axis in `variants`, comparing every kind at one shared lr favours whichever kind
that lr suits. `collapse_to_best` keeps, among columns that differ only in `key`, the one whose mean
held-out `metric` over its seeds is best (lowest for losses, highest otherwise), and says which won.
`steps_to_learn` ranks runs with `train.early_stop` by the share of seeds that reached the threshold,
then by the mean step they did: with early stopping every learner ends at the threshold, so the
final metric cannot tell them apart.
"""

import json
import statistics

from diffformer.errors import RecipeError

LOWER_IS_BETTER = ("loss", "bits_per_byte", "perplexity")
STEPS_TO_LEARN = "steps_to_learn"


def collapse_to_best(columns, key: str, metric: str, settings_of) -> tuple[list, list[str]]:
    """(the kept columns, a note per collapsed group naming the winner). `columns`: lists of RunRecords;
    settings_of(record) -> its compared settings (flattened)."""
    if not any(key in settings_of(group[0]) for group in columns):
        raise RecipeError(f"no compared run sets {key}; --best-of needs a setting of the runs, e.g. train.lr")
    if not any(_score(group, metric) is not None for group in columns):
        if metric == STEPS_TO_LEARN:
            raise RecipeError("--by steps_to_learn needs runs trained with train.early_stop")
        raise RecipeError(
            f"no compared run has an eval {metric}; --by names an eval metric (loss, exact_match…) or steps_to_learn"
        )
    families: dict[str, list] = {}
    for group in columns:
        rest = {k: v for k, v in settings_of(group[0]).items() if k != key}
        families.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(group)
    kept, notes = [], []
    criterion = metric.replace("_", " ") if metric == STEPS_TO_LEARN else f"eval {metric}"
    for family in families.values():
        scored = [(score, group) for group in family if (score := _score(group, metric)) is not None]
        if not scored:
            kept.extend(family)
            continue
        _, best = min(scored, key=lambda pair: pair[0][0])  # the first of equals: the order the runs came in
        kept.append(best)
        if len(family) > 1:
            tried = ", ".join(f"{_value(g, key, settings_of)} → {score[1]}" for score, g in scored)
            notes.append(
                f"{key} = {_value(best, key, settings_of)} is the best of {len(family)} by {criterion} "
                f"({tried}) for {_describe(best, key, settings_of, families)}"
            )
    return kept, notes


def _score(group, metric: str) -> tuple[tuple, str] | None:
    """(a sort key, smaller is better; how it reads) for a column of seeds, or None when it lacks the measure."""
    if metric == STEPS_TO_LEARN:
        if not any(r.stops_early for r in group):
            return None
        steps = [r.stopped_early_at for r in group if r.stopped_early_at is not None]
        mean = statistics.fmean(steps) if steps else float("inf")
        text = f"{len(steps)}/{len(group)} learned" + (f" in {mean:.0f} steps" if steps else "")
        return (-len(steps) / len(group), mean), text
    values = [r.eval.get(metric) for r in group if r.eval.get(metric) is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    return ((mean if metric in LOWER_IS_BETTER else -mean),), f"{mean:.4g}"


def _value(group, key: str, settings_of):
    return settings_of(group[0]).get(key)


def _describe(group, key: str, settings_of, families) -> str:
    """The settings that tell this family from the others (or the run name when nothing does)."""
    others = [json.loads(k) for k in families]
    mine = {k: v for k, v in settings_of(group[0]).items() if k != key}
    telling = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in mine.items() if any(o.get(k) != v for o in others)]
    return ", ".join(telling) or group[0].recipe.name
