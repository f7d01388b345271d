"""`prune_low_magnitude` and `strip_pruning`: rewrite a functional/Sequential model's layers."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from tfcompress._graph import check_model, fresh_copy, rebuild, selected_layers
from tfcompress.layers import FusedBatchNormalization
from tfcompress.pruning.schedules import PruningSchedule
from tfcompress.pruning.wrapper import PruneLowMagnitude, _resolve, prunable_attributes


def _is_nested_model(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) and bool(getattr(layer, "inputs", None))


def prune_low_magnitude(
    model_or_layer: keras.Model | keras.layers.Layer,
    schedule: PruningSchedule | None = None,
    *,
    layers: Sequence[str] | None = None,
    block_size: tuple[int, int] = (1, 1),
    sparsity_n_m: tuple[int, int] | None = None,
    criterion: str = "magnitude",
) -> keras.Model | PruneLowMagnitude:
    """Wrap every layer with a kernel in `PruneLowMagnitude`; pass every other layer through.

    Dense, EinsumDense, Conv1D/2D/3D, Conv*Transpose, DepthwiseConv1D/2D, SeparableConv1D/2D,
    Embedding and MultiHeadAttention are wrapped; Rescaling, Normalization, ops used as layers
    (`x + 1.0`) and every other layer are copied unchanged, except that BatchNormalization becomes
    `tfcompress.layers.FusedBatchNormalization` (the same function on TensorFlow's fused kernel,
    which makes a MobileNetV2 training step about a fifth faster; `strip_pruning` undoes it). Nested functional
    models are pruned recursively. The input model is not modified.

    Args:
        model_or_layer: a built functional or Sequential model, or a single layer.
        schedule: when and how much to prune; default `ConstantSparsity(0.5, begin_step=0)`.
        layers: names of the layers to prune; by default every prunable layer. Naming a layer that
            cannot be pruned is an error.
        block_size: prune (rows, columns) blocks of each kernel seen as a matrix.
        sparsity_n_m: `(N, M)` structured sparsity, e.g. `(2, 4)`.
        criterion: `"magnitude"` (|w|) or `"taylor"` (|w * dL/dw|, see `TaylorScores`).

    Returns:
        The wrapped model (or layer). Train it with `UpdatePruningStep()` in the callbacks, then
        call `strip_pruning` before `tfcompress.convert`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> pruned = tfc.prune_low_magnitude(
        ...     build_digits_cnn(), schedule=tfc.pruning.ConstantSparsity(0.5, begin_step=0))
        >>> [layer.layer.name for layer in pruned.layers
        ...  if isinstance(layer, tfc.pruning.PruneLowMagnitude)]
        ['conv1', 'conv2', 'conv3', 'fc1', 'logits']
    """
    options = {
        "schedule": schedule,
        "block_size": block_size,
        "sparsity_n_m": sparsity_n_m,
        "criterion": criterion,
    }
    if not isinstance(model_or_layer, keras.Model):
        return PruneLowMagnitude(model_or_layer, **options)
    model = model_or_layer
    check_model(
        model,
        "prune_low_magnitude",
        ", or wrap its layers one by one with prune_low_magnitude(layer)",
    )
    names = selected_layers(model, layers, "prune_low_magnitude")
    # validate the options once, before cloning anything
    PruneLowMagnitude(keras.layers.Dense(1), **{**options, "sparsity_n_m": sparsity_n_m})

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer '{layer.name}' is already wrapped for pruning.")
        if _is_nested_model(layer) and names is None:
            return prune_low_magnitude(layer, **options)
        chosen = names is None or layer.name in names
        if not chosen or (names is None and prunable_attributes(layer) is None):
            if type(layer) is keras.layers.BatchNormalization:  # same math, faster step
                return fresh_copy(layer, as_class=FusedBatchNormalization)
            return None
        wrapper = PruneLowMagnitude(fresh_copy(layer), **options)
        wrapper.build_from_config(layer.get_build_config())
        return wrapper

    return rebuild(model, replace)


def _stripped_layer(wrapper: PruneLowMagnitude) -> keras.layers.Layer:
    inner = fresh_copy(wrapper.layer)
    for path, mask in zip(wrapper.attributes, wrapper.masks, strict=True):
        owner = _resolve(inner, path)
        values = keras.ops.convert_to_numpy(owner) * keras.ops.convert_to_numpy(mask)
        owner.assign(values.astype(np.dtype(owner.dtype)))
    return inner


def strip_pruning(model: keras.Model | keras.layers.Layer) -> keras.Model | keras.layers.Layer:
    """A plain Keras model with the pruning wrappers removed and the zeros baked into the kernels.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> plain = tfc.strip_pruning(tfc.prune_low_magnitude(build_digits_cnn()))
        >>> any(isinstance(layer, tfc.pruning.PruneLowMagnitude) for layer in plain.layers)
        False
    """
    if isinstance(model, PruneLowMagnitude):
        return _stripped_layer(model)
    check_model(model, "strip_pruning")

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, PruneLowMagnitude):
            return _stripped_layer(layer)
        if type(layer) is FusedBatchNormalization:
            return fresh_copy(layer, as_class=keras.layers.BatchNormalization)
        if _is_nested_model(layer):
            return strip_pruning(layer)
        return None

    return rebuild(model, replace)


def pruned_layers(model: keras.Model) -> list[PruneLowMagnitude]:
    """Every `PruneLowMagnitude` wrapper in `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
        elif _is_nested_model(layer):
            found.extend(pruned_layers(layer))
    return found
