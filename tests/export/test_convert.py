"""convert(): every mode, every kind of source, checked against the Keras model on LiteRT."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.data import calibration_sample


@pytest.fixture(scope="session")
def keras_logits(trained_digits_cnn, digits):
    return trained_digits_cnn.predict(digits.x_test, verbose=0)


@pytest.fixture(scope="session")
def calibration(digits):
    return calibration_sample(digits.x_train, 100)


def _top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


@pytest.mark.parametrize("mode", ["float32", "float16"])
def test_float_modes_agree_with_keras_top1(mode, trained_digits_cnn, digits, keras_logits):
    flatbuffer = tfc.convert(trained_digits_cnn, mode)
    tflite_logits = run_tflite(flatbuffer, digits.x_test)
    assert _top1_agreement(tflite_logits, keras_logits) >= 0.995
    np.testing.assert_allclose(
        tflite_logits, keras_logits, atol=0.05 if mode == "float16" else 1e-3
    )


def test_dynamic_mode_stores_int8_weights_and_float_io(trained_digits_cnn, digits, keras_logits):
    flatbuffer = tfc.convert(trained_digits_cnn, "dynamic")
    report = tfc.inspect(flatbuffer)
    assert report.input_dtypes == ["FLOAT32"]
    weights = [
        report.tensors[op.inputs[1]]
        for op in report.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]
    # the converter leaves tensors under 1,024 values in float: they are not worth quantizing
    large = [t for t in weights if np.prod(t.shape) >= 1024]
    assert large and all(t.dtype == "INT8" for t in large)
    assert _top1_agreement(run_tflite(flatbuffer, digits.x_test), keras_logits) >= 0.98


def test_int8_mode_is_full_integer_and_keeps_accuracy(trained_digits_cnn, digits, calibration):
    keras_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    flatbuffer = tfc.convert(trained_digits_cnn, "int8", calibration)
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    assert report.input_dtypes == ["INT8"] and report.output_dtypes == ["INT8"]
    accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    assert accuracy >= keras_accuracy - 0.02


def test_int16x8_mode_has_int16_activations_and_int8_weights(
    trained_digits_cnn, digits, calibration, keras_logits
):
    flatbuffer = tfc.convert(trained_digits_cnn, "int16x8", calibration)
    report = tfc.inspect(flatbuffer)
    assert report.input_dtypes == ["INT16"] and report.float_ops == []
    conv = next(op for op in report.ops if op.name == "CONV_2D")
    assert report.tensors[conv.inputs[1]].dtype == "INT8"
    assert report.tensors[conv.outputs[0]].dtype == "INT16"
    assert _top1_agreement(run_tflite(flatbuffer, digits.x_test), keras_logits) >= 0.98


def test_edgetpu_mode_is_uint8_batch1_with_per_tensor_dense(
    trained_digits_cnn, digits, calibration
):
    flatbuffer = tfc.convert(trained_digits_cnn, "edgetpu", calibration)
    report = tfc.inspect(flatbuffer)
    assert report.input_dtypes == ["UINT8"] and report.output_dtypes == ["UINT8"]
    assert report.tensors[report.inputs[0]].shape_signature == [1, 8, 8, 1]
    dense_weights = [
        report.tensors[op.inputs[1]] for op in report.ops if op.name == "FULLY_CONNECTED"
    ]
    assert dense_weights and not any(t.quantization.per_channel for t in dense_weights)
    assert tfc.edgetpu_report(report).fully_mapped
    assert tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test) >= 0.9


def test_int8_file_is_much_smaller_than_float32(trained_digits_cnn, calibration):
    float_size = len(tfc.convert(trained_digits_cnn, "float32"))
    int8_size = len(tfc.convert(trained_digits_cnn, "int8", calibration))
    assert int8_size < 0.45 * float_size


@pytest.mark.parametrize(
    "form", ["dataset_pairs", "dataset_batched", "generator", "list_of_arrays"]
)
def test_representative_data_accepts_datasets_and_generators(form, trained_digits_cnn, calibration):
    if form == "dataset_pairs":
        data = tf.data.Dataset.from_tensor_slices((calibration, np.zeros(len(calibration))))
    elif form == "dataset_batched":
        data = tf.data.Dataset.from_tensor_slices(calibration).batch(16)
    elif form == "generator":
        data = lambda: (row[None] for row in calibration)  # noqa: E731
    else:
        data = [calibration]
    report = tfc.inspect(tfc.convert(trained_digits_cnn, "int8", data, num_samples=32))
    assert report.float_ops == []


def test_converts_keras_file_and_saved_model_dir(
    trained_digits_cnn, digits, tmp_path, keras_logits
):
    keras_path = tmp_path / "model.keras"
    trained_digits_cnn.save(keras_path)
    saved_model = tmp_path / "saved_model"
    trained_digits_cnn.export(saved_model, verbose=False)
    for source in (keras_path, str(saved_model)):
        logits = run_tflite(tfc.convert(source, "float32"), digits.x_test)
        assert _top1_agreement(logits, keras_logits) >= 0.995


def test_converts_legacy_tf_keras_model(digits):
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential(
        [tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(10)]
    )
    expected = model.predict(digits.x_test[:20], verbose=0)
    for mode, tolerance in (("float32", 1e-4), ("int8", 0.2)):
        data = digits.x_test[:20] if mode == "int8" else None  # calibrated on what it runs
        flatbuffer = tfc.convert(model, mode, data)
        np.testing.assert_allclose(
            run_tflite(flatbuffer, digits.x_test[:20]), expected, atol=tolerance
        )


def test_subclassed_model_converts_with_an_input_signature(digits):
    import keras

    class TinyNet(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(self.flatten(x))

    model = TinyNet()
    with pytest.raises(tfc.ConversionError, match="input_signature"):
        tfc.convert(model, "float32")  # never called: no input shape
    expected = model(digits.x_test[:5]).numpy()
    spec = [tf.TensorSpec((None, 8, 8, 1), tf.float32)]
    flatbuffer = tfc.convert(model, "float32", input_signature=spec)
    np.testing.assert_allclose(run_tflite(flatbuffer, digits.x_test[:5]), expected, atol=1e-4)
    # called once, the shape Keras recorded is enough
    flatbuffer = tfc.convert(model, "float32")
    np.testing.assert_allclose(run_tflite(flatbuffer, digits.x_test[:5]), expected, atol=1e-4)


def test_converted_file_stores_each_repeated_vector_once_and_computes_the_same(rng):
    """The unrolled steps of an LSTM share one bias and its per-channel quantization: stored once."""
    import flatbuffers
    import keras

    from tfcompress.core import compat

    inputs = keras.Input((8, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LSTM(16)(inputs)))
    x = rng.uniform(0, 1, size=(32, 8, 4)).astype(np.float32)
    flatbuffer = tfc.convert(model, "int8", x)
    # the converter's own layout: every tensor with its own copy of each vector
    unshared = flatbuffers.Builder(0)
    unshared.Finish(
        compat.tflite_schema().ModelT.InitFromPackedBuf(flatbuffer, 0).Pack(unshared),
        file_identifier=b"TFL3",
    )
    assert len(flatbuffer) < 0.8 * len(unshared.Output())
    np.testing.assert_array_equal(
        run_tflite(flatbuffer, x), run_tflite(bytes(unshared.Output()), x)
    )
    # tensor data still starts on 16-byte boundaries, as the converter writes it
    root = compat.tflite_schema().Model.GetRootAs(flatbuffer, 0)
    base = np.frombuffer(flatbuffer, np.uint8).__array_interface__["data"][0]
    starts = [
        root.Buffers(i).DataAsNumpy().__array_interface__["data"][0] - base
        for i in range(root.BuffersLength())
        if root.Buffers(i).DataLength() >= 16
    ]
    assert starts and all(start % 16 == 0 for start in starts)


def _token_model(vocabulary: int, dtype: str = "float32"):
    import keras

    inputs = keras.Input((6,), dtype=dtype)  # float32 is keras.Input's default
    table = keras.layers.Embedding(
        vocabulary, 4, embeddings_initializer=keras.initializers.RandomUniform(-1, 1, seed=0)
    )
    flat = keras.layers.Flatten()(table(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(flat))


def test_float_token_ids_reach_the_embedding_exactly_in_an_int8_file(rng):
    """Quantized like an activation, ids of a 300-word vocabulary moved by up to 0.6 of a row."""
    from tests.outputs import inference

    model = _token_model(300)
    ids = rng.integers(0, 300, size=(64, 6)).astype(np.float32)
    flatbuffer = tfc.convert(model, "int8", ids)
    report = tfc.inspect(flatbuffer)
    assert report.tensors[report.inputs[0]].dtype == "INT32"
    np.testing.assert_allclose(run_tflite(flatbuffer, ids), inference(model, ids), atol=0.05)
    # a float file keeps the declared input: float ids are exact there
    float_file = tfc.inspect(tfc.convert(model, "float32"))
    assert float_file.tensors[float_file.inputs[0]].dtype == "FLOAT32"


def test_token_ids_that_are_not_whole_numbers_are_refused_by_name(rng):
    ids = rng.integers(0, 300, size=(8, 6)).astype(np.float32) + 0.5
    with pytest.raises(tfc.converter.ConversionError, match="input 0.*not whole numbers.*int32"):
        tfc.convert(_token_model(300), "int8", ids)


def test_embedding_in_int16x8_says_to_use_int8(rng):
    ids = rng.integers(0, 50, size=(16, 6)).astype(np.int32)
    with pytest.raises(tfc.converter.ConversionError, match="int16x8.*token ids.*mode='int8'"):
        tfc.convert(_token_model(50, "int32"), "int16x8", ids)


def test_only_inputs_that_feed_nothing_but_embeddings_are_traced_as_int32():
    import keras

    from tfcompress.tflite.source import load_source, with_token_ids_as_int32

    def dtypes(model):
        return [spec.dtype for spec in with_token_ids_as_int32(load_source(model)).input_specs]

    sequential = keras.Sequential(
        [keras.Input((6,)), keras.layers.Embedding(9, 2), keras.layers.Flatten()]
    )
    assert dtypes(sequential) == [tf.int32]
    ids, other, features = keras.Input((6,)), keras.Input((6,)), keras.Input((6,))
    shared = keras.layers.Embedding(9, 2)
    both = keras.Model([ids, other, features], [shared(ids), shared(other), features * 2.0])
    assert dtypes(both) == [tf.int32, tf.int32, tf.float32]
    # read by a Dense too: the values are not only ids, so the input stays float
    mixed = keras.Model(ids, [keras.layers.Embedding(9, 2)(ids), keras.layers.Dense(2)(ids)])
    assert dtypes(mixed) == [tf.float32]


def test_the_float_ops_warning_says_when_an_output_is_float(trained_digits_cnn):
    from tfcompress.export import _warn_if_float_ops_left

    float_file = tfc.convert(trained_digits_cnn, "float32")  # every op and output float
    with pytest.warns(UserWarning, match=r"output .* is float32, not int8"):
        _warn_if_float_ops_left(float_file, "digits_cnn", synthetic=False)


def test_the_float_ops_warning_points_at_the_callers_line():
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.ops.sin(keras.layers.Dense(4)(inputs)))
    data = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    with pytest.warns(UserWarning, match="still computes") as caught:
        tfc.convert(model, "int8", data)
    assert caught[0].filename == __file__
