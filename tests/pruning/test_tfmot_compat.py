"""tfmot's keyword names and meanings: aliases, numpy scalars, m_by_n, block pooling, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.pruning import ConstantSparsity, PolynomialDecay, PruneLowMagnitude


def _dense_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc")])


def _pruned_kernel(wrapper: PruneLowMagnitude) -> np.ndarray:
    wrapper.update_masks(wrapper.schedule(0)[1])
    return keras.ops.convert_to_numpy(wrapper.kernels[0] * wrapper.masks[0])


def test_schedules_take_numpy_scalars_as_the_pruning_guide_passes_them() -> None:
    schedule = PolynomialDecay(
        np.float32(0.5),
        np.float64(0.8),
        begin_step=np.int64(0),
        end_step=np.int32(20),
        power=np.int32(3),
        frequency=np.int16(5),
    )
    assert schedule.get_config() == {
        "initial_sparsity": 0.5,
        "final_sparsity": pytest.approx(0.8),
        "begin_step": 0,
        "end_step": 20,
        "power": 3,
        "frequency": 5,
    }
    assert type(schedule.end_step) is int and schedule.sparsity_at(20) == pytest.approx(0.8)
    assert ConstantSparsity(np.float32(0.25), np.array(3)).begin_step == 3
    with pytest.raises(ValueError, match="end_step must be an integer"):
        PolynomialDecay(0.1, 0.5, 0, np.float32(10.5))


def test_native_api_aliases_pruning_schedule_and_refuses_tfmot_meanings() -> None:
    schedule = ConstantSparsity(0.5, 0)
    pruned = tfc.prune_low_magnitude(_dense_model(), pruning_schedule=schedule)
    assert pruned.layers[0].schedule == schedule
    with pytest.raises(ValueError, match=r"M ZEROS.*sparsity_n_m=\(N - M, N\)"):
        tfc.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(1, 4))
    with pytest.raises(ValueError, match="tfc.sparsity.prune_low_magnitude"):
        tfc.prune_low_magnitude(_dense_model(), pruning_policy=object())
    with pytest.raises(ValueError, match="pass the schedule once"):
        tfc.prune_low_magnitude(_dense_model(), schedule, pruning_schedule=schedule)
    with pytest.raises(TypeError, match="unexpected keyword argument.*tfc.sparsity"):
        tfc.prune_low_magnitude(_dense_model(), cluster_centroids_init="linear")


def test_sparsity_m_by_n_counts_zeros_as_tfmot_and_sparsity_n_m_counts_kept() -> None:
    tfmot_style = tfc.sparsity.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(1, 4))
    native = tfc.prune_low_magnitude(_dense_model(), sparsity_n_m=(1, 4))
    tfmot_kernel = _pruned_kernel(tfmot_style.layers[0])
    native_kernel = _pruned_kernel(native.layers[0])
    # groups of 4 consecutive inputs of each output: tfmot (1, 4) = one zero, ours (1, 4) = one kept
    assert np.all(np.sum(tfmot_kernel.T.reshape(-1, 4) == 0, axis=1) == 1)
    assert np.all(np.sum(native_kernel.T.reshape(-1, 4) != 0, axis=1) == 1)
    with pytest.raises(ValueError, match="M zeros in every N"):
        tfc.sparsity.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(4, 4))


def test_sparsity_api_prunes_every_layer_to_the_schedule_as_tfmot() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, name="a"), keras.layers.Dense(4, name="b")]
    )
    model.layers[1].kernel.assign(model.layers[1].kernel * 100.0)  # LAMP would spare it
    pruned = tfc.sparsity.prune_low_magnitude(
        model, pruning_schedule=tfc.sparsity.ConstantSparsity(0.75, 0)
    )
    sparsities = []
    for wrapper in tfc.pruning.pruned_layers(pruned):
        sparsities.append(float(np.mean(_pruned_kernel(wrapper) == 0)))
    assert sparsities == [pytest.approx(0.75), pytest.approx(0.75)]


def test_block_pooling_type_max_and_avg_choose_different_blocks_and_round_trip(tmp_path) -> None:
    # block (0, 1) has one large weight (max wins), block (2, 3) two medium ones (mean wins)
    kernel = np.array([[4.0], [0.0], [2.5], [2.5]], "float32")
    avg = tfc.pruning.magnitude_mask(kernel, 0.5, (2, 1), "AVG").numpy()[:, 0].tolist()
    top = tfc.pruning.magnitude_mask(kernel, 0.5, (2, 1), "MAX").numpy()[:, 0].tolist()
    assert avg == [0.0, 0.0, 1.0, 1.0] and top == [1.0, 1.0, 0.0, 0.0]
    model = tfc.sparsity.prune_low_magnitude(
        _dense_model(), block_size=(4, 1), block_pooling_type="MAX"
    )
    path = str(tmp_path / "max.keras")
    model.save(path)
    with tfc.sparsity.prune_scope():
        loaded = keras.models.load_model(path)
    assert loaded.layers[0].block_pooling_type == "MAX" and loaded.layers[0].block_size == (4, 1)
    with pytest.raises(ValueError, match="block_pooling_type.*'AVG'.*'MAX'"):
        tfc.sparsity.prune_low_magnitude(_dense_model(), block_pooling_type="MIN")


@keras.saving.register_keras_serializable(package="tests")
class PrunedBiasDense(keras.layers.Dense, tfc.sparsity.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel, self.bias]


def test_prunable_layer_prunes_its_weights_and_saves(tmp_path) -> None:
    model = keras.Sequential(
        [
            tfc.sparsity.prune_low_magnitude(PrunedBiasDense(8, input_shape=(16,))),
            keras.layers.Flatten(),
        ]
    )
    model.compile("adam", "mse")
    model.fit(
        np.ones((8, 16)), np.ones((8, 8)), verbose=0, callbacks=[tfc.sparsity.UpdatePruningStep()]
    )
    assert [tuple(m.shape) for m in model.layers[0].masks] == [(16, 8), (8,)]
    path = str(tmp_path / "prunable.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    stripped = tfc.sparsity.strip_pruning(loaded)
    assert np.mean(stripped.layers[0].bias.numpy() == 0) == pytest.approx(0.5)

    class NotImplemented_(keras.layers.Dense, tfc.sparsity.PrunableLayer):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NotImplemented_(2)


def test_get_model_sparsity_counts_wrapped_and_stripped_kernels_alike() -> None:
    pruned = tfc.sparsity.prune_low_magnitude(_dense_model())
    pruned.layers[0].update_masks(0.5)
    assert tfc.sparsity.get_model_sparsity(pruned) == pytest.approx(0.5)
    assert tfc.sparsity.get_model_sparsity(tfc.sparsity.strip_pruning(pruned)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no prunable kernel"):
        tfc.sparsity.get_model_sparsity(keras.Sequential([keras.Input((2,)), keras.layers.ReLU()]))


def test_legacy_tf_keras_model_gets_the_legacy_route() -> None:
    import tf_keras

    legacy = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(4,))])
    for prune in (tfc.prune_low_magnitude, tfc.sparsity.prune_low_magnitude):
        with pytest.raises(TypeError, match="legacy tf_keras.*TF_USE_LEGACY_KERAS=1.*Keras 3"):
            prune(legacy)
    with pytest.raises(TypeError, match="legacy tf_keras"):
        tfc.sparsity.prune_low_magnitude(legacy.layers[0])


def test_callbacks_take_tfmot_signatures_and_summaries_refuse_tensorboard_options(tmp_path) -> None:
    model = tfc.sparsity.prune_low_magnitude(_dense_model())
    step = tfc.sparsity.UpdatePruningStep()
    step.set_model(model)
    step.on_train_batch_begin(batch=-1)  # custom loop without on_train_begin
    step.on_epoch_end(batch=-1)
    assert int(model.layers[0].pruning_step.numpy()) == 0
    with pytest.raises(ValueError, match="TensorBoard"):
        tfc.sparsity.PruningSummaries(str(tmp_path), profile_batch=2)
    with pytest.raises(ValueError, match="set_model"):
        tfc.sparsity.UpdatePruningStep().on_train_begin()


def test_xnnpack_policy_names_the_unsupported_layer() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="three_by_three")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match="'three_by_three' \\(Conv2D\\) is not supported"):
        tfc.sparsity.prune_low_magnitude(
            model, pruning_policy=tfc.sparsity.PruneForLatencyOnXNNPack()
        )
    with pytest.raises(ValueError, match="3x3 Conv2D with stride"):
        tfc.sparsity.prune_low_magnitude(
            _dense_model(), pruning_policy=tfc.sparsity.PruneForLatencyOnXNNPack()
        )
