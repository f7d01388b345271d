"""prune_low_magnitude on subclassed models: traced into wrappers, trained, stripped, converted."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.harness.subclassed import TinyNet, WithCustom, built
from tests.outputs import inference
from tfcompress.data import Split
from tfcompress.pruning import PruneLowMagnitude, UpdatePruningStep
from tfcompress.tflite.runtime import run_tflite


def _wrapped(model: keras.Model) -> list[PruneLowMagnitude]:
    return [layer for layer in model.layers if isinstance(layer, PruneLowMagnitude)]


def _norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="session")
def pruned_subclassed(digits: Split) -> tuple[keras.Model, list]:
    """A subclassed CNN pruned to 50% over a few steps; and its batch norms' means before."""
    keras.utils.set_random_seed(0)
    pruned = tfc.prune_low_magnitude(
        built(TinyNet(), (1, 8, 8, 1)), tfc.pruning.ConstantSparsity(0.5, 0, frequency=2)
    )
    means = [norm.moving_mean.numpy().copy() for norm in _norms(pruned)]
    # eager: two steps cost less than tracing a training function
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile("adam", loss, run_eagerly=True)
    x, y = digits.x_train[:128], digits.y_train[:128]
    pruned.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[UpdatePruningStep()])
    return pruned, means


def test_every_kernel_is_wrapped_and_batch_norm_trains(pruned_subclassed) -> None:
    pruned, means_before = pruned_subclassed
    assert len(_wrapped(pruned)) == 4  # the stem, the two blocks' convolutions, the head
    # call(training=False) hands False on by default; the traced graph leaves it to fit
    norms = _norms(pruned)
    assert len(norms) == 2
    assert all(
        not np.allclose(norm.moving_mean.numpy(), before)
        for norm, before in zip(norms, means_before, strict=True)
    )


def test_stripped_model_is_half_zeros_and_its_int8_file_follows_it(
    digits: Split, pruned_subclassed
) -> None:
    stripped = tfc.strip_pruning(pruned_subclassed[0])
    assert tfc.sparsity.get_model_sparsity(stripped) == pytest.approx(0.5, abs=0.01)
    flatbuffer = tfc.convert(stripped, "int8", digits.x_train[:64])
    assert tfc.inspect(flatbuffer).float_ops == []
    held_out = digits.x_test[:200]
    agreement = inference(stripped, held_out).argmax(1) == run_tflite(flatbuffer, held_out).argmax(
        1
    )
    assert np.mean(agreement) >= 0.97


def test_saves_and_loads_with_the_same_outputs(tmp_path, digits: Split, pruned_subclassed) -> None:
    pruned = pruned_subclassed[0]
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        inference(loaded, digits.x_test[:32]), inference(pruned, digits.x_test[:32])
    )
    assert [w.sparsity() for w in _wrapped(loaded)] == [w.sparsity() for w in _wrapped(pruned)]


def test_a_functional_model_around_a_subclassed_one_is_pruned(digits: Split) -> None:
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, built(TinyNet(), (1, 8, 8, 1))(inputs))
    pruned = tfc.prune_low_magnitude(outer, tfc.pruning.ConstantSparsity(0.5, 0))
    assert len(_wrapped(pruned)) == 4
    UpdatePruningStep().set_model(pruned)  # finds the wrappers: fit would run


def test_custom_layer_with_the_protocol_is_pruned() -> None:
    pruned = tfc.prune_low_magnitude(
        built(WithCustom(prunable=True), (1, 4)), tfc.pruning.ConstantSparsity(0.5, 0)
    )
    wrappers = _wrapped(pruned)
    assert [type(w.layer).__name__ for w in wrappers] == ["Dense", "PrunableScale", "Dense"]
    assert [tuple(mask.shape) for mask in wrappers[1].masks] == [(8, 8)]  # its gamma


def test_custom_layer_without_the_protocol_is_named() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = tfc.prune_low_magnitude(built(WithCustom(), (1, 4)))
    assert any("'my_scale' (Scale)" in str(w.message) for w in caught)
    assert [type(w.layer).__name__ for w in _wrapped(pruned)] == ["Dense", "Dense"]
