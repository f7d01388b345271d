"""Weight clustering: shared centroids that train, survive saving, stripping and int8 conversion."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import compile_classifier
from tfcompress.sharing import ClusterWeights

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("sharing-clustering")


def _clone(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


@pytest.fixture(scope="session")
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
    from tfcompress.core.batchnorm import fold_batch_norms

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


# -- tfmot names, aliases and errors (issue 11) ---------------------------------------------
def _tiny_dense_model() -> keras.Model:
    inputs = keras.Input((16,))
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(inputs))


@pytest.mark.parametrize(
    ("tfmot_init", "init"),
    [
        (tfc.clustering.CentroidInitialization.LINEAR, "linear"),
        (tfc.clustering.CentroidInitialization.DENSITY_BASED, "density"),
        (tfc.clustering.CentroidInitialization.KMEANS_PLUS_PLUS, "kmeans++"),
        (tfc.clustering.CentroidInitialization.RANDOM, "random"),
        ("CentroidInitialization.LINEAR", "linear"),  # tfmot's enum value (a str)
    ],
)
def test_tfmot_centroid_initialization_maps_to_the_same_init(tfmot_init, init):
    model = _tiny_dense_model()
    by_alias = tfc.cluster_weights(model, number_of_clusters=4, cluster_centroids_init=tfmot_init)
    native = tfc.cluster_weights(model, number_of_clusters=4, init=init)
    assert by_alias.get_layer("cluster_fc").init == init
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(by_alias.get_layer("cluster_fc").centroids),
        keras.ops.convert_to_numpy(native.get_layer("cluster_fc").centroids),
    )


def test_random_init_draws_centroids_within_the_weight_range():
    model = _tiny_dense_model()
    kernel = model.get_layer("fc").get_weights()[0]
    layer = tfc.cluster_weights(model, number_of_clusters=5, init="random").get_layer("cluster_fc")
    centroids = keras.ops.convert_to_numpy(layer.centroids)
    assert kernel.min() <= centroids.min() and centroids.max() <= kernel.max()
    assert len(np.unique(keras.ops.convert_to_numpy(layer.clustered_kernel()))) <= 5


def test_cluster_per_channel_is_an_alias_of_per_channel():
    model = _tiny_dense_model()
    layer = tfc.cluster_weights(model, 2, cluster_per_channel=True).get_layer("cluster_fc")
    assert layer.per_channel and tuple(layer.centroids.shape) == (4, 2)


def test_unknown_keyword_names_the_accepted_keywords():
    with pytest.raises(TypeError, match="unknown keyword 'cluster_mode'.*cluster_centroids_init"):
        tfc.cluster_weights(_tiny_dense_model(), 4, cluster_mode="x")


def test_alias_and_native_keyword_together_is_an_error():
    with pytest.raises(TypeError, match="both 'cluster_per_channel'.*and 'per_channel'"):
        tfc.cluster_weights(_tiny_dense_model(), 4, per_channel=True, cluster_per_channel=True)


def test_unknown_init_lists_the_choices():
    with pytest.raises(ValueError, match="init must be one of kmeans\\+\\+, linear, density"):
        tfc.cluster_weights(_tiny_dense_model(), 4, init="uniform")


@pytest.mark.parametrize("count", [np.int32(4), np.int64(4)])
def test_numpy_integer_number_of_clusters_is_accepted(count):
    layer = tfc.clustering.cluster_weights(_tiny_dense_model(), count).get_layer("cluster_fc")
    assert layer.number_of_clusters == 4 and type(layer.number_of_clusters) is int
    assert type(layer.get_config()["number_of_clusters"]) is int


def test_tf_keras_model_gets_the_legacy_route_in_the_error():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(TypeError, match="legacy tf_keras.*TF_USE_LEGACY_KERAS=1"):
        tfc.clustering.cluster_weights(model, number_of_clusters=2)
    with pytest.raises(TypeError, match="legacy tf_keras"):
        tfc.strip_clustering(model)


def test_wrapper_on_first_layer_of_sequential_with_input_shape_trains(digits):
    x = digits.x_train[:64].reshape(-1, 64)
    model = keras.Sequential(
        [
            tfc.clustering.cluster_weights(
                keras.layers.Dense(10, input_shape=[64]), number_of_clusters=3
            ),
            keras.layers.Flatten(),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, digits.y_train[:64], verbose=0)
    kernel = keras.ops.convert_to_numpy(model.layers[0].clustered_kernel())
    assert len(np.unique(kernel)) <= 3


def _tfmot_clustering_names() -> set[str]:
    """dir() of tfmot.clustering.keras, read in a process with tfmot's legacy Keras switched on."""
    pytest.importorskip("tensorflow_model_optimization")
    code = (
        "import tensorflow_model_optimization as t;"
        "print(' '.join(n for n in dir(t.clustering.keras) if not n.startswith('_')))"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_clustering_namespace_has_every_tfmot_name_or_a_reason():
    tfmot_names = _tfmot_clustering_names()
    assert {"cluster_weights", "CentroidInitialization"} <= tfmot_names
    refused = set(tfc.clustering.NOT_PROVIDED)
    for name in tfmot_names - refused:
        assert getattr(tfc.clustering, name) is not None, name
    for name in refused:
        with pytest.raises(AttributeError, match=f"no {name}: "):
            getattr(tfc.clustering, name)
    provided = set(tfc.clustering.__all__)
    assert provided | refused == tfmot_names, "tfcompress.clustering drifted from tfmot's names"


def test_clusterable_layer_with_custom_algorithm_is_refused():
    class Custom(keras.layers.Dense, tfc.clustering.ClusterableLayer):
        def get_clusterable_weights(self):
            return [("kernel", self.kernel)]

        def get_clusterable_algorithm(self, weight_name):
            return object

    layer = tfc.clustering.cluster_weights(Custom(4, name="custom"), 2)
    with pytest.raises(ValueError, match="'custom'.*get_clusterable_algorithm"):
        layer(np.ones((1, 8), "float32"))


def test_custom_clustered_layer_saves_and_loads(tmp_path):
    @keras.saving.register_keras_serializable(package="tests")
    class SavedDense(keras.layers.Dense, tfc.clustering.ClusterableLayer):
        def get_clusterable_weights(self):
            return [("kernel", self.kernel)]

    inputs = keras.Input((8,))
    layer = tfc.clustering.cluster_weights(SavedDense(4), 3)
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "custom.keras")
    with tfc.clustering.cluster_scope():
        loaded = keras.saving.load_model(tmp_path / "custom.keras")
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_tfmot_layer_list_and_wrapper_keywords_are_honoured():
    layers = tfc.clustering.cluster_weights(
        [keras.layers.Dense(4), keras.layers.Conv2D(2, 3)], np.int32(2), name="wrapped"
    )
    assert [type(layer).__name__ for layer in layers] == ["ClusterWeights", "ClusterWeights"]
    assert all(layer.name == "wrapped" and layer.number_of_clusters == 2 for layer in layers)


def test_attention_kernels_cluster_and_keep_k_values_in_the_int8_file(tmp_path):
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(attended)))
    x = rng.normal(0, 1, (32, 6, 8)).astype("float32")
    clustered = tfc.cluster_weights(model, number_of_clusters=4)
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path)(x), clustered(x))
    plain = tfc.strip_clustering(clustered)
    np.testing.assert_allclose(plain(x), clustered(x), atol=1e-5)
    attention = plain.get_layer("attention")
    for part in ("query", "key", "value", "output"):
        kernel = keras.ops.convert_to_numpy(getattr(attention, f"_{part}_dense").kernel)
        assert len(np.unique(kernel)) <= 4, part
    report = tfc.inspect(tfc.convert(plain, "int8", x, per_channel=False))
    assert report.float_ops == []
    kernels = [t.buffer for t in report.tensors if t.is_constant and t.dtype == "INT8"]
    assert len(kernels) >= 5 and all(len(np.unique(k)) <= 4 for k in kernels)


def test_per_channel_leaves_multi_kernel_layers_unclustered_and_says_so():
    inputs = keras.Input((6, 4))
    outputs = keras.layers.Dense(3)(keras.layers.LSTM(4, name="lstm")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match="'lstm' .LSTM. unclustered"):
        clustered = tfc.cluster_weights(model, number_of_clusters=4, per_channel=True)
    assert isinstance(clustered.layers[-1], ClusterWeights)
    assert type(clustered.get_layer("lstm")) is keras.layers.LSTM
    with pytest.raises(ValueError, match="'lstm' .LSTM. has several kernels"):
        tfc.cluster_weights(model, number_of_clusters=4, per_channel=True, layers=["lstm"])
