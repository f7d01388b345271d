"""Subclassed Keras models in the research style, shared by the QAT and pruning tests.

Layers are made in `__init__` (one in a list, some inside a composite block), `call` uses them
with `keras.ops` in between and hands `training` on, with a default of False.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.pruning import PrunableLayer

L = keras.layers


@keras.saving.register_keras_serializable(package="tests_subclassed")
class Residual(L.Layer):
    """A composite block: conv, batch norm, relu, and the skip connection."""

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = L.Conv2D(filters, 3, padding="same")
        self.norm = L.BatchNormalization()

    def call(self, x: Any, training: bool = False) -> Any:
        return x + ops.relu(self.norm(self.conv(x), training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="tests_subclassed")
class Scale(L.Layer):
    """A custom layer with a weight of its own that no technique knows."""

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(
            shape=(input_shape[-1], input_shape[-1]), initializer="identity"
        )

    def call(self, x: Any) -> Any:
        return ops.matmul(x, self.gamma)


@keras.saving.register_keras_serializable(package="tests_subclassed")
class TinyNet(keras.Model):
    """stem conv -> two residual blocks (a list) -> pooling -> dense head (10 classes)."""

    def __init__(self, width: int = 6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = width
        self.stem = L.Conv2D(width, 3, activation="relu")
        self.blocks = [Residual(width), Residual(width)]
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(10)

    def call(self, x: Any, training: bool = False) -> Any:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(self.pool(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="tests_subclassed")
class PrunableScale(Scale, PrunableLayer):
    """`Scale` telling pruning which weight to prune (the tfmot-style protocol)."""

    def get_prunable_weights(self) -> list:
        return [self.gamma]


@keras.saving.register_keras_serializable(package="tests_subclassed")
class WithCustom(keras.Model):
    """A dense layer, then a custom layer holding its own weight, then a dense head."""

    def __init__(self, prunable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prunable = prunable
        self.dense = L.Dense(8, activation="relu")
        self.scale = (PrunableScale if prunable else Scale)(name="my_scale")
        self.head = L.Dense(2)

    def call(self, x: Any) -> Any:
        return self.head(self.scale(self.dense(x)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "prunable": self.prunable}


def built(model: keras.Model, shape: tuple[int, ...]) -> keras.Model:
    """`model` called once on zeros of `shape` (batch first), as research code builds it."""
    model(ops.zeros(shape))
    return model
