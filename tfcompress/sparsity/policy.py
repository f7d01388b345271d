"""Pruning policies: which layers `tfc.sparsity.prune_low_magnitude` wraps, and model checks."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import keras

from tfcompress.core.graph import consumers, producer_of, producers
from tfcompress.pruning.wrapper import PruneLowMagnitude

Layer = Any  # a keras layer or an op used as a layer (`x + 1.0`)


class PruningPolicy(abc.ABC):
    """Decides which layers of a model are pruned and checks the model can use the result.

    Subclass it and implement `allow_pruning(layer)` (wrap this layer?) and
    `ensure_model_supports_pruning(model)` (raise `ValueError` naming the layer that stops the
    model from benefiting); pass an instance as `pruning_policy=` to
    `tfc.sparsity.prune_low_magnitude`.

    Example:
        >>> import keras, tfcompress as tfc
        >>> class OnlyDense(tfc.sparsity.PruningPolicy):
        ...     def allow_pruning(self, layer):
        ...         return isinstance(layer, keras.layers.Dense)
        ...     def ensure_model_supports_pruning(self, model):
        ...         pass
        >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
        >>> pruned = tfc.sparsity.prune_low_magnitude(model, pruning_policy=OnlyDense())
        >>> [layer.layer.name for layer in pruned.layers if hasattr(layer, "pruning_step")]
        ['out']
    """

    @abc.abstractmethod
    def allow_pruning(self, layer: Layer) -> bool:
        """True if `layer` should be wrapped for pruning."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raise `ValueError` (naming the layer and the fix) if `model` does not fit the policy."""


def _search(
    sources: Iterable[Layer],
    is_target: Callable[[Layer], bool],
    neighbours: Callable[[Layer], list[Layer]],
) -> list[Layer]:
    """Walk from `sources` until `is_target`; empty if some branch ends before reaching one."""
    pending, seen, targets = list(sources), set(), []
    seen.update(id(layer) for layer in pending)
    while pending:
        layer = pending.pop()
        if is_target(layer):
            targets.append(layer)
            continue
        following = neighbours(layer)
        if not following:
            return []
        for other in following:
            if id(other) not in seen:
                seen.add(id(other))
                pending.append(other)
    return targets


def _pair(value: Any) -> tuple:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _padding_of(layer: Layer) -> tuple:
    return tuple(_pair(side) for side in _pair(layer.padding))


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prune only what XNNPACK's sparse inference runs faster: 1x1 `Conv2D` layers.

    XNNPACK (the default CPU delegate of LiteRT) runs a sparse 1x1 convolution faster than the
    dense one only inside a subgraph it can keep in its sparse (CHW) layout. That subgraph
    starts at a 3x3, stride-2, 'valid' `Conv2D` on 3 input channels preceded by
    `ZeroPadding2D(1)`, and ends at `GlobalAveragePooling2D(keepdims=True)`; between them only
    1x1 stride-1 `Conv2D`, 3x3/5x5 `DepthwiseConv2D` (stride 1 'same', or 'valid' after the
    matching `ZeroPadding2D`), `BatchNormalization` on the channel axis, ReLU/ReLU6/
    LeakyReLU/ELU/sigmoid activations, `Add`, `Multiply`, `Dropout`, `ZeroPadding2D` and
    bilinear `UpSampling2D` may appear. `ensure_model_supports_pruning` checks this (the same
    rule as tfmot's policy) and names the first layer that breaks it; convert the stripped model
    with `converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]` (or
    `tfc.pruning.convert_sparse`) to get the sparse file.

    Example:
        >>> import keras, tfcompress as tfc
        >>> policy = tfc.sparsity.PruneForLatencyOnXNNPack()
        >>> policy.allow_pruning(keras.layers.Conv2D(8, 1)), policy.allow_pruning(keras.layers.Conv2D(8, 3))
        (True, False)
    """

    def allow_pruning(self, layer: Layer) -> bool:
        """Only 1x1 `Conv2D` layers are pruned."""
        return type(layer) is keras.layers.Conv2D and _pair(layer.kernel_size) == (1, 1)

    def _is_start(self, layer: Layer) -> bool:
        if type(layer) is not keras.layers.Conv2D or not layer.built:
            return False
        inputs = producers(layer)
        return (
            tuple(layer.kernel.shape[:3]) == (3, 3, 3)
            and _pair(layer.strides) == (2, 2)
            and layer.padding.lower() == "valid"
            and len(inputs) == 1
            and isinstance(inputs[0], keras.layers.ZeroPadding2D)
            and _padding_of(inputs[0]) == ((1, 1), (1, 1))
        )

    @staticmethod
    def _is_end(layer: Layer) -> bool:
        return isinstance(layer, keras.layers.GlobalAveragePooling2D) and bool(layer.keepdims)

    def _supported_depthwise(self, layer: keras.layers.DepthwiseConv2D) -> bool:
        kernel, strides = _pair(layer.kernel_size), _pair(layer.strides)
        if kernel not in ((3, 3), (5, 5)) or layer.depth_multiplier != 1:
            return False
        if _pair(layer.dilation_rate) != (1, 1):
            return False
        if layer.padding.lower() == "same":
            return strides == (1, 1)
        inputs = producers(layer)
        pad = kernel[0] // 2
        return (
            strides in ((1, 1), (2, 2))
            and len(inputs) == 1
            and isinstance(inputs[0], keras.layers.ZeroPadding2D)
            and _padding_of(inputs[0]) == ((pad, pad), (pad, pad))
        )

    def _supported(self, layer: Layer) -> bool:
        if isinstance(layer, PruneLowMagnitude):
            return self._supported(layer.layer)
        simple = (
            keras.layers.Add,
            keras.layers.Multiply,
            keras.layers.ZeroPadding2D,
            keras.layers.ReLU,
            keras.layers.LeakyReLU,
            keras.layers.ELU,
            keras.layers.Dropout,
        )
        if isinstance(layer, simple):
            return True
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return self._supported_depthwise(layer)
        if type(layer) is keras.layers.Conv2D:
            return (
                layer.groups == 1
                and _pair(layer.dilation_rate) == (1, 1)
                and _pair(layer.kernel_size) == (1, 1)
                and _pair(layer.strides) == (1, 1)
            )
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return bool(layer.keepdims)
        if isinstance(layer, keras.layers.BatchNormalization):
            return layer.axis in (-1, 3, [3], [-1])
        if isinstance(layer, keras.layers.UpSampling2D):
            return layer.interpolation == "bilinear"
        if isinstance(layer, keras.layers.Activation):
            name = getattr(layer.activation, "__name__", "")
            return name in ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
        # ops used as layers in a functional model (`x + y`, `x * y`)
        return type(layer).__name__ in ("Add", "Subtract", "Multiply", "Identity")

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raise `ValueError` unless `model` has XNNPACK's sparse subgraph (see the class)."""
        if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
            raise ValueError(
                f"{type(self).__name__} checks a built functional or Sequential model; "
                f"got {type(model).__name__} (subclassed or unbuilt). Build it with keras.Input."
            )
        inputs = [producer_of(tensor) for tensor in model.inputs]
        starts = _search(inputs, self._is_start, consumers)
        if not starts:
            raise ValueError(
                "Could not find a 3x3 Conv2D with stride (2, 2), 3 input channels and 'valid' "
                "padding, preceded by ZeroPadding2D(padding=1), in every input branch: XNNPACK's "
                "sparse inference starts there. Begin the model with ZeroPadding2D(1) and "
                "Conv2D(filters, 3, strides=2, padding='valid') on an RGB input."
            )
        outputs = [producer_of(tensor) for tensor in model.outputs]
        ends = _search(outputs, self._is_end, producers)
        if not ends:
            pooling = [
                layer.name
                for layer in model.layers
                if isinstance(layer, keras.layers.GlobalAveragePooling2D)
            ]
            hint = f" (layer(s) {pooling} have keepdims=False)" if pooling else ""
            raise ValueError(
                "Could not find a GlobalAveragePooling2D layer with keepdims=True in all output "
                f"branches{hint}: XNNPACK's sparse inference ends there. Use "
                "GlobalAveragePooling2D(keepdims=True) followed by Flatten()."
            )
        end_ids = {id(layer) for layer in ends}

        def check(layer: Layer) -> bool:
            if id(layer) in end_ids:
                return True
            if not self._supported(layer):
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by the "
                    f"{type(self).__name__} pruning policy: XNNPACK's sparse inference cannot "
                    "run it between the first 3x3 stride-2 Conv2D and the "
                    "GlobalAveragePooling2D(keepdims=True). Replace it with a supported layer "
                    "(see PruneForLatencyOnXNNPack's docstring) or prune without the policy."
                )
            return False

        following = [layer for start in starts for layer in consumers(start)]
        _search(following, check, consumers)
