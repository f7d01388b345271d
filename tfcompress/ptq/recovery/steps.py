"""`optimize_model`: the recovery steps in their fixed order, as `convert(..., optimize=...)` runs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tfcompress.graph import fold_batch_norms
from tfcompress.ptq.recovery.adaround import adaround
from tfcompress.ptq.recovery.bias_correction import bias_correction
from tfcompress.ptq.recovery.equalize import equalize

#: the steps, in the order they always run: folding first (the others need folded kernels),
#: equalization next (it rescales kernels), AdaRound (it fixes the kernels' integers), bias
#: correction last (it corrects the mean shift of the final integers, AdaRound's included)
STEPS = ("fold_bn", "equalize", "adaround", "bias_correction")


def parse_steps(optimize: Any) -> dict[str, dict[str, Any]]:
    """`{step: options}` from a list of names or `(name, options)` pairs, in `STEPS` order.

    Example:
        >>> list(parse_steps(["bias_correction", ("equalize", {"relu6": "replace"})]))
        ['equalize', 'bias_correction']
    """
    if isinstance(optimize, str):
        optimize = [optimize]
    if isinstance(optimize, dict):
        optimize = list(optimize.items())
    if not isinstance(optimize, Sequence):
        raise ValueError(
            f"optimize must be a list of step names from {list(STEPS)}; got {optimize!r}."
        )
    chosen: dict[str, dict[str, Any]] = {}
    for entry in optimize:
        name, options = (entry, {}) if isinstance(entry, str) else tuple(entry)
        if name not in STEPS:
            raise ValueError(
                f"optimize: unknown step {name!r}; the valid steps are {', '.join(STEPS)} "
                "(they always run in that order)."
            )
        if not isinstance(options, dict):
            raise ValueError(f"optimize: the options of {name!r} must be a dict; got {options!r}.")
        chosen[name] = dict(options)
    return {name: chosen[name] for name in STEPS if name in chosen}


def optimize_model(
    model: keras.Model,
    optimize: Any,
    data: Any = None,
    *,
    per_channel: bool = True,
    bits: int = 8,
) -> keras.Model:
    """Apply the chosen recovery steps to `model` in the fixed order `STEPS`; return the new model.

    Args:
        model: a functional or Sequential Keras model.
        optimize: step names (`"fold_bn"`, `"equalize"`, `"adaround"`, `"bias_correction"`), or
            `(name, options)` pairs whose options go to that step's function, e.g.
            `("equalize", {"relu6": "replace"})`, `("adaround", {"iterations": 500})`.
        data: calibration inputs (needed by `adaround` and `bias_correction`).
        per_channel: the weight grid of the file (AdaRound and bias correction emulate it).
        bits: weight width of the file (8, or 4 for INT4 weights).

    Returns:
        The float model to convert.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> optimized = optimize_model(model, ["fold_bn", "bias_correction"], np.ones((8, 4)))
        >>> optimized.output_shape
        (None, 2)
    """
    steps = parse_steps(optimize)
    needs_data = [name for name in ("adaround", "bias_correction") if name in steps]
    if needs_data and data is None:
        raise ValueError(
            f"optimize: {', '.join(needs_data)} need calibration data; pass "
            "representative_data=x_train[:200]."
        )
    if "fold_bn" in steps and "equalize" not in steps:  # equalize folds (and reads the BN) itself
        model = fold_batch_norms(model)
    if "equalize" in steps:
        model = equalize(model, **steps["equalize"])
    grid = {"bits": bits, "per_channel": per_channel}
    if "adaround" in steps:
        model = adaround(model, data, **{**grid, **steps["adaround"]})
    if "bias_correction" in steps:
        model = bias_correction(model, data, **{**grid, **steps["bias_correction"]})
    return model
