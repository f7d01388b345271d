"""Spreading the schedule's sparsity over the kernels: `prune_low_magnitude(..., allocation=...)`."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.data import load_digits
from tfcompress.pruning.allocation import ALLOCATIONS, DEFAULT_ALLOCATION, kernel_targets


def _separable_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


@functools.cache
def _pruned_once(allocation: str) -> keras.Model:
    """Wrapped with ConstantSparsity(0.8, 0), trained one step on digits (the masks are set).

    Cached: one fit per allocation for the whole file; tests must not modify the model.
    """
    digits = load_digits()
    pruned = tfc.prune_low_magnitude(
        _separable_model(),
        schedule=tfc.pruning.ConstantSparsity(0.8, begin_step=0),
        allocation=allocation,
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(digits.x_train[:32], digits.y_train[:32], batch_size=32, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])  # fmt: skip
    return pruned


def _layer_sparsity(model: keras.Model) -> dict[str, float]:
    return {w.layer.name: w.sparsity() for w in tfc.pruning.pruned_layers(model)}


def _overall_kernel_sparsity(model: keras.Model) -> float:
    kernels = [
        keras.ops.convert_to_numpy(v) for v in model.weights if v.path.endswith("kernel")
    ]  # fmt: skip
    return sum(float((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_each_allocation_reaches_the_overall_sparsity_within_one_percent(allocation):
    stripped = tfc.strip_pruning(_pruned_once(allocation))
    assert abs(_overall_kernel_sparsity(stripped) - 0.8) <= 0.01


def test_uniform_prunes_every_kernel_to_the_schedule_sparsity():
    sparsities = _layer_sparsity(_pruned_once("uniform"))
    assert all(abs(s - 0.8) <= 0.01 for s in sparsities.values()), sparsities


def test_dense_depthwise_keeps_depthwise_kernels_dense_and_prunes_the_rest_harder():
    sparsities = _layer_sparsity(_pruned_once("dense_depthwise"))
    assert sparsities.pop("dw") == 0.0
    assert all(s > 0.8 for s in sparsities.values()), sparsities


def test_separable_conv_depthwise_half_stays_dense_with_dense_depthwise():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.SeparableConv2D(16, 3, name="sep")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(keras.layers.Flatten()(x)))
    pruned = tfc.prune_low_magnitude(
        model, schedule=tfc.pruning.ConstantSparsity(0.5, 0), allocation="dense_depthwise"
    )
    scales = {w.layer.name: w.density_scales for w in tfc.pruning.pruned_layers(pruned)}
    depthwise_scale, pointwise_scale = scales["sep"]
    assert depthwise_scale == pytest.approx(2.0)  # 1 - (1 - 0.5) * 2 = 0: dense
    assert pointwise_scale < 1.0 and scales["head"][0] < 1.0


def test_erk_keeps_small_kernels_denser_than_large_ones():
    sparsities = _layer_sparsity(_pruned_once("erk"))
    # the 3x3x1x8 stem and the 3x3 depthwise kernel are the smallest, fc (32x32) the largest
    assert sparsities["stem"] < sparsities["fc"]
    assert sparsities["dw"] < sparsities["pw"]


def test_lamp_keeps_the_largest_weight_of_every_kernel():
    kernels = [np.linspace(0.01, 1, 64).reshape(8, 8), np.full((100, 100), 5.0)]
    targets = kernel_targets(kernels, [False, False], 0.99, "lamp")
    assert targets[0] < 1.0 and targets[1] < 1.0
    overall = sum(t * k.size for t, k in zip(targets, kernels, strict=True)) / 10_064
    assert overall == pytest.approx(0.99, abs=1e-4)


def test_global_prunes_the_smallest_magnitudes_of_the_whole_model_first():
    kernels = [np.full((10, 10), 0.1), np.full((10, 10), 1.0)]
    assert kernel_targets(kernels, [False, False], 0.25, "global") == [0.5, 0.0]


def test_strip_and_int8_keep_the_sparsity_of_the_default_allocation(digits):
    stripped = tfc.strip_pruning(_pruned_once(DEFAULT_ALLOCATION))
    flatbuffer = tfc.convert(stripped, "int8", digits.x_train[:50])
    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None and t.buffer.dtype == np.int8 and len(t.shape) >= 2
    ]
    int8_sparsity = sum(float((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    assert abs(int8_sparsity - 0.8) <= 0.01
    float_logits = stripped.predict(digits.x_test[:64], verbose=0)
    int8_accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test[:64], float_logits.argmax(-1))
    assert int8_accuracy >= 0.9  # the int8 file computes what the stripped Keras model does


def test_allocation_survives_get_config_and_keras_round_trip(tmp_path):
    pruned = _pruned_once("lamp")
    scales = {w.layer.name: w.density_scales for w in tfc.pruning.pruned_layers(pruned)}
    assert any(s != [1.0] for s in scales.values())
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert {w.layer.name: w.density_scales for w in tfc.pruning.pruned_layers(loaded)} == scales
    wrapper = tfc.pruning.pruned_layers(pruned)[0]
    again = tfc.pruning.PruneLowMagnitude.from_config(wrapper.get_config())
    assert again.density_scales == wrapper.density_scales
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )


def test_default_allocation_is_documented_in_prune_low_magnitude():
    assert f'Default `"{DEFAULT_ALLOCATION}"`' in tfc.prune_low_magnitude.__doc__


def test_unknown_allocation_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="allocation must be one of 'uniform'.*got 'lamb'"):
        tfc.prune_low_magnitude(_separable_model(), allocation="lamb")


def test_bad_density_scales_name_the_layer_and_the_kernels():
    with pytest.raises(ValueError, match="Layer 'd'.*one number >= 0 per prunable kernel.*kernel"):
        tfc.pruning.PruneLowMagnitude(keras.layers.Dense(2, name="d"), density_scales=[1.0, 2.0])


def test_schedule_without_a_final_sparsity_needs_uniform():
    class Step(tfc.pruning.PruningSchedule):
        begin_step, end_step, frequency = 0, -1, 1

        def __call__(self, step):
            return self._should_update(step), 0.5

        def get_config(self):
            return {}

    with pytest.raises(ValueError, match="final sparsity.*allocation='uniform'"):
        tfc.prune_low_magnitude(_separable_model(), schedule=Step(), allocation="erk")
    model = tfc.prune_low_magnitude(_separable_model(), schedule=Step(), allocation="uniform")
    assert all(w.density_scales == [1.0] for w in tfc.pruning.pruned_layers(model))


def test_n_m_sparsity_ignores_the_allocation():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Dense(16)(inputs)))
    pruned = tfc.prune_low_magnitude(model, sparsity_n_m=(2, 4), allocation="erk")
    assert all(w.density_scales == [1.0] for w in tfc.pruning.pruned_layers(pruned))
