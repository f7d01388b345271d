"""int16x8 biases are stored in 32 bits where no accumulator can overflow: the file is smaller and
computes the same values on LiteRT's kernels and on TFLite Micro's."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.tflite.tf_alone import int16x8_by_tf_alone
from tfcompress.converter import run_tflite
from tfcompress.micro.report import run_on_tflm
from tfcompress.tflite.biases import narrow_biases
from tfcompress.tflite.flatbuffer import op_name, read_model


def _bias_types(flatbuffer: bytes) -> dict[str, str]:
    """{op name: its bias tensor's dtype} for the ops with a bias (the first of each kind)."""
    model = read_model(flatbuffer)
    report = tfc.inspect(flatbuffer)
    found: dict[str, str] = {}
    for op in model.subgraphs[0].operators:
        name = op_name(model, op)
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"):
            continue
        inputs = [int(i) for i in op.inputs]
        position = 3 if name == "TRANSPOSE_CONV" else 2
        index = inputs[position] if len(inputs) > position else -1
        if index >= 0 and name not in found:
            found[name] = report.tensors[index].dtype
    return found


@pytest.fixture(scope="module")
def net_and_rows() -> tuple[keras.Model, np.ndarray]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))
    rng = np.random.default_rng(1)
    for layer in model.layers:  # biases large enough that rounding them to int32 would show
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(size=bias.shape)])
    rows = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype("float32")
    return model, rows


def test_biases_that_fit_become_int32_and_the_file_computes_the_same_values(net_and_rows):
    model, rows = net_and_rows
    wide = int16x8_by_tf_alone(model, rows, int16_io=True)
    assert set(_bias_types(wide).values()) == {"INT64"}
    narrow = narrow_biases(wide)
    assert _bias_types(narrow) == {
        "CONV_2D": "INT32",
        "DEPTHWISE_CONV_2D": "INT64",  # LiteRT's depthwise kernel takes int64 biases only
        "TRANSPOSE_CONV": "INT64",  # TFLM's reads an int32 bias of a 16-bit op wrongly
        "FULLY_CONNECTED": "INT32",
    }
    assert len(narrow) < len(wide)
    x = rows[16:]
    report = tfc.inspect(narrow)
    step = report.tensors[report.outputs[0]].quantization.scale[0]
    reference = model(x).numpy()
    for options in ({"builtin_only": True}, {"reference": True}):
        # the int32-bias kernels round the rescaled sums as the int8 kernels do: one step at most
        narrow_out, wide_out = run_tflite(narrow, x, **options), run_tflite(wide, x, **options)
        assert np.abs(narrow_out - wide_out).max() <= 1.001 * step
        narrow_error = np.abs(narrow_out - reference).mean()
        assert narrow_error <= 1.05 * np.abs(wide_out - reference).mean()
    (on_tflm,) = run_on_tflm(narrow, [x])
    assert np.array_equal(on_tflm, run_tflite(narrow, x, reference=True))


def test_a_bias_whose_accumulator_could_overflow_int32_stays_int64():
    # 1,024 inputs, every weight at the top of its grid: 32768 * 127 * 1024 > 2**31
    inputs = keras.Input((1024,))
    layer = keras.layers.Dense(2, name="wide")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.full((1024, 2), 0.5, "float32"), np.ones(2, "float32")])
    rows = np.random.default_rng(0).random((24, 1024)).astype("float32")
    narrow = narrow_biases(int16x8_by_tf_alone(model, rows, int16_io=True))
    assert _bias_types(narrow) == {"FULLY_CONNECTED": "INT64"}


def test_convert_stores_int16x8_biases_narrow(net_and_rows):
    model, rows = net_and_rows
    flatbuffer = tfc.convert(model, "int16x8", rows[:16], check=False)
    assert _bias_types(flatbuffer)["CONV_2D"] == "INT32"
    assert narrow_biases(flatbuffer) == flatbuffer


def test_the_16_bit_ops_of_an_int8_file_get_narrow_biases_too(net_and_rows):
    model, rows = net_and_rows
    mixed = tfc.convert(model, "int8", rows[:16], int16_layers=["conv"], check=False)
    dtypes = {tensor.dtype for tensor in tfc.inspect(mixed).tensors}
    assert "INT16" in dtypes and "INT64" in dtypes  # the depthwise conv reads conv's 16 bits
    assert _bias_types(mixed)["CONV_2D"] == "INT32"
    assert narrow_biases(mixed) == mixed
