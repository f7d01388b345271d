"""tfmot's collaborative-optimization guides (PQAT, CQAT, PCQAT) with only the imports changed.

Guides: g3doc/guide/combine/pqat_example.ipynb, cqat_example.ipynb and pcqat_example.ipynb
(tensorflow/model-optimization), with `tfmot.quantization.keras` -> `tfc.quantization`,
`tfmot.sparsity.keras` -> `tfc.sparsity`, `tfmot.clustering.keras` -> `tfc.clustering` and
`tfmot.experimental.combine` -> `tfc.experimental.combine`. MNIST is replaced by sklearn digits,
epochs and sizes are tiny, `tf_keras` becomes Keras 3. The three guides start from the same
baseline model, so it is trained once. Each QAT model is converted with `tfc.convert(..., "int8")`
(the guides' `TFLiteConverter` + `Optimize.DEFAULT`) and the file is checked for what its guide
promises: zeros kept (PQAT), at most `number_of_clusters` values per kernel (CQAT), both (PCQAT).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.clustering import experimental as cluster  # guide: ...clustering.keras.experimental
from tfcompress.converter import run_tflite

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("collaborative-guides")

_CLUSTERS = 8


def _file_kernels(flatbuffer: bytes) -> list[np.ndarray]:
    """The int8 weight tensor of every CONV_2D / FULLY_CONNECTED op of a .tflite file."""
    report = tfc.inspect(flatbuffer)
    kernels = [
        np.asarray(report.tensors[op.inputs[1]].buffer)
        for op in report.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(kernels) == 2, [op.name for op in report.ops]
    return kernels


def _keras_kernels(model: keras.Model) -> list[np.ndarray]:
    return [
        keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    ]


def _compile(model: keras.Model, learning_rate: float = 1e-3) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _keras_litert_agreement(model: keras.Model, flatbuffer: bytes, x: np.ndarray) -> float:
    keras_top1 = np.argmax(model.predict(x, verbose=0), axis=-1)
    litert_top1 = np.argmax(run_tflite(flatbuffer, x), axis=-1)
    return float(np.mean(keras_top1 == litert_top1))


@pytest.fixture(scope="session")
def data(digits):
    # (n, 8, 8) images, as the guides' MNIST (n, 28, 28)
    return digits.x_train[..., 0], digits.y_train, digits.x_test[..., 0], digits.y_test


@pytest.fixture(scope="session")
def baseline(data):
    """All three guides: "Train a keras model for MNIST" (the same model in each)."""
    train_images, train_labels, test_images, test_labels = data
    keras.utils.set_random_seed(0)
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
    _compile(model)
    model.fit(train_images, train_labels, validation_split=0.1, epochs=8, verbose=0)
    # "Evaluate the baseline model and save it for later usage"
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    assert baseline_model_accuracy > 0.8
    return model


@pytest.fixture(scope="session")
def stripped_pruned_model(baseline, data):
    """PQAT and PCQAT guides: "Prune and fine-tune the model to 50% sparsity"."""
    train_images, train_labels, _, _ = data
    prune_low_magnitude = tfc.sparsity.prune_low_magnitude
    pruning_params = {
        "pruning_schedule": tfc.sparsity.ConstantSparsity(0.5, begin_step=0, frequency=100)
    }
    callbacks = [tfc.sparsity.UpdatePruningStep()]
    pruned_model = prune_low_magnitude(baseline, **pruning_params)
    _compile(pruned_model, learning_rate=1e-5)  # "Use smaller learning rate for fine-tuning"
    pruned_model.fit(
        train_images, train_labels, epochs=2, validation_split=0.1, callbacks=callbacks, verbose=0
    )
    # "strip the pruning wrapper first, then check that the model kernels were correctly pruned"
    stripped = tfc.sparsity.strip_pruning(pruned_model)
    for kernel in _keras_kernels(stripped):
        assert np.mean(kernel == 0) >= 0.49
    return stripped


# ------------------------------------------------------------------------ pqat_example.ipynb
@pytest.fixture(scope="session")
def pqat(stripped_pruned_model, data):
    train_images, train_labels, test_images, test_labels = data
    # "Apply QAT and PQAT and check effect on model sparsity in both cases"
    quant_aware_annotate_model = tfc.quantization.quantize_annotate_model(stripped_pruned_model)
    pqat_model = tfc.quantization.quantize_apply(
        quant_aware_annotate_model,
        tfc.experimental.combine.Default8BitPrunePreserveQuantizeScheme(),
    )
    _compile(pqat_model)
    pqat_model.fit(
        train_images, train_labels, batch_size=500, epochs=1, validation_split=0.1, verbose=0
    )
    # "See compression benefits of PQAT model"
    pqat_tflite_model = tfc.convert(pqat_model, "int8")
    return pqat_model, pqat_tflite_model


def test_pqat_int8_file_keeps_the_pruned_zeros(pqat, stripped_pruned_model):
    _, flatbuffer = pqat
    for pruned, stored in zip(
        _keras_kernels(stripped_pruned_model), _file_kernels(flatbuffer), strict=True
    ):
        # the file stores Dense kernels transposed and convolutions as OHWI: compare counts
        assert stored.size == pruned.size
        assert np.count_nonzero(stored == 0) >= np.count_nonzero(pruned == 0)


def test_pqat_litert_accuracy_and_agreement_with_keras(pqat, data):
    pqat_model, flatbuffer = pqat
    _, _, test_images, test_labels = data
    # "See the persistence of accuracy from TF to TFLite"
    assert tfc.evaluate_tflite(flatbuffer, test_images, test_labels) > 0.5
    assert _keras_litert_agreement(pqat_model, flatbuffer, test_images) >= 0.95


# ------------------------------------------------------------------------ cqat_example.ipynb
@pytest.fixture(scope="session")
def cqat(baseline, data):
    train_images, train_labels, test_images, test_labels = data
    # "Cluster and fine-tune the model with 8 clusters"
    cluster_weights = tfc.clustering.cluster_weights
    CentroidInitialization = tfc.clustering.CentroidInitialization
    clustering_params = {
        "number_of_clusters": _CLUSTERS,
        "cluster_centroids_init": CentroidInitialization.KMEANS_PLUS_PLUS,
    }
    clustered_model = cluster_weights(baseline, **clustering_params)
    _compile(clustered_model, learning_rate=1e-5)
    clustered_model.fit(
        train_images, train_labels, batch_size=500, epochs=1, validation_split=0.1, verbose=0
    )
    stripped_clustered_model = tfc.clustering.strip_clustering(clustered_model)
    # "Apply QAT and CQAT and check effect on model clusters in both cases"
    quant_aware_annotate_model = tfc.quantization.quantize_annotate_model(stripped_clustered_model)
    cqat_model = tfc.quantization.quantize_apply(
        quant_aware_annotate_model,
        tfc.experimental.combine.Default8BitClusterPreserveQuantizeScheme(),
    )
    _compile(cqat_model)
    cqat_model.fit(
        train_images, train_labels, batch_size=500, epochs=1, validation_split=0.1, verbose=0
    )
    # "See compression benefits of CQAT model"
    return cqat_model, tfc.convert(cqat_model, "int8")


def test_cqat_int8_file_has_at_most_8_values_per_kernel(cqat):
    _, flatbuffer = cqat
    counts = [len(np.unique(kernel)) for kernel in _file_kernels(flatbuffer)]
    assert all(count <= _CLUSTERS for count in counts), counts


def test_cqat_litert_accuracy_and_agreement_with_keras(cqat, data):
    cqat_model, flatbuffer = cqat
    _, _, test_images, test_labels = data
    assert tfc.evaluate_tflite(flatbuffer, test_images, test_labels) > 0.5
    assert _keras_litert_agreement(cqat_model, flatbuffer, test_images) >= 0.95


# ----------------------------------------------------------------------- pcqat_example.ipynb
@pytest.fixture(scope="session")
def pcqat(stripped_pruned_model, data):
    train_images, train_labels, test_images, test_labels = data
    # "Apply sparsity preserving clustering and check its effect on model sparsity"
    cluster_weights = cluster.cluster_weights
    CentroidInitialization = tfc.clustering.CentroidInitialization
    clustering_params = {
        "number_of_clusters": _CLUSTERS,
        "cluster_centroids_init": CentroidInitialization.KMEANS_PLUS_PLUS,
        "preserve_sparsity": True,
    }
    sparsity_clustered_model = cluster_weights(stripped_pruned_model, **clustering_params)
    _compile(sparsity_clustered_model)
    sparsity_clustered_model.fit(
        train_images, train_labels, epochs=1, validation_split=0.1, verbose=0
    )
    stripped_clustered_model = tfc.clustering.strip_clustering(sparsity_clustered_model)
    # "Apply QAT and PCQAT and check effect on model clusters and sparsity"
    quant_aware_annotate_model = tfc.quantization.quantize_annotate_model(stripped_clustered_model)
    pcqat_model = tfc.quantization.quantize_apply(
        quant_aware_annotate_model,
        tfc.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    )
    _compile(pcqat_model)
    pcqat_model.fit(
        train_images, train_labels, batch_size=128, epochs=1, validation_split=0.1, verbose=0
    )
    # "See compression benefits of PCQAT model"
    return stripped_clustered_model, pcqat_model, tfc.convert(pcqat_model, "int8")


def test_pcqat_int8_file_keeps_zeros_and_clusters(pcqat):
    stripped_clustered_model, _, flatbuffer = pcqat
    for clustered, stored in zip(
        _keras_kernels(stripped_clustered_model), _file_kernels(flatbuffer), strict=True
    ):
        assert np.mean(clustered == 0) >= 0.49  # the pruned zeros survived clustering
        assert np.count_nonzero(stored == 0) >= np.count_nonzero(clustered == 0)
        # the clusters, plus zero (kept apart from them by sparsity-preserving clustering)
        assert len(np.unique(stored)) <= _CLUSTERS + 1


def test_pcqat_litert_accuracy_and_agreement_with_keras(pcqat, data):
    _, pcqat_model, flatbuffer = pcqat
    _, _, test_images, test_labels = data
    # "See the persistence of accuracy from TF to TFLite"
    assert tfc.evaluate_tflite(flatbuffer, test_images, test_labels) > 0.5
    assert _keras_litert_agreement(pcqat_model, flatbuffer, test_images) >= 0.95
