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
# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*input_shape.*:UserWarning"),
    pytest.mark.xdist_group("quantization-guides"),
]


def _top1_agreement(model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> float:
    keras_top1 = np.argmax(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(keras_top1 == np.argmax(run_tflite(flatbuffer, x), axis=-1)))


def _int8_ops(flatbuffer: bytes) -> list[str]:
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == [], report.float_ops
    return [op.name for op in report.ops]


# -------------------------------------------------------------------- training_example.ipynb
@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def guide_data():
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((64, 20)).astype(np.float32)
    y_train = keras.utils.to_categorical(rng.integers(0, 20, 64), num_classes=20)
    return x_train, y_train


@pytest.fixture(scope="session")
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


# "Experiment with quantization" -> "Setup: DefaultDenseQuantizeConfig"
LastValueQuantizer = tfmot.quantization.quantizers.LastValueQuantizer
MovingAverageQuantizer = tfmot.quantization.quantizers.MovingAverageQuantizer


class DefaultDenseQuantizeConfig(tfmot.quantization.QuantizeConfig):
    # Configure how to quantize weights.
    def get_weights_and_quantizers(self, layer):
        return [
            (
                layer.kernel,
                LastValueQuantizer(num_bits=8, symmetric=True, narrow_range=False, per_axis=False),
            )
        ]

    # Configure how to quantize activations.
    def get_activations_and_quantizers(self, layer):
        return [
            (
                layer.activation,
                MovingAverageQuantizer(
                    num_bits=8, symmetric=False, narrow_range=False, per_axis=False
                ),
            )
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        # Add this line for each item returned in `get_weights_and_quantizers`
        # , in the same order
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        # Add this line for each item returned in `get_activations_and_quantizers`
        # , in the same order.
        layer.activation = quantize_activations[0]

    # Configure how to quantize outputs (may be equivalent to activations).
    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


quantize_annotate_layer = tfmot.quantization.quantize_annotate_layer
quantize_annotate_model = tfmot.quantization.quantize_annotate_model
quantize_scope = tfmot.quantization.quantize_scope


class CustomLayer(keras.layers.Dense):
    pass


@pytest.fixture(scope="session")
def custom_layer_model(guide_data):
    # "Quantize custom Keras layer"
    model = quantize_annotate_model(
        keras.Sequential(
            [
                quantize_annotate_layer(
                    CustomLayer(20, input_shape=(20,)), DefaultDenseQuantizeConfig()
                ),
                keras.layers.Flatten(),
            ]
        )
    )
    with quantize_scope(
        {"DefaultDenseQuantizeConfig": DefaultDenseQuantizeConfig, "CustomLayer": CustomLayer}
    ):
        # Use `quantize_apply` to actually make the model quantization aware.
        quant_aware_model = tfmot.quantization.quantize_apply(model)
    x_train, y_train = guide_data
    quant_aware_model.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam")
    quant_aware_model.fit(x_train, y_train, epochs=2, verbose=0)
    return quant_aware_model


def _custom_wrapper(model: keras.Model) -> tfc.quantization.CustomQuantizeWrapper:
    (wrapper,) = [
        layer for layer in model.layers if isinstance(layer, tfc.quantization.CustomQuantizeWrapper)
    ]
    return wrapper


def test_guide_custom_layer_runs_the_config_quantizers(custom_layer_model):
    wrapper = _custom_wrapper(custom_layer_model)
    assert type(wrapper.layer) is CustomLayer
    ranges = {w.path.rsplit("/", 1)[-1]: float(w.numpy()) for w in wrapper.non_trainable_weights}
    # LastValueQuantizer: the kernel's own symmetric range (as of the last training step, one
    # small Adam step before the kernel now); MovingAverageQuantizer: a trained activation range
    bound = float(np.max(np.abs(keras.ops.convert_to_numpy(wrapper.layer.kernel))))
    assert ranges["kernel_max"] == pytest.approx(bound, rel=0.02)
    assert ranges["kernel_min"] == -ranges["kernel_max"]
    assert ranges["activation_0_min"] != -6.0 and ranges["activation_0_max"] != 6.0


def test_guide_custom_config_model_saves_and_converts(custom_layer_model, guide_data):
    x_train, _ = guide_data
    fd, path = tempfile.mkstemp(".keras")
    os.close(fd)
    try:
        custom_layer_model.save(path)
        with quantize_scope(
            {"DefaultDenseQuantizeConfig": DefaultDenseQuantizeConfig, "CustomLayer": CustomLayer}
        ):
            loaded_model = keras.models.load_model(path)
    finally:
        os.remove(path)
    expected = custom_layer_model.predict(x_train, verbose=0)
    np.testing.assert_array_equal(loaded_model.predict(x_train, verbose=0), expected)
    # the config's ranges are what the int8 file uses: no calibration data needed
    flatbuffer = tfc.convert(custom_layer_model, "int8")
    assert _int8_ops(flatbuffer) == ["FULLY_CONNECTED"]
    wrapper = _custom_wrapper(custom_layer_model)
    ranges = {w.path.rsplit("/", 1)[-1]: float(w.numpy()) for w in wrapper.non_trainable_weights}
    step = (ranges["activation_0_max"] - ranges["activation_0_min"]) / 255
    assert np.max(np.abs(run_tflite(flatbuffer, x_train) - expected)) <= 2 * step


def _apply(config: tfmot.quantization.QuantizeConfig, name: str) -> keras.Model:
    keras.utils.set_random_seed(0)  # the initial weights (see the 4-bit test below)
    # "Applying the configuration is the same across the "Experiment with quantization" use cases"
    model = quantize_annotate_model(
        keras.Sequential(
            [
                # Pass in modified `QuantizeConfig` to modify this Dense layer.
                quantize_annotate_layer(keras.layers.Dense(20, input_shape=(20,)), config),
                keras.layers.Flatten(),
            ]
        )
    )
    with quantize_scope({name: type(config)}):
        # Use `quantize_apply` to actually make the model quantization aware.
        return tfmot.quantization.quantize_apply(model)


def test_guide_modify_quantization_parameters_4_bit_kernel(guide_data):
    # "Modify quantization parameters"
    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):
        # Configure weights to quantize with 4-bit instead of 8-bits.
        def get_weights_and_quantizers(self, layer):
            return [
                (
                    layer.kernel,
                    LastValueQuantizer(
                        num_bits=4, symmetric=True, narrow_range=False, per_axis=False
                    ),
                )
            ]

    quant_aware_model = _apply(ModifiedDenseQuantizeConfig(), "ModifiedDenseQuantizeConfig")
    x_train, _ = guide_data
    quant_aware_model(x_train, training=True)
    flatbuffer = tfc.convert(quant_aware_model, "int8")
    report = tfc.inspect(flatbuffer)
    (dense,) = [op for op in report.ops if op.name == "FULLY_CONNECTED"]
    assert len(np.unique(report.tensors[dense.inputs[1]].buffer)) <= 16  # 4-bit levels


def test_guide_modify_parts_of_layer_weights_only(guide_data):
    # "Modify parts of layer to quantize": skip quantizing the activation
    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):
        def get_activations_and_quantizers(self, layer):
            # Skip quantizing activations.
            return []

        def set_quantize_activations(self, layer, quantize_activations):
            # Empty since `get_activaations_and_quantizers` returns
            # an empty list.
            return

    quant_aware_model = _apply(ModifiedDenseQuantizeConfig(), "ModifiedDenseQuantizeConfig")
    wrapper = _custom_wrapper(quant_aware_model)
    assert [w.path.rsplit("/", 1)[-1] for w in wrapper.non_trainable_weights] == [
        "kernel_min",
        "kernel_max",
    ]
    # the output has no trained range: the int8 file calibrates it
    x_train, _ = guide_data
    flatbuffer = tfc.convert(quant_aware_model, "int8", representative_data=x_train)
    assert _int8_ops(flatbuffer) == ["FULLY_CONNECTED"]
    assert _top1_agreement(quant_aware_model, flatbuffer, x_train) >= 0.9


def test_guide_custom_quantization_algorithm_fixed_range(guide_data):
    # "Use custom quantization algorithm"
    class FixedRangeQuantizer(tfmot.quantization.quantizers.Quantizer):
        """Quantizer which forces outputs to be between -1 and 1."""

        def build(self, tensor_shape, name, layer):
            # Not needed. No new TensorFlow variables needed.
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            return keras.ops.clip(inputs, -1.0, 1.0)  # keras.backend.clip in tf_keras

        def get_config(self):
            # Not needed. No __init__ parameters to serialize.
            return {}

    class ModifiedDenseQuantizeConfig(DefaultDenseQuantizeConfig):
        # Configure weights to quantize with 4-bit instead of 8-bits.
        def get_weights_and_quantizers(self, layer):
            # Use custom algorithm defined in `FixedRangeQuantizer` instead of default Quantizer.
            return [(layer.kernel, FixedRangeQuantizer())]

    quant_aware_model = _apply(ModifiedDenseQuantizeConfig(), "ModifiedDenseQuantizeConfig")
    wrapper = _custom_wrapper(quant_aware_model)
    x_train, _ = guide_data
    wrapper.layer.kernel.assign(np.full((20, 20), 1.0, "float32"))
    clipped = quant_aware_model.predict(x_train, verbose=0)
    wrapper.layer.kernel.assign(np.full((20, 20), 3.0, "float32"))  # clipped to 1.0 in the call
    np.testing.assert_array_equal(quant_aware_model.predict(x_train, verbose=0), clipped)
