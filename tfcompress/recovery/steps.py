"""`optimize_model`: the recovery steps in their fixed order, as `convert(..., optimize=...)` runs them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras

from tfcompress.core.batchnorm import fold_batch_norms
from tfcompress.core.graph import inputs_rescaled
from tfcompress.io import load_model
from tfcompress.recovery.bias import bias_correction
from tfcompress.recovery.equalization import equalize
from tfcompress.recovery.rounding import adaround
from tfcompress.tflite.calibration import collect_samples
from tfcompress.tflite.errors import ConversionError

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
    layer_bits: dict[str, int] | None = None,
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
        layer_bits: `{layer name: 4 or 8}` for the layers whose width differs from `bits`
            (AdaRound and bias correction round and emulate those layers at that width).

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
        model, report = equalize(model, **steps["equalize"], return_report=True)
        if not report.pairs:
            reasons = "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:3])
            warnings.warn(
                "optimize: 'equalize' found no pair of layers it can equalize"
                + (f" ({reasons})" if reasons else " (no Conv/Dense chain)")
                + "; the model is only BatchNorm-folded.",
                stacklevel=3,
            )
    grid = {"bits": bits, "per_channel": per_channel, "layer_bits": layer_bits}
    unrounded = model
    if "adaround" in steps:
        model = adaround(model, data, **{**grid, **steps["adaround"]})
    if "bias_correction" in steps:  # matches the float means of the model before rounding
        options = {**grid, "reference": unrounded, **steps["bias_correction"]}
        model = bias_correction(model, data, **options)
    return model


def prepare_for_convert(
    model: Any,
    optimize: Any,
    data: Any,
    *,
    mode: str,
    per_channel: bool,
    int4_weights: bool,
    num_samples: int,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
) -> tuple[keras.Model, Any, bool]:
    """What `convert(..., optimize=...)` converts: the optimized model, its data, 4-bit or not.

    Returns `(model, data, four_bit)`; with `four_bit` the converted file's filters are turned
    into 4-bit levels (`four_bit_levels`) before any INT4 packing.

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> _, data, four_bit = prepare_for_convert(
        ...     model, ["adaround"], np.ones((8, 4)), mode="int8", per_channel=True,
        ...     int4_weights=True, num_samples=6)
        >>> data.shape, four_bit
        ((6, 4), True)
    """
    import numpy as np

    steps = parse_steps(optimize)
    if mode not in ("int8", "edgetpu"):
        raise ConversionError(
            f"optimize= recovers integer accuracy: use it with mode='int8' or 'edgetpu', not "
            f"mode={mode!r}."
        )
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = load_model(model, custom_objects=custom_objects, safe_mode=safe_mode, compile=False)
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ConversionError(
            "optimize= rewrites a Keras 3 functional or Sequential model (or a .keras file); "
            f"got {type(model).__name__}. Convert the Keras model itself."
        )
    adaround_bits = steps.get("adaround", {}).get("bits")
    int4_layers = steps.get("adaround", {}).pop("int4_layers", None)
    bits = 4 if (int4_weights and int4_layers is None) or adaround_bits == 4 else 8
    if int4_weights and "adaround" not in steps:
        raise ConversionError(
            "int4_weights=True with optimize= needs the 'adaround' step: it puts the weights on "
            "a 4-bit grid (round-to-nearest is ('adaround', {'iterations': 0}))."
        )
    if int4_layers is not None and (not int4_weights or adaround_bits is not None):
        raise ConversionError(
            "optimize: ('adaround', {'int4_layers': [...]}) chooses which layers get 4-bit "
            "weights: use it with int4_weights=True and without 'bits' (the other layers keep 8)."
        )
    if adaround_bits is not None and adaround_bits != bits:
        raise ConversionError(
            f"optimize: ('adaround', {{'bits': {adaround_bits}}}) contradicts int4_weights=True."
        )
    layer_bits = None
    if int4_layers is not None:
        if isinstance(int4_layers, str) or not int4_layers:
            raise ConversionError(
                "optimize: int4_layers must be a non-empty list of layer names; got "
                f"{int4_layers!r}."
            )
        layer_bits = {str(name): 4 for name in int4_layers}
    for name in ("adaround", "bias_correction"):
        if name in steps:
            steps[name].pop("bits", None)
    if data is not None:
        specs = [_tf_spec(tensor) for tensor in model.inputs]
        samples = collect_samples(data, specs, num_samples, model.name, inputs_rescaled(model))
        data = np.concatenate([sample[0] for sample in samples])
    try:
        optimized = optimize_model(
            model,
            list(steps.items()),
            data,
            per_channel=per_channel,
            bits=bits,
            layer_bits=layer_bits,
        )
    except ValueError as error:
        raise ConversionError(str(error)) from error
    return optimized, data, "adaround" in steps and (bits == 4 or layer_bits is not None)


def _tf_spec(tensor: Any) -> Any:
    """The `tf.TensorSpec` of a Keras input tensor."""
    import tensorflow as tf

    return tf.TensorSpec(tuple(tensor.shape), tensor.dtype)
