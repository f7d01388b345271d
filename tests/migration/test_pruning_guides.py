"""tfmot's pruning guides with `tfmot.sparsity.keras` -> `tfc.sparsity` and nothing else.

Guides (tensorflow/model-optimization, g3doc/guide/pruning/): pruning_with_keras.ipynb,
comprehensive_guide.ipynb, pruning_for_on_device_inference.ipynb and
pruning_with_sparsity_2_by_4.ipynb. MNIST / CIFAR-10 / random data are replaced by sklearn
digits (CIFAR's RGB by the digit repeated on 3 channels), epochs and sizes are tiny; `tf_keras`
becomes Keras 3 (`import keras`) and `tf.lite.Interpreter` LiteRT's. Each block names its
guide section; outcomes are checked in the converted .tflite file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc

tfmot = tfc  # `import tensorflow_model_optimization as tfmot`: tfmot.sparsity.keras -> tfc.sparsity
prune_low_magnitude = tfc.sparsity.prune_low_magnitude


def _weights(flatbuffer: bytes, op_name: str) -> list[np.ndarray]:
    """The weight tensor (input 1) of every `op_name` op of a .tflite file, as stored."""
    report = tfc.inspect(flatbuffer)
    tensors = [report.tensors[op.inputs[1]] for op in report.ops if op.name == op_name]
    return [np.asarray(t.buffer).reshape(t.shape) for t in tensors]


def _litert_logits(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    from tfcompress.core.compat import litert_interpreter_class

    interpreter = litert_interpreter_class()(model_content=flatbuffer)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _event_tags(log_dir: str) -> dict[str, int]:
    tags: dict[str, int] = {}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                tags[value.tag] = tags.get(value.tag, 0) + 1
    return tags


def test_sparsity_namespace_has_every_name_of_tfmot_sparsity_keras() -> None:
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_model_optimization")
    api = Path(spec.origin).parent / "python/core/api/sparsity/keras/__init__.py"
    tfmot_names = {
        line.split(" import ")[1].strip()
        for line in api.read_text().splitlines()
        if line.startswith("from ") and " import " in line
    }
    assert "prune_low_magnitude" in tfmot_names and "PruneForLatencyOnXNNPack" in tfmot_names
    assert tfmot_names - set(dir(tfc.sparsity)) == set()


# -------------------------------------------------------------------- pruning_with_keras.ipynb
def test_pruning_with_keras_guide(digits) -> None:
    keras.utils.set_random_seed(0)
    # "Train a model for MNIST without pruning"
    train_images, train_labels = digits.x_train[..., 0], digits.y_train
    test_images, test_labels = digits.x_test[..., 0], digits.y_test
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
    model.fit(train_images, train_labels, epochs=4, validation_split=0.1, verbose=0)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, keras_file = tempfile.mkstemp(".h5")
    keras.models.save_model(model, keras_file, include_optimizer=False)

    # "Fine-tune pre-trained model with pruning": numpy end_step, as the guide computes it
    batch_size = (
        8  # 128 in the guide: digits need smaller batches for the schedule's 100-step frequency
    )
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.PolynomialDecay(
            initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step
        )
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    logdir = tempfile.mkdtemp()
    callbacks = [
        tfmot.sparsity.UpdatePruningStep(),
        tfmot.sparsity.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(
        train_images,
        train_labels,
        batch_size=batch_size,
        epochs=epochs,
        validation_split=validation_split,
        callbacks=callbacks,
        verbose=0,
    )
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)

    # "Create 3x smaller models from pruning"
    model_for_export = tfmot.sparsity.strip_pruning(model_for_pruning)
    _, pruned_keras_file = tempfile.mkstemp(".h5")
    keras.models.save_model(model_for_export, pruned_keras_file, include_optimizer=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    pruned_tflite_model = converter.convert()
    # "Create a 10x smaller model from combining pruning and quantization"
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_and_pruned_tflite_model = converter.convert()

    # outcomes: tfmot's per-layer meaning (every kernel at 80%), in the file; accuracy kept
    assert any(name.endswith("/sparsity") for name in _event_tags(logdir))
    for weights in _weights(pruned_tflite_model, "CONV_2D") + _weights(
        pruned_tflite_model, "FULLY_CONNECTED"
    ):
        assert np.mean(weights == 0) == pytest.approx(0.8, abs=0.02)
    assert tfmot.sparsity.get_model_sparsity(model_for_export) == pytest.approx(0.8, abs=0.02)
    logits = _litert_logits(pruned_tflite_model, test_images)
    np.testing.assert_allclose(logits, model_for_export.predict(test_images, verbose=0), atol=1e-4)
    test_accuracy = tfc.evaluate_tflite(quantized_and_pruned_tflite_model, test_images, test_labels)
    assert baseline_model_accuracy > 0.5 and model_for_pruning_accuracy > 0.5
    assert test_accuracy > 0.5  # chance is 0.1


# ------------------------------------------------------------------- comprehensive_guide.ipynb
@pytest.fixture(scope="session")
def comprehensive(digits):
    keras.utils.set_random_seed(0)
    # "Setup": digits flattened instead of a random sample
    input_shape = [64]
    x_train = digits.x_train[:256].reshape(-1, 64)
    y_train = keras.utils.to_categorical(digits.y_train[:256], num_classes=10)

    def setup_model():
        return keras.Sequential(
            [keras.layers.Dense(10, input_shape=input_shape), keras.layers.Flatten()]
        )

    def setup_pretrained_weights():
        model = setup_model()
        model.compile(
            loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"]
        )
        model.fit(x_train, y_train, verbose=0)
        _, pretrained_weights = tempfile.mkstemp(".weights.h5")
        model.save_weights(pretrained_weights)
        return pretrained_weights

    return x_train, y_train, setup_model, setup_pretrained_weights()


def test_comprehensive_guide_define_model_sections(comprehensive) -> None:
    x_train, y_train, setup_model, pretrained_weights = comprehensive
    # "Prune whole model (Sequential and Functional)"
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot.sparsity.prune_low_magnitude(base_model)
    assert isinstance(model_for_pruning.layers[0], tfc.pruning.PruneLowMagnitude)

    # "Prune some layers": clone_model with a clone_function
    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfmot.sparsity.prune_low_magnitude(layer)
        return layer

    model_for_pruning = keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
    assert isinstance(model_for_pruning.layers[0], tfc.pruning.PruneLowMagnitude)

    # "More readable but potentially lower model accuracy": functional, then Sequential whose
    # first wrapped layer carries input_shape (crashed in fit before)
    i = keras.Input(shape=(64,))
    x = tfmot.sparsity.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    functional = keras.Model(inputs=i, outputs=o)
    sequential = keras.Sequential(
        [
            tfmot.sparsity.prune_low_magnitude(keras.layers.Dense(10, input_shape=(64,))),
            keras.layers.Flatten(),
        ]
    )

    # "Prune custom Keras layer or modify parts of layer to prune"
    class MyDenseLayer(keras.layers.Dense, tfmot.sparsity.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    custom = keras.Sequential(
        [
            tfmot.sparsity.prune_low_magnitude(MyDenseLayer(10, input_shape=(64,))),
            keras.layers.Flatten(),
        ]
    )
    for model in (functional, sequential, custom):
        model.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam")
        model.fit(
            x_train, y_train, epochs=1, verbose=0, callbacks=[tfmot.sparsity.UpdatePruningStep()]
        )
    stripped = tfmot.sparsity.strip_pruning(custom)
    assert np.mean(stripped.layers[0].bias.numpy() == 0) == pytest.approx(0.5)  # bias pruned
    for model in (functional, sequential):
        flatbuffer = tfc.convert(tfmot.sparsity.strip_pruning(model), mode="float32")
        assert np.mean(_weights(flatbuffer, "FULLY_CONNECTED")[0] == 0) == pytest.approx(0.5)

    # "Hardware-specific optimizations": block_size as a list
    model_for_pruning = tfmot.sparsity.prune_low_magnitude(setup_model(), block_size=[1, 16])
    assert model_for_pruning.layers[0].block_size == (1, 16)


def test_comprehensive_guide_custom_training_loop_and_checkpoint(comprehensive) -> None:
    x_train, y_train, setup_model, pretrained_weights = comprehensive
    # "Custom training loop"
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfmot.sparsity.prune_low_magnitude(base_model)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    log_dir = tempfile.mkdtemp()
    unused_arg = -1
    epochs = 2
    batches = 1
    model_for_pruning.optimizer = optimizer
    step_callback = tfmot.sparsity.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = tfmot.sparsity.PruningSummaries(log_dir=log_dir)
    log_callback.set_model(model_for_pruning)

    step_callback.on_train_begin()
    for _ in range(epochs):
        log_callback.on_epoch_begin(epoch=unused_arg)
        for _ in range(batches):
            step_callback.on_train_batch_begin(batch=unused_arg)
            with tf.GradientTape() as tape:
                logits = model_for_pruning(x_train, training=True)
                loss_value = loss(y_train, logits)
                grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
                optimizer.apply_gradients(zip(grads, model_for_pruning.trainable_variables))  # noqa: B905
        step_callback.on_epoch_end(batch=unused_arg)

    tags = _event_tags(log_dir)  # real TensorBoard event files, one write per epoch
    name = model_for_pruning.layers[0].layer.name
    assert tags[f"{name}/sparsity"] == epochs and tags[f"{name}/threshold"] == epochs
    assert tfmot.sparsity.get_model_sparsity(model_for_pruning) == pytest.approx(0.5)

    # "Checkpoint and deserialize" (.h5 as the guide writes it)
    _, keras_model_file = tempfile.mkstemp(".h5")
    model_for_pruning.save(keras_model_file, include_optimizer=True)
    with tfmot.sparsity.prune_scope():
        loaded_model = keras.models.load_model(keras_model_file)
    np.testing.assert_allclose(
        loaded_model.predict(x_train, verbose=0),
        model_for_pruning.predict(x_train, verbose=0),
        atol=1e-6,
    )

    # "Export model with size compression"
    model_for_export = tfmot.sparsity.strip_pruning(loaded_model)
    flatbuffer = tfc.convert(model_for_export, mode="float32")
    assert np.mean(_weights(flatbuffer, "FULLY_CONNECTED")[0] == 0) == pytest.approx(0.5)
    np.testing.assert_allclose(
        _litert_logits(flatbuffer, x_train), model_for_export.predict(x_train, verbose=0), atol=1e-4
    )


# -------------------------------------------------------- pruning_for_on_device_inference.ipynb
def _xnnpack_model(keepdims: bool) -> keras.Model:
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 3)),
            keras.layers.ZeroPadding2D(padding=1),
            keras.layers.Conv2D(filters=8, kernel_size=(3, 3), strides=(2, 2), padding="valid"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(filters=16, kernel_size=(1, 1)),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.ZeroPadding2D(padding=1),
            keras.layers.DepthwiseConv2D(kernel_size=(3, 3), strides=(2, 2), padding="valid"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(filters=32, kernel_size=(1, 1)),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(keepdims=keepdims),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


@pytest.mark.slow
def test_pruning_for_on_device_inference_guide(digits) -> None:
    keras.utils.set_random_seed(0)
    rgb = lambda images: np.repeat(images, 3, axis=-1)  # noqa: E731  (CIFAR's 3 channels)
    ds_train = tf.data.Dataset.from_tensor_slices((rgb(digits.x_train), digits.y_train)).batch(16)
    ds_test = tf.data.Dataset.from_tensor_slices((rgb(digits.x_test), digits.y_test)).batch(128)
    # "Build the dense baseline model"
    dense_model = _xnnpack_model(keepdims=False)
    dense_model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer="adam",
        metrics=["accuracy"],
    )
    dense_model.fit(ds_train, epochs=4, verbose=0)

    # "Prune the model": the policy refuses the model whose pooling drops the spatial dims
    end_step = len(ds_train) * 2
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.PolynomialDecay(
            initial_sparsity=0.25, final_sparsity=0.75, begin_step=0, end_step=end_step
        ),
        "pruning_policy": tfmot.sparsity.PruneForLatencyOnXNNPack(),
    }
    with pytest.raises(ValueError, match="GlobalAveragePooling2D layer with keepdims=True"):
        prune_low_magnitude(dense_model, **pruning_params)
    fixed_dense_model = _xnnpack_model(keepdims=True)
    fixed_dense_model.set_weights(dense_model.get_weights())
    model_for_pruning = prune_low_magnitude(fixed_dense_model, **pruning_params)
    wrapped = [layer.layer for layer in tfc.pruning.pruned_layers(model_for_pruning)]
    assert [(type(w).__name__, w.kernel_size) for w in wrapped] == [("Conv2D", (1, 1))] * 2

    # "Fine-tune the sparse model"
    model_for_pruning.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer="adam",
        metrics=["accuracy"],
    )
    logdir = tempfile.mkdtemp()
    callbacks = [
        tfmot.sparsity.UpdatePruningStep(),
        tfmot.sparsity.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(ds_train, epochs=3, callbacks=callbacks, verbose=0)
    _, pruned_model_accuracy = model_for_pruning.evaluate(ds_test, verbose=0)

    # "Model conversion": EXPERIMENTAL_SPARSITY, as the guide converts it
    model_for_export = tfmot.sparsity.strip_pruning(model_for_pruning)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    pruned_tflite_model = converter.convert()

    dense_file = tf.lite.TFLiteConverter.from_keras_model(model_for_export).convert()
    sparse = tfc.inspect(pruned_tflite_model).sparse_tensors  # what XNNPACK's sparse path reads
    assert len(sparse) == 2 and all(t.sparse.sparsity >= 0.74 for t in sparse)
    one_by_one = [w for w in _weights(dense_file, "CONV_2D") if w.shape[1:3] == (1, 1)]
    assert len(one_by_one) == 2
    assert all(np.mean(w == 0) >= 0.74 for w in one_by_one)
    dense_weights = _weights(dense_file, "FULLY_CONNECTED")[0]
    assert np.mean(dense_weights == 0) < 0.05  # the policy left the classifier dense
    x_test = rgb(digits.x_test)
    np.testing.assert_allclose(
        _litert_logits(pruned_tflite_model, x_test),
        model_for_export.predict(x_test, verbose=0),
        atol=1e-3,
    )
    assert pruned_model_accuracy > 0.3  # chance is 0.1


# ---------------------------------------------------------- pruning_with_sparsity_2_by_4.ipynb
def test_pruning_with_sparsity_2_by_4_guide(digits) -> None:
    keras.utils.set_random_seed(0)
    train_images, train_labels = digits.x_train, digits.y_train
    test_images, test_labels = digits.x_test, digits.y_test
    pruning_params_2_by_4 = {"sparsity_m_by_n": (2, 4)}
    pruning_params_sparsity_0_5 = {
        "pruning_schedule": tfmot.sparsity.ConstantSparsity(
            target_sparsity=0.5, begin_step=0, frequency=100
        )
    }
    model = keras.Sequential(
        [
            prune_low_magnitude(
                keras.layers.Conv2D(
                    8,
                    3,
                    padding="same",
                    activation="relu",
                    input_shape=(8, 8, 1),
                    name="pruning_sparsity_0_5",
                ),
                **pruning_params_sparsity_0_5,
            ),
            keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
            prune_low_magnitude(
                keras.layers.Conv2D(16, 3, padding="same", name="structural_pruning"),
                **pruning_params_2_by_4,
            ),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
            keras.layers.Flatten(),
            prune_low_magnitude(
                keras.layers.Dense(32, activation="relu", name="structural_pruning_dense"),
                **pruning_params_2_by_4,
            ),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        train_images,
        train_labels,
        batch_size=16,  # 128 in the guide: digits has 1,347 training images
        epochs=4,
        verbose=0,
        callbacks=tfmot.sparsity.UpdatePruningStep(),  # not a list, as the guide passes it
        validation_split=0.1,
    )
    _, pruned_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    model = tfmot.sparsity.strip_pruning(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    tflite_model = converter.convert()

    # 2:4 = at least 2 zeros in every 4 consecutive input weights (the last TFLite axis)
    conv_unstructured, conv_2_by_4 = _weights(tflite_model, "CONV_2D")
    dense_2_by_4 = _weights(tflite_model, "FULLY_CONNECTED")[0]
    for weights in (conv_2_by_4, dense_2_by_4):
        groups = weights.reshape(weights.shape[0], -1, 4)
        assert np.all(np.sum(groups == 0, axis=-1) >= 2)
        assert np.mean(weights == 0) == pytest.approx(0.5, abs=0.01)
    assert np.mean(conv_unstructured == 0) == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(
        _litert_logits(tflite_model, test_images), model.predict(test_images, verbose=0), atol=1e-4
    )
    assert pruned_model_accuracy > 0.3  # chance is 0.1
