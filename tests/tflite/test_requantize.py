"""The float requantize pair TF's converter writes before an elementwise first layer becomes integer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.tflite.requantize import fold_float_requantize

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("requantize")


@pytest.fixture(scope="session")
def qat_with_rescaling_first():
    """A trained QAT model whose first layer is a Rescaling (MUL, ADD on the model input)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=256)
    x = (rng.normal(size=(4, 6, 6, 2))[labels] + 0.3 * rng.normal(size=(256, 6, 6, 2))).astype(
        "float32"
    )
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Rescaling(0.5, offset=-0.25)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(hidden)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, labels, epochs=3, verbose=0)
    qat = tfc.quantize_model(model)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, labels, epochs=1, verbose=0)
    return qat, x


def _convert_with_tf_alone(model: keras.Model, data: np.ndarray) -> bytes:
    """What TF's converter itself writes for the QAT model, without tfcompress's fold."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in data[:32])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def test_tf_converter_leaves_a_float_requantize_that_the_fold_makes_integer(
    qat_with_rescaling_first,
):
    qat, x = qat_with_rescaling_first
    raw = _convert_with_tf_alone(qat, x)
    assert {"DEQUANTIZE", "QUANTIZE"} <= set(tfc.inspect(raw).float_ops)  # the converter's pair
    folded, rewritten = fold_float_requantize(raw)
    assert rewritten == 1
    report = tfc.inspect(folded)
    assert report.float_ops == []
    step = report.tensors[report.outputs[0]].quantization.scale[0]
    before, after = run_tflite(raw, x[:64]), run_tflite(folded, x[:64])
    assert np.abs(after - before).max() <= 2 * step  # one rounding step, not a new function


def test_convert_writes_the_elementwise_first_layer_in_integer_only(qat_with_rescaling_first):
    qat, x = qat_with_rescaling_first
    flatbuffer = tfc.convert(qat, "int8", x[:64])
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    expected = qat.predict(x, verbose=0)
    got = run_tflite(flatbuffer, x)
    assert (expected.argmax(-1) == got.argmax(-1)).mean() >= 0.99


def test_a_file_without_a_requantize_pair_is_returned_unchanged():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    flatbuffer = tfc.convert(model, "int8", np.random.default_rng(0).random((16, 4), "float32"))
    folded, rewritten = fold_float_requantize(flatbuffer)
    assert rewritten == 0 and folded == flatbuffer


def _output_also_feeding_a_concatenation() -> keras.Model:
    """A sigmoid output that also feeds a Concatenate with a wide-ranged branch (basic-pitch's
    note head has this shape)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    note = keras.layers.Dense(8, activation="sigmoid", name="note")(inputs)
    wide = keras.layers.Rescaling(20.0)(keras.layers.Dense(8)(inputs))
    joined = keras.layers.Concatenate()([note, wide])
    onset = keras.layers.Dense(4, name="onset")(joined)
    return keras.Model(inputs, {"note": note, "onset": onset})


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_an_output_that_feeds_a_concatenation_keeps_its_own_scale(mode):
    model = _output_also_feeding_a_concatenation()
    x = np.random.default_rng(0).normal(size=(400, 16)).astype("float32")
    converted = tfc.convert(model, mode, x, num_samples=200)
    report = tfc.inspect(converted)
    by_name = {report.tensors[i].name: report.tensors[i] for i in report.outputs}
    scale = 1 / 256 if mode == "int8" else 1 / 32768  # the sigmoid's own output scale
    assert by_name["note"].quantization.scale[0] == pytest.approx(scale, rel=1e-6)
    # the requantized copy still feeds the concatenation, at the concatenation's scale
    (concat,) = [op for op in report.ops if op.name == "CONCATENATION"]
    assert report.tensors[concat.inputs[0]].quantization.scale[0] > 10 * scale
    fidelity = {output.name: output for output in converted.fidelity.outputs}
    assert fidelity["note"].sqnr_db > 40 and converted.fidelity.passed
    expected = keras.ops.convert_to_numpy(model(x[200:], training=False)["note"])
    got = run_tflite(converted, x[200:])[list(by_name).index("note")]  # in the file's order
    assert np.abs(got - expected).max() < 0.02  # at the concatenation scale: up to 0.3


def test_outputs_without_a_requantize_are_left_as_they_are():
    from tfcompress.tflite.requantize import outputs_before_requantize

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    flat = tfc.convert(model, "int8", np.random.rand(16, 4).astype("float32"), check=False)
    assert outputs_before_requantize(flat) == (flat, 0)
