"""tfmot's QAT guides with `tfmot.quantization.keras` -> `tfc.quantization` and nothing else.

Guides: g3doc/guide/quantization/training_example.ipynb and training_comprehensive_guide.ipynb
(tensorflow/model-optimization). MNIST is replaced by sklearn digits, epochs and sizes are tiny,
`tf_keras` becomes Keras 3 (`import keras`), the guides' `TFLiteConverter` + `Optimize.DEFAULT`
becomes `tfc.convert(model, "int8")`, and the comprehensive guide's `.h5` / `.tf` files become
`.keras` / `.weights.h5` (what Keras 3 saves). Each block names its guide section.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite

tfmot = tfc  # `import tensorflow_model_optimization as tfmot`: .quantization.keras -> .quantization
pytestmark = pytest.mark.filterwarnings("ignore:.*input_shape.*:UserWarning")


def _top1_agreement(model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> float:
    keras_top1 = np.argmax(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(keras_top1 == np.argmax(run_tflite(flatbuffer, x), axis=-1)))


def _int8_ops(flatbuffer: bytes) -> list[str]:
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == [], report.float_ops
    return [op.name for op in report.ops]


# -------------------------------------------------------------------- training_example.ipynb
@pytest.fixture(scope="module")
def example(digits):
    keras.utils.set_random_seed(0)
    train_images, train_labels = digits.x_train[..., 0], digits.y_train
    test_images, test_labels = digits.x_test[..., 0], digits.y_test

    # "Train a model for MNIST without quantization aware training"
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8)),
            keras.layers.Reshape(target_shape=(8, 8, 1)),
            keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_images, train_labels, epochs=8, validation_split=0.1, verbose=0)

    # "Clone and fine-tune pre-trained model with quantization aware training"
    quantize_model = tfmot.quantization.quantize_model
    q_aware_model = quantize_model(model)
    q_aware_model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_images_subset = train_images[0:1000]
    train_labels_subset = train_labels[0:1000]
    q_aware_model.fit(
        train_images_subset,
        train_labels_subset,
        batch_size=500,
        epochs=1,
        validation_split=0.1,
        verbose=0,
    )
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, q_aware_model_accuracy = q_aware_model.evaluate(test_images, test_labels, verbose=0)

    # "Create quantized model for TFLite backend"
    quantized_tflite_model = tfc.convert(q_aware_model, "int8")
    # "See 4x smaller model from quantization"
    float_tflite_model = tfc.convert(model, "float32")
    return {
        "baseline": baseline_model_accuracy,
        "qat": q_aware_model_accuracy,
        "q_aware_model": q_aware_model,
        "quant_file": quantized_tflite_model,
        "float_file": float_tflite_model,
        "test": (test_images, test_labels),
    }


def test_example_qat_accuracy_stays_close_to_baseline(example):
    assert example["baseline"] > 0.8
    assert example["qat"] >= example["baseline"] - 0.05


def test_example_accuracy_persists_from_keras_to_litert(example):
    test_images, test_labels = example["test"]
    # "See persistence of accuracy from TF to TFLite"
    test_accuracy = tfc.evaluate_tflite(example["quant_file"], test_images, test_labels)
    assert test_accuracy >= example["qat"] - 0.03
    agreement = _top1_agreement(example["q_aware_model"], example["quant_file"], test_images)
    assert agreement >= 0.95


def test_example_quantized_file_is_int8_and_smaller(example):
    assert set(_int8_ops(example["quant_file"])) >= {"CONV_2D", "FULLY_CONNECTED"}
    assert len(example["quant_file"]) < len(example["float_file"])


# ---------------------------------------------------------- training_comprehensive_guide.ipynb
# "Setup"
input_shape = [20]


def setup_model() -> keras.Model:
    return keras.Sequential(
        [keras.layers.Dense(20, input_shape=input_shape), keras.layers.Flatten()]
    )


@pytest.fixture(scope="module")
def guide_data():
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((64, 20)).astype(np.float32)
    y_train = keras.utils.to_categorical(rng.integers(0, 20, 64), num_classes=20)
    return x_train, y_train


@pytest.fixture(scope="module")
def pretrained_weights(guide_data, tmp_path_factory):
    x_train, y_train = guide_data
    keras.utils.set_random_seed(0)
    model = setup_model()
    model.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam")
    model.fit(x_train, y_train, verbose=0)
    path = str(tmp_path_factory.mktemp("guide") / "pretrained.weights.h5")
    model.save_weights(path)
    return path


def setup_pretrained_model(pretrained_weights: str) -> keras.Model:
    model = setup_model()
    model.load_weights(pretrained_weights)
    return model


def test_guide_quantize_whole_model(pretrained_weights):
    # "Quantize whole model"
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    quant_aware_model = tfmot.quantization.quantize_model(base_model)
    wrappers = [
        layer
        for layer in quant_aware_model.layers
        if isinstance(layer, tfc.quantization.QuantizeWrapper)
    ]
    assert [type(w.layer).__name__ for w in wrappers] == ["Dense"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wrappers[0].layer.kernel),
        keras.ops.convert_to_numpy(base_model.layers[0].kernel),
    )


def test_guide_quantize_some_layers_leaves_the_others_float(pretrained_weights, guide_data):
    # "Quantize some layers": the guide's clone_function, choosing the layer by its name as the
    # guide suggests ("set its name property and look for that name in the clone_function")
    base_model = keras.Sequential(
        [
            keras.layers.Dense(20, input_shape=input_shape, name="keep_float"),
            keras.layers.Dense(20, name="quantize_me"),
            keras.layers.Flatten(),
        ]
    )

    def apply_quantization_to_dense(layer):
        if isinstance(layer, keras.layers.Dense) and layer.name == "quantize_me":
            return tfmot.quantization.quantize_annotate_layer(layer)
        return layer

    annotated_model = keras.models.clone_model(
        base_model, clone_function=apply_quantization_to_dense
    )
    quant_aware_model = tfmot.quantization.quantize_apply(annotated_model)
    by_name = {layer.name: layer for layer in quant_aware_model.layers}
    assert type(by_name["keep_float"]) is keras.layers.Dense  # no fake quant inside it
    wrappers = [
        layer
        for layer in quant_aware_model.layers
        if isinstance(layer, tfc.quantization.QuantizeWrapper)
    ]
    assert [w.layer.name for w in wrappers] == ["quantize_me"]
    # the int8 file: the annotated Dense uses its trained ranges, the float one is calibrated
    x_train, _ = guide_data
    flatbuffer = tfc.convert(quant_aware_model, "int8", representative_data=x_train)
    assert _int8_ops(flatbuffer).count("FULLY_CONNECTED") == 2


def test_guide_functional_and_sequential_annotation(guide_data):
    # "More readable but potentially lower model accuracy": Functional example
    i = keras.Input(shape=(20,))
    x = tfmot.quantization.quantize_annotate_layer(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    annotated_model = keras.Model(inputs=i, outputs=o)
    functional = tfmot.quantization.quantize_apply(annotated_model)
    # Sequential example
    annotated_model = keras.Sequential(
        [
            tfmot.quantization.quantize_annotate_layer(
                keras.layers.Dense(20, input_shape=input_shape)
            ),
            keras.layers.Flatten(),
        ]
    )
    sequential = tfmot.quantization.quantize_apply(annotated_model)
    for quant_aware_model in (functional, sequential):
        kinds = [type(layer).__name__ for layer in quant_aware_model.layers]
        assert kinds.count("QuantizeWrapper") == 1, kinds
        assert "Dense" not in kinds  # the only Dense was annotated


def test_guide_checkpoint_and_deserialize_in_quantize_scope(pretrained_weights, guide_data):
    # "Checkpoint and deserialize" (.keras instead of the guide's .h5)
    x_train, _ = guide_data
    base_model = setup_pretrained_model(pretrained_weights)
    quant_aware_model = tfmot.quantization.quantize_model(base_model)
    quant_aware_model(x_train, training=True)  # move the ranges off their initial values
    fd, keras_model_file = tempfile.mkstemp(".keras")
    os.close(fd)
    try:
        quant_aware_model.save(keras_model_file)
        with tfmot.quantization.quantize_scope():
            loaded_model = keras.models.load_model(keras_model_file)
    finally:
        os.remove(keras_model_file)
    np.testing.assert_array_equal(
        loaded_model.predict(x_train, verbose=0), quant_aware_model.predict(x_train, verbose=0)
    )


def test_guide_create_and_deploy_quantized_model(pretrained_weights, guide_data):
    # "Create and deploy quantized model"
    x_train, _ = guide_data
    base_model = setup_pretrained_model(pretrained_weights)
    quant_aware_model = tfmot.quantization.quantize_model(base_model)
    quant_aware_model(x_train, training=True)
    quantized_tflite_model = tfc.convert(quant_aware_model, "int8")
    assert _int8_ops(quantized_tflite_model) == ["FULLY_CONNECTED"]
    keras_out = quant_aware_model.predict(x_train, verbose=0)
    litert_out = run_tflite(quantized_tflite_model, x_train)
    step = (keras_out.max() - keras_out.min()) / 255
    assert np.max(np.abs(keras_out - litert_out)) <= 2 * step
    assert _top1_agreement(quant_aware_model, quantized_tflite_model, x_train) >= 0.95
