"""PTQ recovery steps: same float function, smaller error in the LiteRT file, convert(optimize=)."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.recovery import (
    STEPS,
    adaround,
    bias_correction,
    equalize,
    fold_batch_norms,
    round_layer,
)
from tfcompress.recovery.bias import _pass_depthwise_biases_on
from tfcompress.recovery.weights import quantize_kernel, split_separable, with_biases
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import op_name, read_model

from .conftest import build_dwsep

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("recovery")


def _float(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _file_error(model: keras.Model, reference: np.ndarray, x: np.ndarray, **options) -> float:
    """RMS error of the per-tensor int8 LiteRT file's outputs against the float outputs."""
    flatbuffer = tfc.convert(model, "int8", x, per_channel=False, **options)
    return float(np.sqrt(np.mean((run_tflite(flatbuffer, x) - reference) ** 2)))


@pytest.fixture(scope="session")
def folded(trained: SimpleNamespace) -> keras.Model:
    return fold_batch_norms(trained.model)


@pytest.fixture(scope="session")
def equalized(trained: SimpleNamespace) -> tuple[keras.Model, object]:
    return equalize(trained.model, return_report=True)


def test_fold_and_equalize_preserve_float_outputs(
    trained: SimpleNamespace, folded: keras.Model, equalized: tuple
) -> None:
    reference = _float(trained.model, trained.x_test)
    model, report = equalized
    np.testing.assert_allclose(_float(folded, trained.x_test), reference, atol=1e-4)
    np.testing.assert_allclose(_float(model, trained.x_test), reference, atol=1e-4)
    assert report.pairs == [("stem", "dw"), ("dw", "pw"), ("pw", "logits")]


def test_equalize_flattens_the_imbalanced_depthwise_ranges(folded, equalized) -> None:
    def spread(model: keras.Model) -> float:
        ranges = np.abs(model.get_layer("dw").get_weights()[0]).max(axis=(0, 1, 3))
        return float(ranges.max() / ranges.min())

    assert spread(equalized[0]) < spread(folded) / 5


def test_equalize_reduces_per_tensor_error_of_the_litert_file(
    trained: SimpleNamespace, folded: keras.Model, equalized: tuple
) -> None:
    reference = _float(trained.model, trained.x_calib)
    naive = _file_error(folded, reference, trained.x_calib)
    assert _file_error(equalized[0], reference, trained.x_calib) < naive / 2


def test_bias_correction_reduces_the_mean_output_shift(trained, folded) -> None:
    x = trained.x_calib
    reference = _float(trained.model, x)

    def shift(model: keras.Model) -> float:
        flatbuffer = tfc.convert(model, "int8", x, per_channel=False)
        return float(np.abs((run_tflite(flatbuffer, x) - reference).mean(axis=0)).mean())

    corrected = bias_correction(folded, x, per_channel=False)
    assert shift(corrected) < shift(folded) / 2


def test_relu6_pairs_are_skipped_or_replaced_as_asked() -> None:
    keras.utils.set_random_seed(1)
    model = build_dwsep(relu6=True)
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    kept, report = equalize(model, return_report=True)
    assert report.pairs == []  # every pair has a ReLU6 between its layers
    assert all(
        "ReLU6" in report.skipped[pair] for pair in ("stem -> dw", "dw -> pw", "pw -> logits")
    )
    np.testing.assert_allclose(_float(kept, x), _float(model, x), atol=1e-5)
    replaced, report = equalize(model, relu6="replace", return_report=True)
    assert len(report.pairs) == 3 and "dw_relu" in report.replaced_relu6
    assert isinstance(replaced.get_layer("dw_relu"), keras.layers.ReLU)
    assert replaced.get_layer("dw_relu").max_value is None


def test_adaround_beats_round_to_nearest_reconstruction() -> None:
    keras.utils.set_random_seed(0)
    layer = keras.layers.Conv2D(4, 3, padding="same")
    # post-ReLU-like inputs (positive mean): correlated, so the nearest level is not the best
    x = (np.abs(np.random.default_rng(0).normal(size=(128, 6, 6, 3))) + 0.5).astype("float32")
    y = np.asarray(layer(x))
    nearest = quantize_kernel(layer, layer.get_weights()[0], bits=4, per_channel=True)
    learned = round_layer(layer, x, y, bits=4, iterations=300)
    bias = layer.get_weights()[1]

    def error(kernel: np.ndarray) -> float:
        layer.set_weights([kernel, bias])
        return float(np.mean((np.asarray(layer(x)) - y) ** 2))

    assert error(learned) < 0.7 * error(nearest)


def test_convert_optimize_recovers_per_tensor_accuracy(trained: SimpleNamespace) -> None:
    x, x_test, y_test = trained.x_calib, trained.x_test, trained.y_test
    float_accuracy = float(np.mean(_float(trained.model, x_test).argmax(-1) == y_test))
    naive = tfc.convert(trained.model, "int8", x, per_channel=False)
    recovered = tfc.convert(
        trained.model,
        "int8",
        x,
        per_channel=False,
        optimize=["bias_correction", "equalize", "fold_bn"],
    )
    naive_accuracy = tfc.evaluate_tflite(naive, x_test, y_test)
    recovered_accuracy = tfc.evaluate_tflite(recovered, x_test, y_test)
    assert recovered_accuracy >= naive_accuracy
    assert recovered_accuracy >= float_accuracy - 0.02


def test_convert_optimize_reduces_the_weight_error_of_an_int16x8_file(
    trained: SimpleNamespace,
) -> None:
    # 16-bit activations leave the weights' rounding as most of the file's error: AdaRound and
    # bias correction reduce it (unchecked here: 128 rows leave none to hold out)
    x, x_test = trained.x_calib, trained.x_test
    reference = _float(trained.model, x_test)
    plain = tfc.convert(trained.model, "int16x8", x)
    recovered = tfc.convert(trained.model, "int16x8", x, optimize=["fold_bn", "bias_correction"])
    assert "INT16" in {tensor.dtype for tensor in tfc.inspect(recovered).tensors}

    def error(flatbuffer: bytes) -> float:
        return float(np.sqrt(np.mean((run_tflite(flatbuffer, x_test) - reference) ** 2)))

    assert error(recovered) < error(plain)


def test_convert_optimize_adaround_writes_int4_filters(trained: SimpleNamespace) -> None:
    x = trained.x_calib[:96]  # too few rows to hold out: the file is not checked (test_steps is)
    # round to nearest on the 4-bit grid, in-process (the learned rounding is tested on its own)
    flatbuffer = tfc.convert(
        trained.model,
        "int8",
        x,
        int4_weights=True,
        optimize=["fold_bn", ("adaround", {"iterations": 0})],
    )
    report = tfc.inspect(flatbuffer)
    assert len([t for t in report.tensors if t.dtype == "INT4"]) == 4
    accuracy = tfc.evaluate_tflite(flatbuffer, trained.x_test, trained.y_test)
    assert accuracy > 0.5  # a 4-bit file that runs and predicts (figures: ptq_recovery_bench)


def test_adaround_model_saves_and_loads(trained: SimpleNamespace, tmp_path) -> None:
    model = adaround(fold_batch_norms(trained.model), trained.x_calib[:16], iterations=0)
    model.save(tmp_path / "rounded.keras")
    loaded = keras.saving.load_model(tmp_path / "rounded.keras")
    np.testing.assert_allclose(
        _float(loaded, trained.x_test[:8]), _float(model, trained.x_test[:8]), atol=1e-6
    )


def test_unknown_step_lists_the_valid_ones(trained: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="unknown step 'equalise'.*fold_bn, equalize"):
        tfc.convert(trained.model, "int8", trained.x_calib, optimize=["equalise"])
    assert STEPS == ("fold_bn", "equalize", "adaround", "bias_correction")


def test_bad_recovery_input_is_refused_clearly(trained: SimpleNamespace) -> None:
    model, x = trained.model, trained.x_calib
    with pytest.raises(ConversionError, match="need calibration data"):
        tfc.convert(model, "int8", optimize=["bias_correction"])
    with pytest.raises(ConversionError, match="mode='int8', 'int16x8' or 'edgetpu'"):
        tfc.convert(model, "float16", optimize=["equalize"])
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        adaround(model, x, bits=3)
    with pytest.raises(ValueError, match=r"does not match the input of"):
        bias_correction(model, x[:, :4])
    with pytest.raises(ValueError, match="relu6 must be one of"):
        equalize(model, relu6="clip")


def test_convert_warns_when_nothing_can_be_equalized() -> None:
    model = build_dwsep(relu6=True)
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    with pytest.warns(UserWarning, match="no pair .* ReLU6 .* relu6='replace'"):
        tfc.convert(model, "int8", x, optimize=["equalize"])


def test_bias_correction_after_adaround_matches_the_unrounded_model(trained, folded) -> None:
    x = trained.x_calib
    rounded = adaround(folded, x, bits=4, iterations=0)
    reference = _float(folded, x)

    def shift(model: keras.Model) -> float:
        return float(np.abs((_float(model, x) - reference).mean(axis=0)).mean())

    corrected = bias_correction(rounded, x, bits=4, reference=folded)
    assert shift(corrected) < shift(rounded) / 2


def test_a_depthwise_bias_passes_into_the_pointwise_conv_after_it_exactly() -> None:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw_relu")(x)
    model = with_biases(split_separable(keras.Model(inputs, x)))
    rng = np.random.default_rng(3)
    depthwise, pointwise = model.get_layer("sep_depthwise"), model.get_layer("sep_pointwise")
    # the pointwise kernel on its int8 grid, as the file multiplies it: then the move is exact
    kernel, bias = pointwise.get_weights()
    pointwise.set_weights([quantize_kernel(pointwise, kernel, 8, True), bias])
    for layer in (depthwise, model.get_layer("dw_relu")):
        layer_kernel, layer_bias = layer.get_weights()
        layer.set_weights([layer_kernel, rng.normal(size=layer_bias.shape).astype("float32")])
    rows = rng.normal(size=(8, 6, 6, 4)).astype("float32")
    before = _float(model, rows)
    _pass_depthwise_biases_on(model, {layer.name: 8 for layer in model.layers}, per_channel=True)
    assert not np.any(depthwise.get_weights()[1])
    assert np.any(model.get_layer("dw_relu").get_weights()[1])  # a ReLU follows: it stays
    np.testing.assert_allclose(_float(model, rows), before, rtol=1e-5, atol=1e-5)


def test_bias_correction_leaves_the_files_depthwise_bias_zero(trained) -> None:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    flatbuffer = tfc.convert(
        model, "int16x8", trained.x_calib, check=False, optimize=["bias_correction"]
    )
    parsed = read_model(flatbuffer)
    graph = parsed.subgraphs[0]
    (depthwise,) = [op for op in graph.operators if op_name(parsed, op) == "DEPTHWISE_CONV_2D"]
    bias = graph.tensors[int(depthwise.inputs[2])]
    assert not np.any(np.asarray(parsed.buffers[bias.buffer].data))  # one shared zero vector


def test_four_bit_rounding_in_an_int16x8_file_rescales_its_64_bit_biases(trained) -> None:
    x = trained.x_calib[:96]  # too few rows to hold out: the step is not checked
    nearest_4_bit = [("adaround", {"bits": 4, "iterations": 0})]
    flatbuffer = tfc.convert(trained.model, "int16x8", x, check=False, optimize=nearest_4_bit)
    rounded = adaround(fold_batch_norms(trained.model), x, bits=4, iterations=0)
    expected = _float(rounded, trained.x_test)
    got = run_tflite(flatbuffer, trained.x_test)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.95
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
