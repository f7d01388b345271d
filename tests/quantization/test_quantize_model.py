"""quantize_model on real models: Keras QAT vs its int8 TFLite flatbuffer, save/load, errors."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.outputs import inference
from tfcompress.converter import run_tflite
from tfcompress.core.graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.models import compile_classifier
from tfcompress.quantization import (
    ActivationQuantizer,
    QuantizeConfig,
    QuantizeWrapper,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)


@pytest.fixture(scope="session")
def digits_qat(digits: Split, trained_digits_cnn: keras.Model) -> keras.Model:
    keras.utils.set_random_seed(0)
    qat = compile_classifier(
        quantize_model(clone_with_weights(trained_digits_cnn)), learning_rate=1e-3
    )
    qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    return qat


def test_digits_qat_converts_to_full_int8_matching_keras(
    digits: Split, trained_digits_cnn: keras.Model, digits_qat: keras.Model
) -> None:
    flatbuffer = tfc.convert(digits_qat, mode="int8")
    assert tfc.inspect(flatbuffer).float_ops == []
    float_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test) >= float_accuracy - 0.003
    keras_top1 = inference(digits_qat, digits.x_test).argmax(axis=1)
    tflite_top1 = run_tflite(flatbuffer, digits.x_test).argmax(axis=1)
    assert np.mean(keras_top1 == tflite_top1) >= 0.99


def test_batchnorm_is_folded_and_untrained_qat_tracks_float(
    digits: Split, trained_digits_cnn: keras.Model
) -> None:
    qat = quantize_model(trained_digits_cnn)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in qat.layers)
    assert any(w.batchnorm is not None for w in qat.layers if isinstance(w, QuantizeWrapper))
    # Calibrate the activation ranges once, then quantized and float predictions agree.
    qat(digits.x_train[:256], training=True)
    float_top1 = inference(trained_digits_cnn, digits.x_test).argmax(axis=1)
    qat_top1 = inference(qat, digits.x_test).argmax(axis=1)
    assert np.mean(float_top1 == qat_top1) >= 0.95


def test_original_model_is_not_modified(digits: Split, trained_digits_cnn: keras.Model) -> None:
    before = [w.copy() for w in trained_digits_cnn.get_weights()]
    qat = compile_classifier(quantize_model(trained_digits_cnn))
    qat.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, batch_size=64, verbose=0)
    after = trained_digits_cnn.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_keras_round_trip_predicts_identically_and_resumes_with_its_ranges(
    tmp_path, digits: Split, digits_qat: keras.Model
) -> None:
    path = tmp_path / "qat.keras"
    digits_qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        inference(loaded, digits.x_test), inference(digits_qat, digits.x_test)
    )
    ranges = [
        layer.get_weights() for layer in loaded.layers if isinstance(layer, ActivationQuantizer)
    ]
    saved = [
        layer.get_weights() for layer in digits_qat.layers if isinstance(layer, ActivationQuantizer)
    ]
    assert ranges and all(
        np.array_equal(a, b)
        for r, s in zip(ranges, saved, strict=True)
        for a, b in zip(r, s, strict=True)
    )
    compile_classifier(loaded, learning_rate=1e-4)
    history = loaded.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _ops_model() -> keras.Model:
    """Nested Sequential, Python operators, slicing, hard-swish (MobileNetV3), AvgPool (DenseNet)."""
    block = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            keras.layers.DepthwiseConv2D(3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(6.0),
        ],
        name="block",
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = x * keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    x = block(x)
    x = keras.layers.AveragePooling2D(2, strides=1, padding="same")(x)
    x = keras.layers.Concatenate()([x[..., :4], x[..., 4:]])
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_ops_slicing_and_nested_models_convert_without_float_ops(rng) -> None:
    keras.utils.set_random_seed(0)
    qat = quantize_model(_ops_model())
    x = rng.uniform(-1, 1, (32, 8, 8, 3)).astype("float32")
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(32) % 10, epochs=1, batch_size=16, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    assert tfc.inspect(flatbuffer).float_ops == []
    np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(qat, x), atol=0.02)


def _convnext_like_model() -> keras.Model:
    """ConvNeXt's pieces: ImageNet Normalization on [0, 1] inputs, LayerNorm, GELU, LayerScale."""
    from keras.src.applications.convnext import LayerScale

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(
        mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
        variance=[(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2],
    )(inputs)
    x = keras.layers.Conv2D(16, 4, strides=4)(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6)(y)
    y = keras.layers.Dense(32, activation="gelu")(y)
    y = keras.layers.Dense(16)(y)
    x = x + LayerScale(0.1, 16)(y)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_layernorm_and_normalization_convert_without_float_ops(rng, tmp_path) -> None:
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LayerScale is known: no "stays in float" warning
        qat = quantize_model(_convnext_like_model())
    x = rng.uniform(0, 1, (64, 16, 16, 3)).astype("float32")
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(64) % 10, epochs=2, batch_size=16, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    # Keras's own LayerNormalization lowers to a float NEG, and Normalization of an input whose
    # range excludes the ImageNet means to a float requantize: both are rewritten.
    assert tfc.inspect(flatbuffer).float_ops == []
    np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(qat, x), atol=0.03)
    qat.save(tmp_path / "convnext_like.keras")
    loaded = keras.saving.load_model(tmp_path / "convnext_like.keras")
    np.testing.assert_array_equal(inference(loaded, x), inference(qat, x))


def _separable_and_transpose_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.SeparableConv2D(8, 3, 2, "same", depth_multiplier=2, name="sep2")(x)
    x = keras.layers.Conv2DTranspose(6, 3, 2, "same", use_bias=False, name="up")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def test_separable_and_transposed_convolutions_train_quantized(rng) -> None:
    keras.utils.set_random_seed(0)
    model = _separable_and_transpose_model()
    qat = quantize_model(model)
    wrapped = sorted(w.layer.name for w in qat.layers if isinstance(w, QuantizeWrapper))
    assert wrapped == [
        "head",
        "sep1_depthwise",
        "sep1_pointwise",
        "sep2_depthwise",
        "sep2_pointwise",
        "up",
    ]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in qat.layers)
    x = rng.uniform(-1, 1, (64, 8, 8, 3)).astype("float32")
    qat(x, training=True)  # ranges only: the quantized model still computes the float one
    np.testing.assert_allclose(inference(qat, x), inference(model, x), atol=0.03)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(64) % 10, epochs=1, batch_size=16, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    assert tfc.inspect(flatbuffer).float_ops == []
    np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(qat, x), atol=0.02)


def _text_transformer() -> keras.Model:
    tokens = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(50, 16, name="embed")(tokens)
    y = keras.layers.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = keras.layers.LayerNormalization()(x + y)
    y = keras.layers.Dense(32, activation="gelu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(16)(y))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3)(x))


def test_embedding_and_attention_train_quantized_and_convert(rng, tmp_path) -> None:
    keras.utils.set_random_seed(0)
    qat = quantize_model(_text_transformer())
    assert isinstance(qat.get_layer("quant_embed"), QuantizeWrapper)
    assert isinstance(qat.get_layer("attention"), tfc.quantization.QuantizedMultiHeadAttention)
    # token ids are integers: nothing quantizes them
    assert not isinstance(qat.layers[1], ActivationQuantizer)
    x = rng.integers(0, 50, (128, 12)).astype("int32")
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, np.arange(128) % 3, epochs=2, batch_size=32, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    assert tfc.inspect(flatbuffer).float_ops == []
    keras_out = inference(qat, x)
    error = np.abs(run_tflite(flatbuffer, x) - keras_out)
    assert error.mean() <= 0.02 * np.abs(keras_out).max()
    qat.save(tmp_path / "transformer.keras")
    loaded = keras.saving.load_model(tmp_path / "transformer.keras")
    np.testing.assert_array_equal(inference(loaded, x), keras_out)


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class Doubler(keras.layers.Layer):
    def call(self, inputs):  # noqa: ANN001, ANN201
        return 2.0 * inputs


def _custom_model() -> keras.Model:
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8)(inputs)
    x = Doubler(name="my_doubler")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_unknown_layer_stays_float_with_a_warning_and_converts(rng) -> None:
    with pytest.warns(UserWarning, match="my_doubler"):
        qat = quantize_model(_custom_model())
    assert any(isinstance(layer, Doubler) for layer in qat.layers)
    x = rng.normal(size=(32, 8)).astype("float32")
    qat(x, training=True)
    flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
    np.testing.assert_allclose(run_tflite(flatbuffer, x), inference(qat, x), atol=0.1)


def test_strict_mode_names_the_unknown_layer_and_how_to_annotate() -> None:
    with pytest.raises(ValueError, match="my_doubler.*quantize_annotate_layer"):
        quantize_model(_custom_model(), strict=True)


def test_annotated_layer_is_accepted_in_strict_mode() -> None:
    model = _custom_model()
    quantize_annotate_layer(model.get_layer("my_doubler"), QuantizeConfig(role="output"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qat = quantize_apply(model, strict=True)
    assert any(isinstance(layer, Doubler) for layer in qat.layers)


def test_annotation_keeps_a_kernel_layer_in_float() -> None:
    model = _custom_model()
    quantize_annotate_layer(model.layers[1], QuantizeConfig(role="float"))
    quantize_annotate_layer(model.get_layer("my_doubler"), QuantizeConfig(role="output"))
    kinds = [type(layer) for layer in quantize_apply(quantize_annotate_model(model)).layers]
    assert keras.layers.Dense in kinds and QuantizeWrapper in kinds


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):  # noqa: ANN001, ANN201
        return self.dense(inputs)


def test_subclassed_model_is_quantized_as_the_graph_of_its_layers() -> None:
    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    kinds = [type(layer).__name__ for layer in quantize_model(model).layers]
    assert kinds == ["InputLayer", "ActivationQuantizer", "QuantizeWrapper", "ActivationQuantizer"]


def test_unbuilt_model_error_says_to_give_an_input_shape() -> None:
    with pytest.raises(ValueError, match="not built.*input shape"):
        quantize_model(keras.Sequential([keras.layers.Dense(2)]))


def test_already_quantized_model_is_rejected(trained_digits_cnn: keras.Model) -> None:
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(quantize_model(trained_digits_cnn))


def test_non_model_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="keras.Model"):
        quantize_model(keras.layers.Dense(2))


def test_public_name_is_exported() -> None:
    assert tfc.quantize_model is quantize_model
