"""Rebuild a functional or Sequential model with some layers replaced (shared by sharing/)."""

from __future__ import annotations

from collections.abc import Callable

import keras


def check_rewritable(model: keras.Model, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model or a layer; got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"{what}: model '{model.name}' is unbuilt or subclassed. Build it as a functional or "
            "Sequential model with keras.Input so its layers can be rewritten."
        )


def fresh_copy(layer: keras.layers.Layer, input_shape: tuple | None = None) -> keras.layers.Layer:
    """A new layer of the same class and config, carrying the same weight values."""
    copy = layer.__class__.from_config(layer.get_config())
    if input_shape is None and _has_single_input(layer):
        input_shape = tuple(layer.input.shape)
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy


def _has_single_input(layer: keras.layers.Layer) -> bool:
    try:
        return not isinstance(layer.input, list | tuple)
    except (AttributeError, ValueError):
        return False


def rebuild(
    model: keras.Model, replace: Callable[[keras.layers.Layer], keras.layers.Layer | None]
) -> keras.Model:
    """Clone `model`; `replace(layer)` returns the new layer, or None to keep a fresh copy."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        replaced = replace(layer)
        if replaced is not None:
            return replaced
        return layer.__class__.from_config(layer.get_config())

    clone_model = keras.models.clone_model(model, clone_function=clone)
    _copy_untouched_weights(model, clone_model, replace)
    return clone_model


def _copy_untouched_weights(source: keras.Model, target: keras.Model, replace: Callable) -> None:
    """clone_model rebuilds kept layers from their config; give them back their weight values."""
    old_layers = {layer.name: layer for layer in source.layers}
    for new in target.layers:
        old = old_layers.get(new.name)
        if old is not None and old.weights and type(new) is type(old):
            new.set_weights(old.get_weights())
