"""The float ranges TF's converter leaves in int16x8 quantization parameters are dropped: no
runtime reads them, so the file is smaller and computes the same values on every runtime."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.tflite.tf_alone import int16x8_by_tf_alone
from tfcompress.converter import run_tflite
from tfcompress.micro.report import run_on_tflm
from tfcompress.tflite.flatbuffer import drop_ranges, read_model


def _ranged_tensors(flatbuffer: bytes) -> int:
    model = read_model(flatbuffer)
    return sum(
        tensor.quantization is not None
        and (tensor.quantization.min is not None or tensor.quantization.max is not None)
        for subgraph in model.subgraphs
        for tensor in subgraph.tensors
    )


@pytest.fixture(scope="module")
def cnn_and_rows() -> tuple[keras.Model, np.ndarray]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))
    rows = np.random.default_rng(0).normal(size=(24, 8, 8, 1)).astype("float32")
    return model, rows


def test_int16x8_ranges_are_dropped_and_every_runtime_computes_the_same_values(cnn_and_rows):
    model, rows = cnn_and_rows
    raw = int16x8_by_tf_alone(model, rows)
    assert _ranged_tensors(raw) > 0  # TF's converter leaves them
    dropped = drop_ranges(raw)
    assert _ranged_tensors(dropped) == 0 and len(dropped) < len(raw)
    x = rows[16:]
    for options in ({"builtin_only": True}, {"reference": True}):
        assert np.array_equal(run_tflite(dropped, x, **options), run_tflite(raw, x, **options))
    (on_tflm,) = run_on_tflm(dropped, [x])
    (before,) = run_on_tflm(raw, [x])
    assert np.array_equal(on_tflm, before)


def test_convert_writes_int16x8_files_without_ranges(cnn_and_rows):
    model, rows = cnn_and_rows
    flatbuffer = tfc.convert(model, "int16x8", rows[:16], check=False)
    assert _ranged_tensors(flatbuffer) == 0
    assert tfc.inspect(flatbuffer).float_ops == []
