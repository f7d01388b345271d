"""`prune_low_magnitude` and `strip_pruning`: rewrite a functional/Sequential model's layers."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog, compat
from tfcompress.core.graph import (
    check_model,
    fresh_copy,
    needs_tracing,
    rebuild,
    selected_layers,
    traced_model,
)
from tfcompress.io import model_from
from tfcompress.layers import FusedBatchNormalization
from tfcompress.pruning.allocation import (
    DEFAULT_ALLOCATION,
    check_allocation,
    density_scales,
    kernel_targets,
)
from tfcompress.pruning.schedules import ConstantSparsity, PruningSchedule, is_real, plain_number
from tfcompress.pruning.wrapper import (
    LEGACY_ROUTE,
    PrunableLayer,
    PruneLowMagnitude,
    prunable_attributes,
    prunable_variables,
)

_NATIVE_OPTIONS = (
    "schedule",
    "layers",
    "block_size",
    "block_pooling_type",
    "sparsity_n_m",
    "criterion",
    "allocation",
)


def _tfmot_keywords(
    schedule: PruningSchedule | None, extra: dict[str, Any]
) -> PruningSchedule | None:
    """Take tfmot's keyword names that mean the same here; refuse the others, saying why."""
    extra = dict(extra)
    if "pruning_schedule" in extra:
        if schedule is not None:
            raise ValueError(
                "prune_low_magnitude: pass the schedule once, as schedule= (pruning_schedule= is "
                "tfmot's name for the same argument)."
            )
        schedule = extra.pop("pruning_schedule")
    if "sparsity_m_by_n" in extra:
        m_by_n = extra.pop("sparsity_m_by_n")
        raise ValueError(
            f"prune_low_magnitude: sparsity_m_by_n={m_by_n!r} is tfmot's argument, where (M, N) "
            "means M ZEROS in every N weights; tfcompress's sparsity_n_m=(N, M) means N KEPT "
            "weights in every M. For tfmot's meaning call tfc.sparsity.prune_low_magnitude("
            "..., sparsity_m_by_n=...), or pass sparsity_n_m=(N - M, N) here: (2, 4) is the "
            "same either way, (1, 4) is not."
        )
    if "pruning_policy" in extra:
        raise ValueError(
            "prune_low_magnitude: pruning_policy= is tfmot's argument; call "
            "tfc.sparsity.prune_low_magnitude(..., pruning_policy=...) (the tfmot-compatible API), "
            "or choose the layers with layers=[...]."
        )
    if extra:
        raise TypeError(
            f"prune_low_magnitude got unexpected keyword argument(s) {sorted(extra)}; it takes "
            f"{', '.join(_NATIVE_OPTIONS)} (and tfmot's pruning_schedule=). For tfmot's full "
            "signature use tfc.sparsity.prune_low_magnitude."
        )
    return schedule


def refuse_legacy_keras(obj: Any, what: str) -> None:
    """A tf_keras model or layer gets an error that says how to take the legacy route."""
    if compat.is_tf_keras(obj):
        raise TypeError(f"{what} cannot take {type(obj).__name__} '{obj.name}': {LEGACY_ROUTE}")


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
    allocation: str = DEFAULT_ALLOCATION,
    block_pooling_type: str = "AVG",
    **tfmot_keywords: Any,
) -> keras.Model | PruneLowMagnitude:
    """Wrap every layer with a kernel in `PruneLowMagnitude`; pass every other layer through.

    Dense, EinsumDense, Conv1D/2D/3D, Conv*Transpose, DepthwiseConv1D/2D, SeparableConv1D/2D,
    Embedding, MultiHeadAttention, LSTM, GRU, SimpleRNN and Bidirectional (their cells' input and
    recurrent kernels) are wrapped; Rescaling, Normalization, ops used as layers
    (`x + 1.0`) and every other layer are copied unchanged, except that BatchNormalization becomes
    `tfcompress.layers.FusedBatchNormalization` (the same function on TensorFlow's fused kernel,
    which makes a MobileNetV2 training step about a fifth faster; `strip_pruning` undoes it). Nested functional
    models are pruned recursively. The input model is not modified.

    Args:
        model_or_layer: a built functional, Sequential or subclassed model, or a single layer.
            A subclassed model's `call` is traced into the functional graph of its layers
            (`tfcompress.core.graph.traced_model`), which is what gets pruned and returned.
        schedule: when and how much to prune; default `ConstantSparsity(0.5, begin_step=0)`.
        layers: names of the layers to prune; by default every prunable layer. Naming a layer that
            cannot be pruned is an error.
        block_size: prune (rows, columns) blocks of each kernel seen as a matrix.
        sparsity_n_m: `(N, M)` structured sparsity, e.g. `(2, 4)`: N weights KEPT in every M
            (tfmot's `sparsity_m_by_n=(M, N)` counts zeros; it is refused here with the
            conversion, and accepted with its own meaning by `tfc.sparsity.prune_low_magnitude`).
        criterion: `"magnitude"` (|w|) or `"taylor"` (|w * dL/dw|, see `TaylorScores`).
        allocation: how the schedule's sparsity is spread over the pruned kernels (see
            `tfcompress.pruning.allocation`); the schedule's sparsity is then the overall
            sparsity of all the pruned kernels together. Default `"lamp"` (Lee et al., 2021):
            one threshold over the whole model on layer-adaptive scores, a weight's `w^2` over
            the sum of the `w^2` of the weights of its kernel at least as large. No layer is left
            dense by rule, but every kernel keeps its largest weight, and small kernels whose
            weights matter (3x3 depthwise, the first conv, the classifier) keep more of their
            weights than wide 1x1 or Dense kernels, which lose more: on a depthwise-separable
            CNN pruned to 80% this keeps whole channels alive where per-layer pruning kills
            them. The per-kernel targets are computed once, here, from the weights the model
            has now (so wrap the trained float model) and the schedule's final sparsity; during
            the ramp kernel `i` is pruned to `1 - (1 - s) * scale_i`. `"uniform"` prunes every
            kernel to the schedule's sparsity; `"erk"`, `"global"` and `"dense_depthwise"`
            (tfmot's rule: depthwise kernels dense, the rest pruned harder) are the others
            (docs/dev/decisions/2026-11-23-pruning-allocation-lamp.md compares them).
            Ignored with `sparsity_n_m`.
        block_pooling_type: how a block is scored with `block_size`: `"AVG"` (mean magnitude)
            or `"MAX"` (largest magnitude).
        **tfmot_keywords: `pruning_schedule=` is taken as `schedule=`; tfmot's
            `sparsity_m_by_n=` and `pruning_policy=` are refused with what to call instead.

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
    schedule = _tfmot_keywords(schedule, tfmot_keywords)
    model_or_layer = model_from(model_or_layer, "prune_low_magnitude")
    refuse_legacy_keras(model_or_layer, "prune_low_magnitude")
    options = {
        "schedule": schedule,
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_n_m": sparsity_n_m,
        "criterion": criterion,
    }
    if not isinstance(model_or_layer, keras.Model):
        return PruneLowMagnitude(model_or_layer, **options)
    allocation = check_allocation(allocation)
    model = model_or_layer
    if needs_tracing(model, keep=_pruned_whole):  # subclassed: the graph of its layers
        model = traced_model(model, "prune_low_magnitude", keep=_pruned_whole)
    check_model(
        model,
        "prune_low_magnitude",
        ", or wrap its layers one by one with prune_low_magnitude(layer)",
    )
    names = selected_layers(model, layers, "prune_low_magnitude")
    # validate the options once, before cloning anything
    PruneLowMagnitude(keras.layers.Dense(1), **{**options, "sparsity_n_m": sparsity_n_m})

    left_dense: list[str] = []

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer '{layer.name}' is already wrapped for pruning.")
        if _is_nested_model(layer) and names is None:  # allocated with the outer model below
            return prune_low_magnitude(layer, **options, allocation="uniform")
        chosen = names is None or layer.name in names
        if names is None and prunable_attributes(layer) is None and _custom_kernels(layer):
            left_dense.append(f"'{layer.name}' ({type(layer).__name__})")
        if not chosen or (names is None and prunable_attributes(layer) is None):
            if type(layer) is keras.layers.BatchNormalization:  # same math, faster step
                return fresh_copy(layer, as_class=FusedBatchNormalization)
            return None
        wrapper = PruneLowMagnitude(fresh_copy(layer), **options)
        wrapper.build_from_config(layer.get_build_config())
        return wrapper

    pruned = rebuild(model, replace)
    if left_dense:
        warnings.warn(
            f"prune_low_magnitude: the custom layers {', '.join(left_dense)} hold weights that "
            "are not pruned. To prune them, make each a tfcompress.pruning.PrunableLayer (its "
            "get_prunable_weights() names the kernels); to silence this, pass layers=[...] with "
            "the layers to prune.",
            stacklevel=2,
        )
    if allocation != "uniform" and sparsity_n_m is None:
        _allocate(pruned, schedule, allocation)
    return pruned


def _pruned_whole(layer: keras.layers.Layer) -> bool:
    """A composite layer that names its own prunable weights is wrapped as one layer."""
    return isinstance(layer, PrunableLayer)


def _custom_kernels(layer: keras.layers.Layer) -> bool:
    """A layer the catalog does not know, holding kernel-like (2-D or larger) trainable weights."""
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        return False
    if catalog.info(layer) is not None:
        return False
    return any(len(weight.shape) >= 2 for weight in layer.trainable_weights)


def _final_sparsity(schedule: PruningSchedule | None, allocation: str) -> float:
    if schedule is None:
        schedule = ConstantSparsity(0.5, begin_step=0)
    if isinstance(schedule, ConstantSparsity):
        return schedule.target_sparsity
    if is_real(getattr(schedule, "final_sparsity", None)):
        return float(plain_number(schedule.final_sparsity))
    raise ValueError(
        f"allocation={allocation!r} needs the schedule's final sparsity, which "
        f"{type(schedule).__name__} does not declare; give it a `final_sparsity` attribute or "
        "pass allocation='uniform'."
    )


def _is_depthwise(layer: keras.layers.Layer, path: str) -> bool:
    if catalog.is_depthwise(layer):
        return True
    return path.startswith("depthwise")  # the depthwise half of SeparableConv1D/2D


def _allocate(model: keras.Model, schedule: PruningSchedule | None, allocation: str) -> None:
    """Set every wrapper's `density_scales` so the schedule's sparsity is the overall one."""
    final = _final_sparsity(schedule, allocation)
    wrappers = pruned_layers(model)
    kernels, depthwise = [], []
    for wrapper in wrappers:
        for path, kernel in zip(wrapper.attributes, wrapper.kernels, strict=True):
            kernels.append(keras.ops.convert_to_numpy(kernel))
            depthwise.append(_is_depthwise(wrapper.layer, path))
    scales = iter(density_scales(kernel_targets(kernels, depthwise, final, allocation), final))
    for wrapper in wrappers:
        wrapper.density_scales = [next(scales) for _ in wrapper.attributes]


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
        return model.strip()
    refuse_legacy_keras(model, "strip_pruning")
    check_model(model, "strip_pruning")

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, PruneLowMagnitude):
            return layer.strip()
        if type(layer) is FusedBatchNormalization:
            return layer.strip()
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


def get_model_sparsity(model: keras.Model | keras.layers.Layer) -> float:
    """The fraction of zeros over all the prunable kernels of `model`, pruned or stripped.

    Wrapped layers count their masked kernels (what the converted file will hold); in a plain
    or stripped model every kernel `prune_low_magnitude` would prune counts. Biases,
    normalization weights and other small tensors are left out, as pruning leaves them out.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> dense = keras.layers.Dense(2)
        >>> model = keras.Sequential([keras.Input((2,)), dense])
        >>> _ = dense.kernel.assign(np.array([[0.0, 1.0], [2.0, 0.0]], "float32"))
        >>> tfc.sparsity.get_model_sparsity(model)
        0.5
    """
    refuse_legacy_keras(model, "get_model_sparsity")
    kernels = list(_prunable_kernels(model))
    if not kernels:
        raise ValueError(
            f"get_model_sparsity: '{model.name}' has no prunable kernel (Dense, Conv, Embedding, "
            "recurrent, or a PrunableLayer); there is nothing to measure."
        )
    zeros = sum(int(np.sum(kernel == 0)) for kernel in kernels)
    return zeros / sum(kernel.size for kernel in kernels)


def _prunable_kernels(layer: keras.layers.Layer) -> Any:
    if isinstance(layer, PruneLowMagnitude):
        for kernel, mask in zip(layer.kernels, layer.masks, strict=True):
            yield keras.ops.convert_to_numpy(kernel) * keras.ops.convert_to_numpy(mask)
    elif isinstance(layer, keras.Model):
        for inner in layer.layers:
            yield from _prunable_kernels(inner)
    elif prunable_attributes(layer) is not None and layer.built:
        for variable in prunable_variables(layer, prunable_attributes(layer)):
            yield keras.ops.convert_to_numpy(variable)
