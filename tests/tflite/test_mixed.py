"""16-bit activations for chosen layers inside an int8 file (`convert(..., int16_layers=[...])`).

Each file is run for real on LiteRT (XNNPACK and the reference kernels) and on TFLite Micro.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.tflite.errors import ConversionError

pytest.importorskip("tflite_micro")
from tfcompress.micro.report import run_on_tflm  # noqa: E402


@pytest.fixture(scope="module")
def one_wide_channel() -> tuple[keras.Model, np.ndarray]:
    """A layer whose output has one channel 200x wider than the others, and a head that reads
    only the narrow ones: int8 steps sized for the wide channel drown them."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="wide")(inputs)
    hidden = keras.layers.ReLU(name="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(hidden))
    kernel, bias = model.get_layer("wide").get_weights()
    kernel[:, 0] *= 200.0
    model.get_layer("wide").set_weights([kernel, bias])
    head, head_bias = model.get_layer("head").get_weights()
    head[0, :] = 0.0
    model.get_layer("head").set_weights([head, head_bias])
    x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    return model, x


def _relative_error(flatbuffer: bytes, model: keras.Model, x: np.ndarray, runtime: str) -> float:
    expected = np.asarray(model(x, training=False))
    if runtime == "micro":
        got = np.asarray(run_on_tflm(flatbuffer, [x])[0])
    else:
        got = np.asarray(run_tflite(flatbuffer, x, reference=runtime == "reference"))
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("runtime", ["xnnpack", "reference", "micro"])
def test_a_16_bit_layer_gives_the_int8_file_the_int16x8_precision(one_wide_channel, runtime):
    model, x = one_wide_channel
    int8 = tfc.convert(model, "int8", x, check=False)
    mixed = tfc.convert(model, "int8", x, check=False, int16_layers=["wide"])
    assert _relative_error(int8, model, x, runtime) > 0.2
    # what is left is the int8 output's own rounding
    assert _relative_error(mixed, model, x, runtime) < 0.02


def test_the_layer_and_its_readers_run_in_16_bits_behind_integer_requantizes(one_wide_channel):
    model, x = one_wide_channel
    int8 = tfc.inspect(tfc.convert(model, "int8", x, check=False))
    report = tfc.inspect(tfc.convert(model, "int8", x, check=False, int16_layers=["relu"]))
    assert [op.name for op in report.ops] == [
        "QUANTIZE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "QUANTIZE",
    ]
    assert report.float_ops == []
    assert report.tensors[report.inputs[0]].dtype == "INT8"
    assert report.tensors[report.outputs[0]].dtype == "INT8"
    wide, head = report.ops[1], report.ops[2]
    assert report.tensors[wide.inputs[0]].dtype == "INT16"
    assert report.tensors[wide.outputs[0]].dtype == "INT16"
    assert report.tensors[head.outputs[0]].dtype == "INT16"
    # the same int8 weights, stored once; the biases become the 64-bit ones of int16x8
    weights = [t for t in report.tensors if t.is_constant and t.dtype == "INT8"]
    assert len(weights) == len([t for t in int8.tensors if t.is_constant and t.dtype == "INT8"])
    assert {t.dtype for t in report.tensors if t.is_constant} <= {"INT8", "INT64"}
    assert report.outputs and tfc.inspect(tfc.convert(model, "int8", x, check=False)).outputs


def test_a_cnn_with_one_16_bit_convolution_runs_on_litert_and_tflm_and_is_checked(
    trained_digits_cnn, digits
):
    x = digits.x_train[:200]
    mixed = tfc.convert(trained_digits_cnn, "int8", x, int16_layers=["relu2"])
    report = tfc.inspect(mixed)
    assert report.float_ops == []
    assert "INT16" in {report.tensors[op.outputs[0]].dtype for op in report.ops}
    int8 = tfc.convert(trained_digits_cnn, "int8", x, check=False)
    assert len(mixed) < 1.15 * len(int8)
    assert mixed.fidelity is not None and mixed.fidelity.passed  # convert's own check
    expected = np.asarray(trained_digits_cnn(digits.x_test[:64], training=False)).argmax(-1)
    for got in (
        run_tflite(mixed, digits.x_test[:64]),
        run_on_tflm(mixed, [digits.x_test[:64]])[0],
    ):
        assert (np.asarray(got).argmax(-1) == expected).mean() >= 0.95


def test_the_micro_target_takes_16_bit_layers(trained_digits_cnn, digits):
    x = digits.x_train[:100]
    flatbuffer = tfc.convert(
        trained_digits_cnn, "int8", x, target="micro", check=False, int16_layers=["relu2"]
    )
    assert "INT16" in {t.dtype for t in tfc.inspect(flatbuffer).tensors}
    check = tfc.micro.check(flatbuffer)
    assert check.runs, check.summary()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"mode": "int16x8", "int16_layers": ["wide"]}, "needs mode='int8'"),
        ({"mode": "edgetpu", "int16_layers": ["wide"]}, "Edge TPU runs int8 only"),
        ({"int16_layers": ["wide"], "keep_float": ["head"]}, "cannot be combined"),
        ({"int16_layers": ["wide"], "int4_weights": True}, "INT4"),
        ({"int16_layers": "wide"}, "int16_layers=['wide']"),
        ({"int16_layers": ["conv9"]}, "int16_layers names layers that"),
    ],
)
def test_bad_int16_layers_say_what_to_do(one_wide_channel, options, expected):
    model, x = one_wide_channel
    options = {"mode": "int8", **options}
    with pytest.raises(ConversionError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        tfc.convert(model, representative_data=x, check=False, **options)


def test_16_bit_layers_need_representative_data(one_wide_channel):
    model, _ = one_wide_channel
    with pytest.raises(ConversionError, match="needs representative_data"):
        tfc.convert(model, "int8", int16_layers=["wide"])


def test_a_graph_tf_cannot_quantize_in_16_bits_is_refused_with_the_way_out(rng):
    inputs = keras.Input((8,))
    hidden = keras.layers.PReLU(name="prelu")(keras.layers.Dense(8, name="dense")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    x = rng.normal(size=(32, 8)).astype("float32")
    with pytest.raises(ConversionError, match="cannot quantize this graph in int16x8.*PRELU"):
        tfc.convert(model, "int8", x, check=False, int16_layers=["dense"])
