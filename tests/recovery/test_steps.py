"""The recovery steps never make the file worse, and AdaRound's crashes stay in their process."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.recovery.steps import optimize_model
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.fidelity import measure_fidelity

from .conftest import build_dwsep


@pytest.fixture(scope="module")
def saturated() -> tuple[keras.Model, np.ndarray]:
    """A ReLU6 net whose activations sit far above 6: turning its ReLU6 into ReLU breaks it."""
    keras.utils.set_random_seed(1)
    model = build_dwsep(relu6=True)
    stem = model.get_layer("stem")
    stem.set_weights([stem.get_weights()[0] * 40.0])
    x = np.random.default_rng(1).random((160, 8, 8, 1)).astype("float32")
    return model, x


def test_a_step_that_makes_the_file_worse_is_dropped_with_both_figures(saturated) -> None:
    model, x = saturated
    harmful = [("equalize", {"relu6": "replace"})]  # changes the float function
    optimized, report = optimize_model(model, harmful, x, return_report=True)
    assert report.dropped == ["equalize"] and report.held_out_rows == 40
    check = report.checks[0]
    assert check.score_with < check.score_without
    # without the step the model computes what the float model computes (BatchNorm folded)
    np.testing.assert_allclose(optimized(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-4)
    with pytest.warns(UserWarning, match=r"'equalize' dropped.*32 held-out rows.*LiteRT") as got:
        flatbuffer = tfc.convert(model, "int8", x, num_samples=128, optimize=harmful)
    message = next(str(w.message) for w in got if "dropped" in str(w.message))
    assert message.count("top-1 agreement") == 2  # with the step and without it
    assert optimized is model and report.kept == []  # no step confirmed: the model as given
    plain = tfc.convert(model, "int8", x, num_samples=128)
    assert bytes(flatbuffer) == bytes(plain)  # plain PTQ's file, byte for byte
    kept = measure_fidelity(flatbuffer, model, x[128:]).outputs[0]
    forced = optimize_model(model, harmful, check=False)
    forced_file = tfc.convert(forced, "int8", x[:128], num_samples=128)
    worse = measure_fidelity(forced_file, model, x[128:]).outputs[0]
    assert (kept.agreement, kept.sqnr_db) > (worse.agreement, worse.sqnr_db)


def test_too_few_rows_to_hold_out_is_said_not_hidden(saturated) -> None:
    model, x = saturated
    with pytest.warns(UserWarning, match=r"'bias_correction' not checked.*at least 128 rows"):
        optimize_model(model, ["fold_bn", "bias_correction"], x[:64])


def test_equalization_is_checked_on_the_calibration_rows_when_none_can_be_held_out(saturated):
    model, x = saturated  # 64 rows: too few to hold out 32
    harmful = [("equalize", {"relu6": "replace"}), "bias_correction"]
    with pytest.warns(UserWarning) as got:
        optimized, report = optimize_model(model, harmful, x[:64], return_report=True)
    said = [str(w.message) for w in got]
    assert any("'equalize' dropped: 64 calibration rows" in m for m in said), said
    assert any("'bias_correction' not checked" in m for m in said), said  # it fits the rows
    assert not any("'equalize' not checked" in m for m in said), said
    assert report.dropped == ["equalize"] and report.held_out_rows == 0
    assert report.kept == ["fold_bn", "bias_correction"] and optimized is not model


@pytest.mark.skipif(os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0", reason="oneDNN is off")
def test_adaround_crash_inside_tensorflow_is_a_conversion_error_and_the_process_lives_on():
    # TF 2.21's oneDNN filter gradient of this 1x1 stride-2 convolution segfaults
    inputs = keras.Input((60, 60, 8))
    x = keras.layers.Conv2D(1, 1, strides=2, padding="same", name="down")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="downsampler")
    data = np.random.default_rng(0).random((8, 60, 60, 8), dtype=np.float32)
    try:
        tfc.convert(model, "int8", data, optimize=[("adaround", {"iterations": 2})])
    except ConversionError as error:
        message = str(error)
    else:
        pytest.skip("this CPU's oneDNN kernels do not crash on the shape")
    assert "'adaround'" in message and "'downsampler'" in message and "unharmed" in message
    assert "TF_ENABLE_ONEDNN_OPTS=0" in message and "SIG" in message
    flatbuffer = tfc.convert(model, "int8", data)  # the same process goes on converting
    assert tfc.inspect(flatbuffer).float_ops == []


def _prelu_separable_net() -> keras.Model:
    """Conv-BN-PReLU, SeparableConv-BN-ReLU, a Conv2DTranspose the steps cannot handle, Dense."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="stem_prelu")(x)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    x = keras.layers.ReLU(name="sep_relu")(keras.layers.BatchNormalization(name="sep_bn")(x))
    x = keras.layers.Conv2DTranspose(4, 3, name="up")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="head")(x))
    rng = np.random.default_rng(2)
    prelu = model.get_layer("stem_prelu")
    prelu.set_weights([rng.uniform(0.1, 0.5, prelu.get_weights()[0].shape).astype("float32")])
    for name in ("stem_bn", "sep_bn"):  # channels of very different ranges, as trained nets have
        gamma, beta, mean, variance = model.get_layer(name).get_weights()
        gamma = gamma * rng.uniform(0.05, 4.0, gamma.shape).astype("float32")
        model.get_layer(name).set_weights([gamma, beta, mean, variance])
    return model


def test_equalization_pairs_through_prelu_and_both_halves_of_a_separable_conv() -> None:
    model = _prelu_separable_net()
    flat, report = tfc.recovery.equalize(model, return_report=True)
    assert report.pairs == [("stem", "sep_depthwise"), ("sep_depthwise", "sep_pointwise")]
    x = np.random.default_rng(0).random((8, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-4)

    def spread(network: keras.Model) -> float:  # of the stem's output-channel ranges
        ranges = np.abs(network.get_layer("stem").get_weights()[0]).max(axis=(0, 1, 2))
        return float(ranges.max() / ranges.min())

    assert spread(flat) < spread(tfc.recovery.fold_batch_norms(model)) / 2


def test_each_step_names_the_layers_it_leaves_alone() -> None:
    model = _prelu_separable_net()
    x = np.random.default_rng(0).random((16, 12, 12, 3)).astype("float32")
    steps = ["equalize", ("adaround", {"iterations": 0}), "bias_correction"]
    with pytest.warns(UserWarning) as caught:
        optimized = optimize_model(model, steps, x, check=False)
    texts = [str(w.message) for w in caught if "leaves these layers" in str(w.message)]
    assert len(texts) == 3 and all("'up' (Conv2DTranspose" in text for text in texts)
    assert {"sep_depthwise", "sep_pointwise"} <= {layer.name for layer in optimized.layers}
    np.testing.assert_allclose(optimized(x), model(x), atol=0.05 * float(np.ptp(model(x))))


def test_int16x8_steps_are_checked_on_the_file_convert_makes_of_a_prelu_net() -> None:
    # TF's int16x8 quantizer has no PReLU: convert rewrites it, and so must the check's files
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))
    x = np.random.default_rng(2).random((160, 8, 8, 1)).astype("float32")
    flatbuffer = tfc.convert(model, "int16x8", x, num_samples=96, optimize=["bias_correction"])
    assert "INT16" in {tensor.dtype for tensor in tfc.inspect(flatbuffer).tensors}


def test_the_optimized_file_calibrates_on_the_rows_plain_ptq_calibrates_on(saturated) -> None:
    from tfcompress.recovery.steps import prepare_for_convert

    model, x = saturated  # 160 rows, fewer than num_samples: the last quarter is held out
    options = {"mode": "int8", "per_channel": True, "int4_weights": False}
    _, data, _ = prepare_for_convert(model, ["bias_correction"], x, num_samples=200, **options)
    np.testing.assert_array_equal(data, x)  # the held-out quarter joins once the step is chosen
    _, data, _ = prepare_for_convert(model, ["bias_correction"], x, num_samples=100, **options)
    np.testing.assert_array_equal(data, x)  # convert calibrates on 100, checks on the 60 after


def test_every_check_reports_the_gain_and_its_bound(saturated) -> None:
    model, x = saturated
    _, report = optimize_model(model, ["bias_correction"], x, return_report=True)
    (check,) = report.checks
    assert check.kept == (check.gain_low_db > 0 and check.score_with[0] >= check.score_without[0])
    assert check.gain_low_db <= check.gain_db
    assert check.gain_db == pytest.approx(check.score_with[1] - check.score_without[1], abs=0.01)
