"""PruneLowMagnitude and prune_low_magnitude: what is wrapped, what passes through, the masks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.pruning import (
    ConstantSparsity,
    PruneLowMagnitude,
    UpdatePruningStep,
    magnitude_mask,
    n_m_mask,
    pruned_layers,
)


def _layer_model(layer: keras.layers.Layer, shape: tuple, dtype: str = "float32") -> keras.Model:
    inputs = keras.Input(shape, dtype=dtype)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        outputs = layer(inputs, inputs)
    else:
        outputs = layer(inputs)
    return keras.Model(inputs, outputs)


KERNEL_LAYERS = [
    (lambda: keras.layers.Dense(8), (6,)),
    (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=8), (6,)),
    (lambda: keras.layers.Conv1D(8, 3), (10, 4)),
    (lambda: keras.layers.Conv2D(8, 3), (6, 6, 4)),
    (lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 2)),
    (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 4)),
    (lambda: keras.layers.SeparableConv2D(8, 3), (6, 6, 4)),
    (lambda: keras.layers.Conv2DTranspose(4, 3), (5, 5, 4)),
    (lambda: keras.layers.MultiHeadAttention(2, 4), (5, 8)),
]


@pytest.mark.parametrize("make, shape", KERNEL_LAYERS)
def test_every_kernel_layer_is_wrapped_and_pruned_to_the_target(make, shape) -> None:
    keras.utils.set_random_seed(0)
    model = _layer_model(make(), shape)
    pruned = tfc.prune_low_magnitude(
        model, schedule=ConstantSparsity(0.75, 0), allocation="uniform"
    )
    (wrapper,) = pruned_layers(pruned)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    # before any update the wrapper computes exactly what the float layer computes
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), 1e-5)
    wrapper.pruning_step.assign(0)
    pruned(x, training=True)
    for kernel, mask in zip(wrapper.kernels, wrapper.masks, strict=True):
        zeros = np.mean(keras.ops.convert_to_numpy(kernel) == 0)
        assert zeros == pytest.approx(0.75, abs=1.0 / np.prod(kernel.shape) + 1e-6)
        assert np.all(
            keras.ops.convert_to_numpy(kernel)[keras.ops.convert_to_numpy(mask) == 0] == 0
        )


def test_embedding_is_pruned() -> None:
    model = _layer_model(keras.layers.Embedding(20, 4), (3,), dtype="int32")
    pruned = tfc.prune_low_magnitude(model, schedule=ConstantSparsity(0.5, 0))
    (wrapper,) = pruned_layers(pruned)
    wrapper.pruning_step.assign(0)
    pruned(np.array([[1, 2, 3]]), training=True)
    assert wrapper.sparsity() == pytest.approx(0.5)


def test_layers_without_kernel_pass_through_untouched() -> None:
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = keras.layers.Normalization(mean=0.5, variance=0.25, name="norm")(x)
    x = x + 1.0  # an op used as a layer
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    pruned = tfc.prune_low_magnitude(model)
    assert sorted(w.layer.name for w in pruned_layers(pruned)) == ["conv", "head"]
    assert {"rescale", "norm", "bn"} <= {layer.name for layer in pruned.layers}
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), 1e-5)


def test_layers_argument_prunes_only_the_named_layers() -> None:
    from tfcompress.models import build_digits_cnn

    pruned = tfc.prune_low_magnitude(build_digits_cnn(width=4), layers=["conv2", "fc1"])
    assert [w.layer.name for w in pruned_layers(pruned)] == ["conv2", "fc1"]


def test_naming_an_unprunable_layer_raises_with_the_fix() -> None:
    from tfcompress.models import build_digits_cnn

    with pytest.raises(ValueError, match=r"'bn1'.*BatchNormalization.*prunable"):
        tfc.prune_low_magnitude(build_digits_cnn(width=4), layers=["bn1"])
    with pytest.raises(ValueError, match="no layer named"):
        tfc.prune_low_magnitude(build_digits_cnn(width=4), layers=["nope"])
    with pytest.raises(ValueError, match="ReLU"):
        tfc.prune_low_magnitude(keras.layers.ReLU())


def test_training_without_update_pruning_step_fails_at_the_first_step() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    pruned = tfc.prune_low_magnitude(model)
    pruned.compile("sgd", "mse")
    with pytest.raises(Exception, match="UpdatePruningStep") as raised:
        pruned.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    # the hint is in the first lines of a short message, not after a graph's stack trace
    assert "UpdatePruningStep" in "\n".join(str(raised.value).splitlines()[:4])
    assert len(str(raised.value)) < 1000


def test_masked_weights_stay_zero_through_training_and_forward_training_flag() -> None:
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, name="fc")(inputs)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    pruned = tfc.prune_low_magnitude(
        model, schedule=ConstantSparsity(0.5, 0, frequency=1000), allocation="uniform"
    )
    pruned.compile(keras.optimizers.Adam(0.05), "mse")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(32, 6)), rng.normal(size=(32, 2))
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    for wrapper in pruned_layers(pruned):
        assert int(wrapper.pruning_step.numpy()) == 7
        assert wrapper.sparsity() == pytest.approx(0.5)
        kernel = keras.ops.convert_to_numpy(wrapper.kernels[0])
        assert np.all(kernel[keras.ops.convert_to_numpy(wrapper.masks[0]) == 0] == 0)
    stripped = tfc.strip_pruning(pruned)
    assert not pruned_layers(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), 1e-5)


def test_wrapper_trainable_weights_are_the_inner_layer_weights() -> None:
    wrapper = PruneLowMagnitude(keras.layers.Dense(3))
    wrapper.build((None, 5))
    assert {id(v) for v in wrapper.trainable_weights} == {
        id(v) for v in wrapper.layer.trainable_weights
    }
    assert len(wrapper.non_trainable_weights) == 3  # mask, threshold, step


def test_n_m_mask_keeps_two_of_every_four_inputs() -> None:
    kernel = np.random.default_rng(3).normal(size=(3, 3, 8, 5)).astype("float32")
    mask = n_m_mask(kernel, 2, 4).numpy().reshape(-1, 5)
    groups = mask.T.reshape(5, -1, 4)
    assert np.all(groups.sum(-1) == 2)
    flat = np.abs(kernel).reshape(-1, 5).T.reshape(5, -1, 4)
    kept_min = np.where(groups == 1, flat, np.inf).min(-1)
    dropped_max = np.where(groups == 0, flat, -np.inf).max(-1)
    assert np.all(kept_min >= dropped_max)


def test_block_mask_drops_whole_blocks() -> None:
    kernel = np.random.default_rng(4).normal(size=(8, 12)).astype("float32")
    mask = magnitude_mask(kernel, 0.5, block_size=(1, 4)).numpy()
    blocks = mask.reshape(8, 3, 4)
    assert np.all(blocks.min(-1) == blocks.max(-1))
    assert mask.mean() == pytest.approx(0.5)


def test_invalid_structured_options_raise() -> None:
    with pytest.raises(ValueError, match="sparsity_n_m"):
        PruneLowMagnitude(keras.layers.Dense(2), sparsity_n_m=(4, 2))
    with pytest.raises(ValueError, match="block_size"):
        PruneLowMagnitude(keras.layers.Dense(2), block_size=(0, 4))
    with pytest.raises(ValueError, match="multiple of M=4"):
        PruneLowMagnitude(keras.layers.Dense(2), sparsity_n_m=(2, 4)).build((None, 6))
    with pytest.raises(TypeError, match="schedule"):
        PruneLowMagnitude(keras.layers.Dense(2), schedule=0.5)
    with pytest.raises(ValueError, match="criterion"):
        PruneLowMagnitude(keras.layers.Dense(2), criterion="random")


def test_a_wrapped_unbuilt_layer_builds_inside_a_sequential_model() -> None:
    model = keras.Sequential(
        [keras.Input((5,)), tfc.prune_low_magnitude(keras.layers.Dense(6)), keras.layers.Dense(2)]
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(7).normal(size=(8, 5))
    model.fit(x, np.zeros((8, 2)), batch_size=8, verbose=0, callbacks=[UpdatePruningStep()])
    assert pruned_layers(model)[0].sparsity() == pytest.approx(0.5)


@pytest.mark.slow
def test_keras_application_with_rescaling_and_ops_is_pruned_and_unchanged_before_training() -> None:
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=4, include_preprocessing=True
    )
    pruned = tfc.prune_low_magnitude(model)
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in pruned.layers)
    wrapped = {type(w.layer).__name__ for w in pruned_layers(pruned)}
    assert {"Conv2D", "DepthwiseConv2D"} <= wrapped
    x = np.random.default_rng(8).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), 1e-5)


def test_custom_layers_with_weights_are_named_when_left_unpruned() -> None:
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 4), name="w")

        def call(self, x):
            return x @ self.w

    inputs = keras.Input((8,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(Scale(name="scale")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.warns(
        UserWarning, match=r"'scale' \(Scale\) hold weights that are not pruned.*PrunableLayer"
    ):
        pruned = tfc.prune_low_magnitude(model)
    assert isinstance(pruned.get_layer("prune_low_magnitude_out"), tfc.pruning.PruneLowMagnitude)
    clustered = tfc.cluster_weights(model, 4)  # a Lambda is copied, not deserialized
    assert clustered.get_layer("double").function(np.float32(1.0)) == 2.0
