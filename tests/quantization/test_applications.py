"""keras.applications models quantize, train a step and convert to int8 with zero float ops."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.outputs import inference
from tfcompress.converter import run_tflite
from tfcompress.quantization import quantize_model

APPS = keras.applications
# MobileNetV3Small has every layer kind of MobileNetV2 (ZeroPadding2D before strided depthwise
# convolutions, ReLU6 inside hard_swish, residual Add, BatchNormalization) and more, so it alone
# guards the suite's time; benchmarks/qat_bench.py converts all 11 applications.
BUILDERS: dict[str, Callable[[], keras.Model]] = {
    # hard_swish written as `x * ReLU6(x + 3.0) / 6`, Rescaling and squeeze-excite Multiply.
    "MobileNetV3Small": lambda: APPS.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, minimalistic=False
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_application_trains_and_converts_to_full_int8(name: str, rng) -> None:
    keras.utils.set_random_seed(0)
    qat = quantize_model(BUILDERS[name]())
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    # two steps run eagerly: tracing this graph's training step costs about 8x the steps
    # (traced QAT training is every other test of quantize_model)
    qat.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    qat.fit(x, np.arange(16) % 10, epochs=1, batch_size=8, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    assert tfc.inspect(flatbuffer).float_ops == []
    keras_out = inference(qat, x)
    np.testing.assert_allclose(run_tflite(flatbuffer, x), keras_out, atol=0.02)
