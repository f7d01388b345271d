"""Quantizers and configs against their float reference; serialization of every public object."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.quantization import (
    ActivationQuantizer,
    QuantizeConfig,
    QuantizeWrapper,
    WeightQuantizer,
    get_quantize_config,
)


def test_weight_quantizer_per_channel_is_symmetric_narrow_range(rng) -> None:
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    quantized = keras.ops.convert_to_numpy(WeightQuantizer(8, per_channel=True)(kernel))
    for channel in range(6):
        scale = np.abs(kernel[..., channel]).max() / 127.0
        levels = np.round(quantized[..., channel] / scale)
        np.testing.assert_allclose(levels * scale, quantized[..., channel], atol=1e-5)
        assert levels.min() >= -127 and levels.max() <= 127


def test_activation_quantizer_tracks_a_moving_average_range(rng) -> None:
    quantizer = ActivationQuantizer(decay=0.5)
    quantizer(np.array([[-1.0, 3.0]], "float32"), training=True)
    quantizer(np.array([[-3.0, 1.0]], "float32"), training=True)
    low, high, _ = quantizer.get_weights()
    assert (low, high) == pytest.approx((-2.0, 2.0))
    quantizer(np.array([[-30.0, 30.0]], "float32"), training=False)
    assert quantizer.get_weights()[0] == pytest.approx(-2.0)  # inference leaves the range alone


def test_fixed_range_matches_tflite_softmax_scale() -> None:
    quantizer = ActivationQuantizer(fixed_range=(0.0, 255.0 / 256.0))
    out = keras.ops.convert_to_numpy(quantizer(np.linspace(0, 1, 50, dtype="float32")[None]))
    np.testing.assert_allclose(out * 256.0, np.round(out * 256.0), atol=1e-4)


def test_wrapper_and_configs_round_trip_through_their_config(rng) -> None:
    conv = keras.layers.Conv2D(4, 3, activation="swish")
    conv.build((None, 6, 6, 2))
    batchnorm = keras.layers.BatchNormalization()
    batchnorm.build((None, 4, 4, 4))
    wrapper = QuantizeWrapper(conv, QuantizeConfig(weight_bits=4), batchnorm=batchnorm)
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    expected = keras.ops.convert_to_numpy(wrapper(x))
    clone = QuantizeWrapper.from_config(wrapper.get_config())
    clone.build((None, 6, 6, 2))
    clone.set_weights(wrapper.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), expected, atol=1e-6)
    assert clone.config.weight_bits == 4


def test_folded_batchnorm_matches_conv_then_batchnorm(rng) -> None:
    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 6, 6, 2))
    batchnorm = keras.layers.BatchNormalization()
    batchnorm.build((None, 4, 4, 4))
    batchnorm.set_weights([rng.uniform(0.5, 2, 4).astype("float32") for _ in range(4)])
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    reference = keras.ops.convert_to_numpy(batchnorm(conv(x), training=False))
    folded = keras.ops.convert_to_numpy(QuantizeWrapper(conv, batchnorm=batchnorm)(x))
    np.testing.assert_allclose(folded, reference, atol=0.05 * np.abs(reference).max())


def test_bad_bits_are_rejected_with_the_argument_name() -> None:
    with pytest.raises(ValueError, match="weight_bits"):
        QuantizeConfig(weight_bits=9)
    with pytest.raises(ValueError, match="activation_bits"):
        QuantizeConfig(activation_bits=4)
    with pytest.raises(ValueError, match="num_bits"):
        ActivationQuantizer(num_bits=4)
    with pytest.raises(ValueError, match="role"):
        QuantizeConfig(role="maybe")


def test_wrapper_rejects_a_layer_it_cannot_recompute() -> None:
    with pytest.raises(ValueError, match="my_lstm"):
        QuantizeWrapper(keras.layers.LSTM(2, name="my_lstm"))


def test_registry_knows_common_layers() -> None:
    assert get_quantize_config(keras.layers.Conv2D(2, 1)).role == "kernel"
    assert get_quantize_config(keras.layers.MaxPooling2D()).role == "passthrough"
    assert get_quantize_config(keras.layers.Add()).role == "output"
