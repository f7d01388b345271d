"""Files for the TFLM tests: real int8 conversions of tiny models, made once per session."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.data import Split
from tfcompress.models import build_digits_cnn

pytest.importorskip("tflite_micro", reason="tflite-micro is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="session")
def digits_int8(digits: Split) -> bytes:
    """The digits CNN (untrained weights, calibrated on the real digits) as a full-integer file."""
    keras.utils.set_random_seed(0)
    return tfc.convert(build_digits_cnn(width=8), "int8", digits.x_train[:100])


@pytest.fixture(scope="session")
def upsampling_int8() -> bytes:
    """Conv2D -> UpSampling2D (named 'upsample') -> Conv2D: the UpSampling2D becomes TILE."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(3, 3, padding="same", name="conv"),
            keras.layers.UpSampling2D(name="upsample"),
            keras.layers.Conv2D(2, 1, name="head"),
        ],
        name="upsampler",
    )
    x = np.random.default_rng(0).random((32, 4, 4, 2), dtype=np.float32)
    return tfc.convert(model, "int8", x)
