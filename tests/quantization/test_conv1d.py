"""Conv1D, DepthwiseConv1D and SeparableConv1D train quantization-aware and convert to int8.

TFLite runs them as 2-D convolutions over (batch, 1, width, channels); `QuantizeWrapper`
computes them the same way, so the per-channel kernel it fake-quantizes is the one in the file.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.quantization import QuantizeWrapper

L = keras.layers
_VARIANTS = {
    "conv1d-causal-dilated": lambda: L.Conv1D(6, 3, padding="causal", dilation_rate=2),
    "conv1d-strided-valid": lambda: L.Conv1D(6, 3, strides=2),
    "conv1d-groups": lambda: L.Conv1D(6, 3, padding="same", groups=2),
    "depthwise1d-multiplier": lambda: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same"),
    "depthwise1d-dilated": lambda: L.DepthwiseConv1D(3, dilation_rate=2),
}


@pytest.mark.parametrize("make", _VARIANTS.values(), ids=_VARIANTS.keys())
def test_wrapper_computes_the_keras_layer(make, rng):
    layer = make()
    x = rng.normal(size=(4, 12, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    got = keras.ops.convert_to_numpy(QuantizeWrapper(layer)(x))
    # only the weights' int8 rounding differs
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def _sensor_net() -> keras.Model:
    """A 1-D sensor/audio CNN: Conv1D-BN-ReLU, DepthwiseConv1D-BN-ReLU, SeparableConv1D, head."""
    inputs = keras.Input((16, 3))
    x = L.Conv1D(8, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.DepthwiseConv1D(3, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.SeparableConv1D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(4)(x))


def test_sensor_cnn_qat_converts_to_int8_matching_the_qat_model(rng):
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(96, 16, 3)).astype("float32")
    y = (x[:, :, 0].mean(1) > 0).astype("int32") + 2 * (x[:, :, 1].mean(1) > 0)
    qat = tfc.quantize_model(_sensor_net())
    wrapped = {
        type(layer.layer).__name__ for layer in qat.layers if isinstance(layer, QuantizeWrapper)
    }
    assert {"Conv1D", "DepthwiseConv1D", "Dense"} <= wrapped
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=2, batch_size=32, verbose=0)
    flatbuffer = tfc.convert(qat, "int8", x[:32])
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(report.op_counts)
    expected = qat.predict(x, verbose=0)
    got = run_tflite(flatbuffer, x)
    scale = report.tensors[report.outputs[0]].quantization.scale[0]
    assert np.abs(got - expected).max() <= 3 * scale
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
