"""Recipes: one call (or `tfcompress compress`) for a whole compression job.

A recipe is a list of steps (`prune`, `cluster`, `distill`, `qat`, then `convert`) with their
options, in YAML or as a dict; `compress` validates it, applies each step with the library's
public API, converts, measures the file on LiteRT and writes the file, a Markdown and an HTML
report and the exact recipe used. See docs/guide/recipes.md.

Example:
    >>> from tfcompress.recipe import load_recipe
    >>> recipe = load_recipe({"steps": [{"prune": {"final_sparsity": 0.5}}]})
    >>> [step.name for step in recipe.steps]
    ['prune', 'convert']
"""

from __future__ import annotations

from typing import Any

from tfcompress.recipe.schema import Recipe, RecipeError, Step, load_recipe, parse_recipe
from tfcompress.tflite.isolation import IsolatedCrash

__all__ = [
    "BudgetError",
    "CompressResult",
    "IsolatedCrash",
    "OutputResult",
    "Recipe",
    "RecipeError",
    "Step",
    "compress",
    "load_recipe",
    "parse_recipe",
]


def __getattr__(name: str) -> Any:  # the runner imports TensorFlow: load it on first use only
    if name in ("compress", "CompressResult", "OutputResult", "BudgetError"):
        from tfcompress.recipe import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tfcompress.recipe' has no attribute '{name}'")
