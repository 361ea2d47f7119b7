"""Recipes: the YAML a researcher writes, validated by one pydantic schema (schema.py).

`extends: base.yaml` (relative to the recipe) deep-merges a base recipe under this one;
`--set dotted.key=value` overrides any key after that, through the same validation;
`variants:` expands into a grid of recipes (variants.py).
"""

from diffformer.recipe.loading import data_with_overrides, load_recipe, validate_recipe
from diffformer.recipe.schema import Recipe, recipe_json_schema
from diffformer.recipe.variants import expand_variants, variant_label
from diffformer.training.config import EvalConfig, TrainConfig

__all__ = [
    "EvalConfig",
    "Recipe",
    "TrainConfig",
    "data_with_overrides",
    "expand_variants",
    "load_recipe",
    "recipe_json_schema",
    "validate_recipe",
    "variant_label",
]
