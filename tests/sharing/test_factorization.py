"""Low-rank factorization: SVD-exact at full rank, smaller at lower rank, converts and saves."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(48, activation="relu", name="hidden")(x)
    x = keras.layers.Reshape((1, 1, 48))(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pointwise")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))


def test_full_rank_factorization_reproduces_the_model(digits):
    model = _mlp()
    factorized, report = tfc.factorize(model, rank=10, layers=["out"])
    # rank 10 is the full rank of a 32x10 kernel: the product is the kernel itself
    np.testing.assert_allclose(
        factorized.predict(digits.x_test, verbose=0),
        model.predict(digits.x_test, verbose=0),
        atol=1e-4,
    )
    assert report.layers[0].energy_kept == pytest.approx(1.0)


def test_parameter_ratio_halves_dense_and_pointwise_parameters(digits):
    model = _mlp()
    factorized, report = tfc.factorize(model, parameter_ratio=0.5)
    assert {layer.name for layer in report.layers} == {"hidden", "pointwise", "out"}
    for layer in report.layers:
        assert layer.parameters_after <= 0.5 * layer.parameters_before
        assert layer.macs_after < layer.macs_before
    assert report.model_parameters_after == factorized.count_params() < model.count_params()
    assert report.parameters_saved == model.count_params() - factorized.count_params()


def test_energy_picks_the_smallest_rank_keeping_that_energy():
    model = _mlp()
    _, report = tfc.factorize(model, energy=0.9, layers=["hidden"])
    kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    singular = np.linalg.svd(kernel, compute_uv=False)
    share = np.cumsum(singular**2) / np.sum(singular**2)
    rank = report.layers[0].rank
    assert share[rank - 1] >= 0.9 > share[rank - 2]


def test_factorized_model_converts_saves_and_fine_tunes(digits, tmp_path):
    model = _mlp()
    factorized, _ = tfc.factorize(model, parameter_ratio=0.5)
    factorized.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    factorized.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    path = tmp_path / "factorized.keras"
    factorized.save(path)
    loaded = keras.saving.load_model(path)
    expected = factorized.predict(digits.x_test, verbose=0)
    np.testing.assert_array_equal(loaded.predict(digits.x_test, verbose=0), expected)
    flatbuffer = tfc.convert(loaded, "float32")
    np.testing.assert_allclose(
        tfc.converter.run_tflite(flatbuffer, digits.x_test), expected, atol=1e-4
    )


@pytest.mark.parametrize("rank", [0, -3])
def test_rank_must_be_positive(rank):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        tfc.factorize(_mlp(), rank=rank)


def test_rank_larger_than_the_layer_allows_names_the_layer():
    with pytest.raises(ValueError, match="rank 11 is larger than layer 'out' allows.*at most 10"):
        tfc.factorize(_mlp(), rank=11, layers=["out"])


def test_exactly_one_rank_rule_is_required():
    with pytest.raises(ValueError, match="exactly one"):
        tfc.factorize(_mlp())
    with pytest.raises(ValueError, match="exactly one"):
        tfc.factorize(_mlp(), rank=2, energy=0.5)


def test_layer_that_cannot_be_factorized_is_named():
    with pytest.raises(ValueError, match="'pointwise'|Layer 'flatten"):
        model = _mlp()
        tfc.factorize(model, rank=2, layers=[model.layers[1].name])
