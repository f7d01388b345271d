"""Weight clustering: shared centroids that train, survive saving, stripping and int8 conversion."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import compile_classifier
from tfcompress.sharing import ClusterWeights


def _clone(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@pytest.fixture(scope="module")
def clustered(trained_digits_cnn, digits):
    keras.utils.set_random_seed(1)
    model = tfc.cluster_weights(_clone(trained_digits_cnn), number_of_clusters=8)
    compile_classifier(model, 1e-3)
    model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    return model


def _kernels(model: keras.Model) -> dict[str, np.ndarray]:
    result = {}
    for layer in model.layers:
        for name in ("kernel", "depthwise_kernel"):
            if hasattr(layer, name) and not isinstance(layer, ClusterWeights):
                result[layer.name] = keras.ops.convert_to_numpy(getattr(layer, name))
    return result


def test_every_kernel_layer_is_wrapped_and_others_are_kept(clustered, trained_digits_cnn):
    wrapped = [layer.layer.name for layer in clustered.layers if isinstance(layer, ClusterWeights)]
    assert wrapped == ["conv1", "conv2", "conv3", "fc1", "logits"]
    assert len(clustered.layers) == len(trained_digits_cnn.layers)


def test_centroids_train_and_weights_move_between_clusters(trained_digits_cnn, digits):
    model = tfc.cluster_weights(_clone(trained_digits_cnn), number_of_clusters=4, init="linear")
    wrapper = next(layer for layer in model.layers if isinstance(layer, ClusterWeights))
    before_centroids = keras.ops.convert_to_numpy(wrapper.centroids).copy()
    before_indices = keras.ops.convert_to_numpy(wrapper.indices).copy()
    compile_classifier(model, 1e-2)
    model.fit(digits.x_train[:256], digits.y_train[:256], epochs=2, batch_size=32, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(wrapper.centroids), before_centroids)
    assert (keras.ops.convert_to_numpy(wrapper.indices) != before_indices).any()


def test_stripped_model_keeps_at_most_k_values_and_same_outputs(clustered, digits):
    plain = tfc.strip_clustering(clustered)
    assert not any(isinstance(layer, ClusterWeights) for layer in plain.layers)
    for name, kernel in _kernels(plain).items():
        assert len(np.unique(kernel)) <= 8, name
    np.testing.assert_allclose(
        plain.predict(digits.x_test, verbose=0),
        clustered.predict(digits.x_test, verbose=0),
        atol=1e-5,
    )


def test_clustered_int8_file_keeps_at_most_k_values_per_kernel(clustered, digits):
    plain = tfc.strip_clustering(clustered)
    flatbuffer = tfc.convert(plain, "int8", digits.x_train[:100], per_channel=False)
    report = tfc.inspect(flatbuffer)
    kernels = [
        report.tensors[op.inputs[1]]
        for op in report.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(kernels) == 5
    for tensor in kernels:
        assert len(np.unique(tensor.buffer)) <= 8, tensor.name
    keras_accuracy = (
        plain.evaluate(digits.x_test, digits.y_test, verbose=0)[1] if plain.compiled else None
    )
    accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    expected = np.mean(plain.predict(digits.x_test, verbose=0).argmax(-1) == digits.y_test)
    assert accuracy >= expected - 0.02
    del keras_accuracy


@pytest.mark.parametrize("init", ["kmeans++", "linear", "density"])
def test_per_channel_clustering_shares_values_within_each_channel(init, digits):
    layer = tfc.cluster_weights(
        keras.layers.Conv2D(6, 3), number_of_clusters=3, init=init, per_channel=True
    )
    layer(digits.x_train[:2])
    kernel = keras.ops.convert_to_numpy(layer.clustered_kernel())
    for channel in range(6):
        assert len(np.unique(kernel[..., channel])) <= 3


def test_depthwise_kernels_cluster_per_channel(digits):
    layer = tfc.cluster_weights(
        keras.layers.DepthwiseConv2D(3), number_of_clusters=2, per_channel=True
    )
    layer(np.repeat(digits.x_train[:2], 4, axis=-1))
    kernel = keras.ops.convert_to_numpy(layer.clustered_kernel())
    assert all(len(np.unique(kernel[:, :, c, :])) <= 2 for c in range(4))


def test_clustered_model_saves_and_loads_identically(clustered, digits, tmp_path):
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(digits.x_test, verbose=0), clustered.predict(digits.x_test, verbose=0)
    )


def test_only_named_layers_are_clustered(trained_digits_cnn):
    model = tfc.cluster_weights(_clone(trained_digits_cnn), layers=["fc1"])
    assert [layer.layer.name for layer in model.layers if isinstance(layer, ClusterWeights)] == [
        "fc1"
    ]


@pytest.mark.parametrize("clusters", [1, 0, 2.5])
def test_too_few_clusters_is_an_error(clusters, trained_digits_cnn):
    with pytest.raises(ValueError, match="number_of_clusters must be an integer >= 2"):
        tfc.cluster_weights(trained_digits_cnn, number_of_clusters=clusters)


def test_more_clusters_than_weights_names_the_layer(digits):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="tiny")(inputs))
    with pytest.raises(ValueError, match="larger than the 6 weights .*'tiny'"):
        tfc.cluster_weights(model, number_of_clusters=16)


def test_unclusterable_named_layer_is_an_error(trained_digits_cnn):
    with pytest.raises(ValueError, match="'bn1'.*cannot be clustered"):
        tfc.cluster_weights(trained_digits_cnn, layers=["bn1"])


def test_unknown_layer_name_is_an_error(trained_digits_cnn):
    with pytest.raises(ValueError, match="no layer named \\['nope'\\]"):
        tfc.cluster_weights(trained_digits_cnn, layers=["nope"])


def test_folding_batch_norms_keeps_outputs(trained_digits_cnn, digits):
    from tfcompress.sharing._rewrite import fold_batch_norms

    folded = fold_batch_norms(trained_digits_cnn)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(
        folded.predict(digits.x_test, verbose=0),
        trained_digits_cnn.predict(digits.x_test, verbose=0),
        atol=1e-4,
    )


def test_sparsity_preserving_clustering_keeps_pruned_zeros(trained_digits_cnn, digits):
    model = _clone(trained_digits_cnn)
    fc1 = model.get_layer("fc1")
    kernel, bias = fc1.get_weights()
    pruned = np.where(np.abs(kernel) < np.quantile(np.abs(kernel), 0.7), 0.0, kernel)
    fc1.set_weights([pruned, bias])
    clustered = tfc.cluster_weights(
        model, number_of_clusters=8, layers=["fc1"], preserve_sparsity=True
    )
    compile_classifier(clustered, 1e-3)
    clustered.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, batch_size=32, verbose=0)
    baked = tfc.strip_clustering(clustered).get_layer("fc1").get_weights()[0]
    assert np.array_equal(baked == 0, pruned == 0)
    assert len(np.unique(baked[baked != 0])) <= 8
