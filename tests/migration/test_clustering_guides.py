"""tfmot's clustering guides with `tfmot.clustering.keras` -> `tfc.clustering` and nothing else.

Guides: g3doc/guide/clustering/clustering_example.ipynb and clustering_comprehensive_guide.ipynb
(tensorflow/model-optimization). MNIST / random data are replaced by sklearn digits, epochs and
sizes are tiny; `tf_keras` becomes Keras 3 (`import keras`). Each block names its guide section.
"""

from __future__ import annotations

import gzip
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("clustering-guides")

tfmot = (
    tfc  # `import tensorflow_model_optimization as tfmot`: tfmot.clustering.keras -> tfc.clustering
)
cluster_weights = tfc.clustering.cluster_weights
CentroidInitialization = tfc.clustering.CentroidInitialization


def _kernel_unique_counts(flatbuffer: bytes) -> list[int]:
    """Unique values of each CONV_2D / FULLY_CONNECTED weight tensor in a .tflite file."""
    report = tfc.inspect(flatbuffer)
    return [
        len(np.unique(report.tensors[op.inputs[1]].buffer))
        for op in report.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]


def _litert_accuracy(flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> float:
    return tfc.evaluate_tflite(flatbuffer, x, y)


# ----------------------------------------------------------------- clustering_example.ipynb
@pytest.fixture(scope="session")
def example(digits):
    keras.utils.set_random_seed(0)
    train_images, train_labels = digits.x_train[..., 0], digits.y_train  # (n, 8, 8) like MNIST
    test_images, test_labels = digits.x_test[..., 0], digits.y_test

    # "Train a keras model for MNIST without clustering"
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8)),
            keras.layers.Reshape(target_shape=(8, 8, 1)),
            keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation=tf.nn.relu),
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
    model.fit(train_images, train_labels, validation_split=0.1, epochs=10, verbose=0)
    # "Evaluate the baseline model and save it for later usage"
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)

    # "Fine-tune the pre-trained model with clustering"
    clustering_params = {
        "number_of_clusters": 16,
        "cluster_centroids_init": CentroidInitialization.LINEAR,
    }
    clustered_model = cluster_weights(model, **clustering_params)
    opt = keras.optimizers.Adam(learning_rate=1e-5)
    clustered_model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=opt,
        metrics=["accuracy"],
    )
    clustered_model.fit(
        train_images, train_labels, batch_size=500, epochs=1, validation_split=0.1, verbose=0
    )
    _, clustered_model_accuracy = clustered_model.evaluate(test_images, test_labels, verbose=0)

    # "Create 6x smaller models from clustering"
    final_model = tfmot.clustering.strip_clustering(clustered_model)
    converter = tf.lite.TFLiteConverter.from_keras_model(final_model)
    tflite_clustered_model = converter.convert()
    # "Create an 8x smaller TFLite model from combining weight clustering and PTQ"
    converter = tf.lite.TFLiteConverter.from_keras_model(final_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite_quant_model = converter.convert()
    return {
        "baseline": baseline_model_accuracy,
        "clustered": clustered_model_accuracy,
        "final_model": final_model,
        "float_file": tflite_clustered_model,
        "quant_file": tflite_quant_model,
        "test": (test_images, test_labels),
    }


def test_example_clustered_accuracy_stays_close_to_baseline(example):
    assert example["baseline"] > 0.85
    assert example["clustered"] >= example["baseline"] - 0.05


def test_example_tflite_file_has_at_most_16_values_per_kernel(example):
    counts = _kernel_unique_counts(example["float_file"])
    assert len(counts) == 2
    assert all(count <= 16 for count in counts), counts


def test_example_clustered_file_compresses_better_than_float(example):
    # the guide's gzip comparison: a file with 16 distinct kernel values deflates well
    plain = tf.lite.TFLiteConverter.from_keras_model(
        keras.models.clone_model(example["final_model"])
    ).convert()
    assert len(gzip.compress(example["float_file"])) < len(gzip.compress(plain))


def test_example_quantized_tflite_accuracy_persists(example):
    # "See the persistence of accuracy from TF to TFLite"
    test_images, test_labels = example["test"]
    accuracy = _litert_accuracy(example["quant_file"], test_images, test_labels)
    assert accuracy >= example["clustered"] - 0.02
    # dynamic-range quantization scales each output channel apart: <= 16 values per channel
    report = tfc.inspect(example["quant_file"])
    for op in report.ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            weights = report.tensors[op.inputs[1]].buffer
            rows = weights.reshape(weights.shape[0], -1)
            assert all(len(np.unique(row)) <= 16 for row in rows)


# ----------------------------------------------------------- clustering_comprehensive_guide
input_dim = 64  # the guide's 20-dimensional random data becomes flattened 8x8 digits
output_dim = 10


@pytest.fixture(scope="session")
def guide(digits):
    keras.utils.set_random_seed(0)
    x_train = digits.x_train.reshape(-1, input_dim)
    y_train = keras.utils.to_categorical(digits.y_train, num_classes=output_dim)

    # "Setup" (softmax added: the guide trains a linear layer on random labels)
    def setup_model():
        model = keras.Sequential(
            [
                keras.layers.Dense(output_dim, input_shape=[input_dim], activation="softmax"),
                keras.layers.Flatten(),
            ]
        )
        return model

    def train_model(model):
        model.compile(
            loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"]
        )
        model.fit(x_train, y_train, epochs=5, verbose=0)
        return model

    def save_model_weights(model):
        _, pretrained_weights = tempfile.mkstemp(".weights.h5")  # Keras 3 weight file suffix
        model.save_weights(pretrained_weights)
        return pretrained_weights

    def setup_pretrained_weights():
        model = setup_model()
        model = train_model(model)
        return save_model_weights(model)

    pretrained_weights = setup_pretrained_weights()
    return {
        "setup_model": setup_model,
        "pretrained_weights": pretrained_weights,
        "x": x_train,
        "y": y_train,
        "x_test": digits.x_test.reshape(-1, input_dim),
        "y_test": digits.y_test,
        "clustering_params": {
            "number_of_clusters": 3,
            "cluster_centroids_init": CentroidInitialization.KMEANS_PLUS_PLUS,
        },
    }


def _fit_strip_convert(model, guide):
    model.compile(
        loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"]
    )
    model.fit(guide["x"], guide["y"], epochs=1, verbose=0)
    final_model = tfmot.clustering.strip_clustering(model)
    flatbuffer = tfc.convert(final_model, mode="float32")
    accuracy = _litert_accuracy(flatbuffer, guide["x_test"], guide["y_test"])
    keras_accuracy = np.mean(
        final_model.predict(guide["x_test"], verbose=0).argmax(-1) == guide["y_test"]
    )
    return flatbuffer, accuracy, keras_accuracy


def test_guide_cluster_a_whole_sequential_model_built_with_input_shape(guide):
    # "Cluster a whole model (sequential and functional)"
    model = guide["setup_model"]()
    model.load_weights(guide["pretrained_weights"])
    clustered_model = cluster_weights(model, **guide["clustering_params"])
    flatbuffer, accuracy, keras_accuracy = _fit_strip_convert(clustered_model, guide)
    assert _kernel_unique_counts(flatbuffer) == [3]
    assert accuracy > 0.3 and abs(accuracy - keras_accuracy) < 0.01


def test_guide_cluster_some_layers_with_clone_model(guide):
    # "Cluster some layers (sequential and functional models)"
    base_model = guide["setup_model"]()
    base_model.load_weights(guide["pretrained_weights"])

    def apply_clustering_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return cluster_weights(layer, **guide["clustering_params"])
        return layer

    clustered_model = keras.models.clone_model(base_model, clone_function=apply_clustering_to_dense)
    flatbuffer, accuracy, keras_accuracy = _fit_strip_convert(clustered_model, guide)
    assert _kernel_unique_counts(flatbuffer) == [3]
    assert abs(accuracy - keras_accuracy) < 0.01


class MyDenseLayer(keras.layers.Dense, tfc.clustering.ClusterableLayer):
    def get_clusterable_weights(self):
        # Cluster kernel and bias. This is just an example, clustering bias usually hurts.
        return [("kernel", self.kernel), ("bias", self.bias)]


def test_guide_clusterable_layer_clusters_the_weights_it_names(guide):
    # "Cluster custom Keras layer or specify which weights of layer to cluster"
    model_for_clustering = keras.Sequential(
        [
            tfmot.clustering.cluster_weights(
                MyDenseLayer(output_dim, input_shape=[input_dim], activation="softmax"),
                **guide["clustering_params"],
            ),
            keras.layers.Flatten(),
        ]
    )
    flatbuffer, accuracy, keras_accuracy = _fit_strip_convert(model_for_clustering, guide)
    stripped = tfmot.clustering.strip_clustering(model_for_clustering)
    kernel, bias = stripped.layers[0].get_weights()
    assert len(np.unique(kernel)) <= 3 and len(np.unique(bias)) <= 3
    assert _kernel_unique_counts(flatbuffer) == [len(np.unique(kernel))]
    assert abs(accuracy - keras_accuracy) < 0.01


def test_guide_checkpoint_and_deserialize_with_cluster_scope(guide):
    # "Checkpoint and deserialize a clustered model" (HDF5, as the guide writes it)
    base_model = guide["setup_model"]()
    base_model.load_weights(guide["pretrained_weights"])
    clustered_model = cluster_weights(base_model, **guide["clustering_params"])
    _, keras_model_file = tempfile.mkstemp(".h5")
    clustered_model.save(keras_model_file, include_optimizer=True)
    # `cluster_scope` is needed for deserializing HDF5 models.
    with tfmot.clustering.cluster_scope():
        loaded_model = keras.models.load_model(keras_model_file)
    os.remove(keras_model_file)
    np.testing.assert_array_equal(
        loaded_model.predict(guide["x_test"], verbose=0),
        clustered_model.predict(guide["x_test"], verbose=0),
    )


def test_guide_export_strip_clustering_makes_a_smaller_gzipped_file(guide, tmp_path):
    # "Deployment: Export model with size compression"
    model = guide["setup_model"]()
    clustered_model = cluster_weights(model, **guide["clustering_params"])
    clustered_model.compile(
        loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"]
    )
    clustered_model.fit(guide["x"], guide["y"], verbose=0)
    final_model = tfmot.clustering.strip_clustering(clustered_model)
    sizes = []
    for name, m in (("with", clustered_model), ("without", final_model)):
        path = tmp_path / f"{name}.keras"
        m.save(path)
        sizes.append(len(gzip.compress(path.read_bytes())))
    assert sizes[1] < sizes[0]


def test_guide_cluster_convolutions_per_channel(digits):
    # "Cluster convolutional layers per channel" (cluster_per_channel=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Conv2D(8, 3, input_shape=(8, 8, 1), activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    clustered_model = cluster_weights(
        model,
        number_of_clusters=4,
        cluster_centroids_init=CentroidInitialization.DENSITY_BASED,
        cluster_per_channel=True,
    )
    clustered_model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer="adam",
        metrics=["accuracy"],
    )
    clustered_model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    final_model = tfmot.clustering.strip_clustering(clustered_model)
    conv = tfc.inspect(tfc.convert(final_model, mode="float32"))
    kernel = next(conv.tensors[op.inputs[1]].buffer for op in conv.ops if op.name == "CONV_2D")
    kernel = kernel.reshape(8, -1)  # TFLite conv kernels are (out, h, w, in)
    assert all(len(np.unique(channel)) <= 4 for channel in kernel)
    assert len(np.unique(kernel)) > 4  # the channels do not share one set


def test_guide_sparsity_preserving_clustering_keeps_zeros(guide):
    # "Sparsity preserving clustering" (tfmot.clustering.keras.experimental.cluster_weights)
    model = guide["setup_model"]()
    model.load_weights(guide["pretrained_weights"])
    kernel, bias = model.layers[0].get_weights()
    pruned = np.where(np.abs(kernel) < np.quantile(np.abs(kernel), 0.5), 0.0, kernel)
    model.layers[0].set_weights([pruned, bias])  # a pruned model, 50% zeros
    clustered_model = tfmot.clustering.experimental.cluster_weights(
        model, **guide["clustering_params"], preserve_sparsity=True
    )
    flatbuffer, accuracy, keras_accuracy = _fit_strip_convert(clustered_model, guide)
    weights = next(
        tfc.inspect(flatbuffer).tensors[op.inputs[1]].buffer
        for op in tfc.inspect(flatbuffer).ops
        if op.name == "FULLY_CONNECTED"
    )
    assert np.array_equal(weights.reshape(pruned.T.shape) == 0, pruned.T == 0)
    assert len(np.unique(weights)) <= 4  # three centroids and the zeros
    assert abs(accuracy - keras_accuracy) < 0.01
