"""The training-layer protocol: what a technique leaves in a model during training, and `strip()`.

Pruning, clustering and their helpers put training-only layers into a model (a wrapper that
holds masks or centroids, a BatchNormalization on a faster kernel). Each such class derives from
`TrainingLayer` and says, in `strip()`, which plain layer holds its final weights. Whoever needs
a plain model (`tfcompress.convert`, `strip_pruning`, `strip_clustering`) finds these layers by
type and calls `strip()`; nothing looks at class names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import keras

from tfcompress.core.graph import rebuild


class TrainingLayer:
    """Mixin of every layer that exists only during training; `strip()` gives the plain layer.

    Attributes:
        technique: what the layer trains, in messages (`"pruned"`, `"clustered"`).
        strip_function: the public function that removes this kind of layer from a model.
        reported: whether `convert` names the layers it stripped (a wrapper) or not (a helper
            layer whose plain twin computes the same function).
    """

    technique: ClassVar[str] = ""
    strip_function: ClassVar[str] = ""
    reported: ClassVar[bool] = True

    def strip(self) -> keras.layers.Layer:
        """The plain Keras layer holding this layer's final weights."""
        raise NotImplementedError(f"{type(self).__name__} must implement strip().")


def walk_layers(model: Any) -> Iterator[Any]:
    """Every layer of `model`, the layers of nested models included (depth first)."""
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def training_layers(model: Any, kinds: tuple[type, ...] = (TrainingLayer,)) -> list[Any]:
    """The layers of `model` (nested models included) that are instances of `kinds`."""
    return [layer for layer in walk_layers(model) if isinstance(layer, kinds)]


def strip_training_layers(
    model: keras.Model, kinds: tuple[type, ...] = (TrainingLayer,)
) -> keras.Model:
    """A copy of `model` in which every layer of `kinds` is replaced by its `strip()`.

    Nested models holding such layers are stripped too; every other layer is copied as is.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> pruned = tfc.prune_low_magnitude(build_digits_cnn(width=4))
        >>> training_layers(strip_training_layers(pruned))
        []
    """

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, kinds):
            return layer.strip()
        if isinstance(layer, keras.Model) and training_layers(layer, kinds):
            return strip_training_layers(layer, kinds)
        return None

    return rebuild(model, replace)
