"""Channel pruning to a LiteRT latency or MACs target, and what it leaves whole."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.models import build_digits_cnn
from tfcompress.pruning import prune_channels
from tfcompress.pruning.latency import bisect_goal, layer_macs


def _branchy_model() -> keras.Model:
    """A residual group, a Concatenate and a Flatten: what channel pruning must leave whole."""
    inputs = keras.Input((8, 8, 1))
    stem = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    body = keras.layers.Conv2D(16, 3, padding="same", name="body")(stem)
    res = keras.layers.Add(name="residual")([stem, body])
    wide = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="wide")(res)
    side = keras.layers.Conv2D(8, 1, name="side")(res)
    cat = keras.layers.Concatenate(name="cat")([wide, side])
    squeeze = keras.layers.Conv2D(12, 1, activation="relu", name="squeeze")(cat)
    flat = keras.layers.Flatten(name="flat")(squeeze)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(flat))


def bytes_as_ms(flatbuffer: bytes) -> float:
    """A deterministic stand-in for a device's timer: the file's size in kilobytes.

    It shrinks with every channel removed, as latency does, so the search is tested exactly,
    whatever else the machine runs; LiteRT's own timing is the default `latency_of`.
    """
    return len(flatbuffer) / 1000.0


@pytest.fixture(scope="session")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_digits_cnn(width=32)


def test_macs_target_is_met_and_residual_group_stays_aligned() -> None:
    model = _branchy_model()
    small, report = prune_channels(model, macs_ratio=0.7, return_report=True)
    assert report.reached <= 0.7
    assert report.pruned_macs == sum(layer_macs(layer) for layer in small.layers)
    assert report.pruned_macs <= 0.7 * report.dense_macs
    # the residual group (stem + body) is pruned as one: both keep the same channels
    assert small.get_layer("stem").filters == small.get_layer("body").filters
    assert "stem, body" in report.kept
    # Concatenate and Flatten mix channel positions: their producers are reported left whole
    assert "Concatenate 'cat'" in report.left_whole["wide"]
    assert "Flatten 'flat'" in report.left_whole["squeeze"]
    assert small.get_layer("wide").filters == 24
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        run_tflite(tfc.convert(small), x), small.predict(x, verbose=0), atol=1e-4
    )


def test_latency_target_is_met_on_the_measured_files(cnn: keras.Model) -> None:
    small, report = prune_channels(
        cnn, latency_ratio=0.75, latency_of=bytes_as_ms, return_report=True
    )
    assert report.pruned_ms == pytest.approx(report.reached * report.dense_ms)
    assert report.reached <= 0.75
    assert small.count_params() < cnn.count_params()
    # the search lands near the target, not at maximum pruning (every group at max_fraction)
    most = {
        name: max(1, total - min(int(0.9 * total), total - 1))
        for name, (_, total) in report.kept.items()
    }
    assert any(kept > most[name] for name, (kept, _) in report.kept.items())
    # the report is measured: the pruned model's file measures exactly what it says
    assert bytes_as_ms(tfc.convert(small)) == pytest.approx(report.pruned_ms)
    assert bytes_as_ms(tfc.convert(cnn)) == pytest.approx(report.dense_ms)


def test_int8_latency_target_is_met_on_the_int8_file(cnn: keras.Model) -> None:
    x = np.random.default_rng(2).random((32, 8, 8, 1)).astype("float32")
    small, report = prune_channels(
        cnn,
        latency_ratio=0.75,
        latency_mode="int8",
        representative_data=x,
        latency_of=bytes_as_ms,
        return_report=True,
    )
    assert report.latency_mode == "int8"
    assert report.reached <= 0.75 and report.pruned_ms < report.dense_ms
    assert small.count_params() < cnn.count_params()
    # the file it was timed as: full integer, the same outputs as the pruned Keras model's int8
    flat = tfc.convert(small, "int8", x)
    assert tfc.inspect(flat).float_ops == []
    assert run_tflite(flat, x[:2]).shape == (2, 10)


def test_unreachable_targets_say_the_best_reached(cnn: keras.Model) -> None:
    with pytest.raises(ValueError, match=r"best reached is 0\.\d+ of its MACs"):
        prune_channels(cnn, macs_ratio=0.001)
    with pytest.raises(ValueError, match=r"cannot be reached.*best reached is [\d.]+ ms"):
        prune_channels(cnn, latency_ms=1e-6)


def test_bad_target_arguments_are_named(cnn: keras.Model) -> None:
    with pytest.raises(ValueError, match="one target; got fraction, macs_ratio"):
        prune_channels(cnn, 0.5, macs_ratio=0.5)
    with pytest.raises(ValueError, match=r"latency_ratio must be in \(0, 1\]"):
        prune_channels(cnn, latency_ratio=1.5)
    with pytest.raises(ValueError, match="latency_mode must be one of .*'int8'"):
        prune_channels(cnn, latency_ratio=0.5, latency_mode="int4")
    inputs = keras.Input((4,))
    dense_only = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
    with pytest.raises(ValueError, match="out \\(reaches a model output\\)"):
        prune_channels(dense_only, macs_ratio=0.5)


def test_pruned_model_composes_with_qat_and_int8(cnn: keras.Model) -> None:
    small = prune_channels(cnn, macs_ratio=0.5)
    x = np.random.default_rng(1).random((32, 8, 8, 1)).astype("float32")
    qat = tfc.quantize_model(small)
    flat = tfc.convert(qat, "int8", x)
    assert tfc.inspect(flat).float_ops == []
    dense_flat = tfc.convert(tfc.quantize_model(cnn), "int8", x)
    assert len(flat) < len(dense_flat)


def test_macs_target_lands_near_the_target_not_below_it(cnn: keras.Model) -> None:
    for ratio in (0.3, 0.55, 0.8):
        reached = prune_channels(cnn, macs_ratio=ratio, return_report=True).report.reached
        assert 0.9 * ratio <= reached <= ratio


def test_noisy_latency_search_bisects_instead_of_pruning_everything() -> None:
    # a cost model 30% optimistic with +-8% timing noise: stepping down alone overshoots; the
    # bisection between the goal that missed and the one that met brings it back near 0.55
    rng = np.random.default_rng(3)

    def timed(goal: float) -> tuple[float, float]:
        return goal, 1.3 * goal * (1.0 + rng.uniform(-0.08, 0.08))

    found = bisect_goal(timed, goal=0.55, target=0.55, dense_goal=1.0, most_goal=0.15)
    assert found.keep is not None
    assert 0.45 <= found.measured <= 0.55
    assert found.keep > 0.15 / 1.0 + 0.1  # well above the most pruned goal
    assert found.rounds <= 7
    missed = bisect_goal(timed, goal=0.1, target=0.1, dense_goal=1.0, most_goal=0.15)
    assert missed.keep is None and missed.best_ms > 0.1
