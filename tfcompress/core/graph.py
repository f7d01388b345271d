"""Walk and rebuild a functional or Sequential model with some layers replaced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

# Kernel layouts, for code that scales or groups a kernel by output channel: depthwise kernels are
# (..., in, multiplier) and transposed ones (..., out, in); every other kernel ends in `out`.
DEPTHWISE = keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D
TRANSPOSED = (
    keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose | keras.layers.Conv3DTranspose
)


def check_model(model: Any, what: str, alternative: str = "") -> None:
    """Refuse anything but a built functional/Sequential model, saying what to do instead."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model or a layer; got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"{what}: model '{model.name}' is unbuilt or subclassed. Build it as a functional or "
            f"Sequential model with keras.Input so its layers can be rewritten{alternative}."
        )


def fresh_copy(
    layer: keras.layers.Layer, input_shape: tuple | None = None, as_class: type | None = None
) -> keras.layers.Layer:
    """A new layer of the same config (and class, or `as_class`), built, with the same weights."""
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a stateless op used as a layer (`x + 1.0`): nothing to copy
    copy = (as_class or layer.__class__).from_config(layer.get_config())
    if input_shape is not None:
        copy.build(input_shape)
        copy.set_weights(layer.get_weights())
        return copy
    return built_like(copy, layer)


def built_like(new: keras.layers.Layer, layer: keras.layers.Layer) -> keras.layers.Layer:
    """`new` built as `layer` was and holding its weights (when `layer` is built); returns `new`."""
    build_config = layer.get_build_config()
    if build_config is not None:
        new.build_from_config(build_config)
    new.set_weights(layer.get_weights())
    return new


def rebuild(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    fresh_masks: bool = False,
) -> keras.Model:
    """Clone `model`; `replace(layer)` returns the new layer, or None to keep a fresh copy.

    `fresh_masks=True` makes each layer read the mask attached to its new input. A functional
    model records the mask a layer received as an argument of its call, computed by ops outside
    the layer that masks (Keras's NOT_EQUAL and ANY for `Masking`); a plain clone replays them, so
    a mask computed differently by a replacement (`IntegerMasking`'s 0/1 mask) would never reach
    the layers after it.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        replaced = replace(layer)
        return fresh_copy(layer) if replaced is None else replaced

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("mask", None)
        return layer(*args, **kwargs)

    if fresh_masks:
        return keras.models.clone_model(model, clone_function=clone, call_function=call)
    return keras.models.clone_model(model, clone_function=clone)


def clone_with_weights(model: keras.Model) -> keras.Model:
    """An independent copy of `model` with the same weight values (the original stays untouched)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def selected_layers(model: keras.Model, layers: Any, what: str) -> set[str] | None:
    """The names in `layers` (None: every layer), after checking that `model` has each of them."""
    if layers is None:
        return None
    names = set(layers)
    unknown = sorted(names - {layer.name for layer in model.layers})
    if unknown:
        raise ValueError(f"{what}: no layer named {unknown} in model '{model.name}'.")
    return names
