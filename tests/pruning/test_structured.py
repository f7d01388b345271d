"""Structured pruning removes whole channels through BN, depthwise convs and residual adds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import build_digits_cnn
from tfcompress.pruning import count_flops, prune_channels


def _residual_model() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Conv2D(8, 1, name="project")(y)
    y = keras.layers.BatchNormalization(name="project_bn")(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(6, 1, activation="relu", name="expand")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _silence_channels(model: keras.Model, dead: np.ndarray) -> None:
    """Make `dead` channels of the residual group exactly zero, so removing them is lossless."""
    for name in ("stem", "project"):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., dead] = 0.0
        bias[dead] = 0.0
        model.get_layer(name).set_weights([kernel, bias])
    for name in ("stem_bn", "project_bn"):
        gamma, beta, mean, variance = model.get_layer(name).get_weights()
        beta[dead] = 0.0
        mean[dead] = 0.0
        model.get_layer(name).set_weights([gamma, beta, mean, variance])
    kernel, bias = model.get_layer("expand").get_weights()
    kernel[..., 3:] = 0.0  # expand's channels 3..5 are dead too
    bias[3:] = 0.0
    model.get_layer("expand").set_weights([kernel, bias])


def test_removing_dead_channels_through_bn_depthwise_and_add_keeps_outputs() -> None:
    keras.utils.set_random_seed(5)
    model = _residual_model()
    dead = np.array([0, 2, 5, 7])
    _silence_channels(model, dead)
    small = prune_channels(model, 0.5)
    assert small.get_layer("stem").filters == 4
    assert small.get_layer("project").filters == 4
    assert small.get_layer("expand").filters == 3
    assert small.get_layer("head").units == 4  # the output keeps its size
    x = np.random.default_rng(5).normal(size=(3, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), 1e-4)
    assert small.count_params() < 0.55 * model.count_params()
    assert count_flops(small) < 0.55 * count_flops(model)


def test_structured_digits_cnn_converts_smaller_to_int8(digits) -> None:
    model = build_digits_cnn(width=16)
    small = prune_channels(model, 0.5)
    assert small.count_params() <= 0.55 * model.count_params()
    dense = tfc.convert(model, "int8", digits.x_train[:32])
    pruned = tfc.convert(small, "int8", digits.x_train[:32])
    assert len(pruned) <= 0.55 * len(dense)
    np.testing.assert_array_equal(
        tfc.converter.run_tflite(pruned, digits.x_test[:4]).shape, (4, 10)
    )


def test_flatten_and_outputs_keep_their_channels() -> None:
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    small = prune_channels(model, 0.5)
    assert small.get_layer("conv").filters == 6  # Flatten mixes positions: left whole
    assert small.count_params() == model.count_params()


@pytest.mark.parametrize("fraction", [1.0, -0.1, "half"])
def test_invalid_fraction_raises(fraction) -> None:
    with pytest.raises(ValueError, match="fraction"):
        prune_channels(build_digits_cnn(width=4), fraction)
