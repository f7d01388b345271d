"""The per-layer debugger on real Keras and LiteRT outputs: ranking, op map, report I/O, QAT, CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.diagnose.conftest import SENSITIVE_LAYER
from tfcompress.data import Split
from tfcompress.diagnose.debug import QuantizationDebugReport, debug_quantization
from tfcompress.export import convert
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.runtime import run_tflite


def assert_error_starts_at(report: QuantizationDebugReport, name: str) -> None:
    """By accumulated SQNR, the error appears at `name`: far below every layer computed before it.

    The layers after it inherit its error, so the one reading its output may rank level with it;
    the check is the 10 dB drop where the error starts, not an order with no margin.
    """
    order = ["relu1", "relu2", "pool", "conv3", "gap", "fc1", "logits"]
    sqnr = {row.layer: row.sqnr_db for row in report.layers}
    before = [sqnr[layer] for layer in order[: order.index(name)] if layer in sqnr]
    assert sqnr[name] < min(before) - 10.0, sqnr
    assert report.ranking.index(name) <= 1, report.ranking


@pytest.fixture(scope="session")
def report(sensitive_cnn, sensitive_calibrated, digits: Split) -> QuantizationDebugReport:
    return debug_quantization(
        sensitive_cnn,
        digits.x_test[:64],
        calibrated=sensitive_calibrated,
        num_samples=64,
        isolated_samples=32,
    )


def test_sensitive_layer_is_ranked_first(report: QuantizationDebugReport) -> None:
    assert report.ranking[0] == SENSITIVE_LAYER
    worst, *rest = report.layers
    # its own isolated error is the largest, and it alone costs the model output the most
    assert worst.isolated_sqnr_db < min(row.isolated_sqnr_db for row in rest)
    assert worst.output_sqnr_db < min(row.output_sqnr_db for row in rest)
    # the accumulated error at the model output is what the sensitive layer alone causes (+/- 3 dB)
    assert abs(report.output_sqnr_db - worst.output_sqnr_db) < 3.0


def test_rows_are_keras_layers_with_their_tflite_ops(report: QuantizationDebugReport) -> None:
    row = report.layer("bn1")  # BatchNormalization folded into the convolution, ReLU fused
    assert row.layer == "relu1" and row.fused == ["conv1", "bn1"]
    assert [op.split(":")[1] for op in row.ops] == ["CONV_2D"]
    assert report.layer("fc1").ops[0].endswith("FULLY_CONNECTED")
    covered = {name for r in report.layers for name in [r.layer, *r.fused]}
    assert covered == {"conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool", "conv3", "gap",
                       "fc1", "logits"}  # fmt: skip
    # layers after the sensitive one inherit its error: accumulated worse than isolated
    assert report.layer("logits").propagated_db > 10.0


def test_report_round_trips_through_json_and_plots(report, tmp_path) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert QuantizationDebugReport.from_dict(data) == report
    text = report.summary()
    assert text.splitlines()[2].startswith(SENSITIVE_LAYER)
    png = report.plot(tmp_path / "debug.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_given_file_is_compared_as_is(
    sensitive_cnn, sensitive_calibrated, digits: Split, report
) -> None:
    flatbuffer = convert(sensitive_cnn, "int8", digits.x_train[:100])
    given = debug_quantization(sensitive_cnn, digits.x_test[:64], tflite=flatbuffer, isolated=False)
    assert given.isolated_samples == 0 and "isolated=False" in given.notes[0]
    assert_error_starts_at(given, SENSITIVE_LAYER)  # ranked by accumulated SQNR
    # same calibration data, same file: the accumulated figures agree with the full report
    assert given.output_sqnr_db == pytest.approx(report.output_sqnr_db, abs=0.01)
    # the debugger's own file computes exactly what convert's file computes
    own = sensitive_calibrated.quantize([])
    x = digits.x_test[:64]
    np.testing.assert_array_equal(run_tflite(own, x), run_tflite(flatbuffer, x))


def test_a_given_int16x8_file_is_said_to_run_on_the_builtin_kernels(sensitive_cnn, digits) -> None:
    flatbuffer = convert(sensitive_cnn, "int16x8", digits.x_train[:64], check=False)
    given = debug_quantization(sensitive_cnn, digits.x_test[:16], tflite=flatbuffer, isolated=False)
    assert given.runtime == "LiteRT (builtin kernels, no XNNPACK)"  # XNNPACK takes none of it
    assert given.output_sqnr_db is not None


@pytest.mark.slow
def test_qat_model_is_compared_with_its_own_file(trained_digits_cnn, digits: Split) -> None:
    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    qat = tfc.quantize_model(trained_digits_cnn)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)
    report = debug_quantization(qat, digits.x_test[:32])
    assert "quantization-aware" in report.notes[0] and report.isolated_samples == 0
    # the file computes what the fake-quant graph computes: every layer within int8 rounding
    assert report.output_sqnr_db > 30.0
    assert all(row.sqnr_db is not None and row.sqnr_db > 25.0 for row in report.layers)
    assert any(row.class_name == "QuantizeWrapper" for row in report.layers)
    # keep_float cannot undo fake quant: an error says so rather than an all-int8 file
    with pytest.raises(ConversionError, match="quantization-aware model"):
        convert(qat, "int8", keep_float=["quant_fc1"])


def test_data_of_the_wrong_shape_is_refused(sensitive_cnn) -> None:
    with pytest.raises(ConversionError, match="shape"):
        debug_quantization(sensitive_cnn, np.zeros((4, 8, 8), np.float32), isolated=False)


def test_unsupported_mode_is_refused(sensitive_cnn, digits: Split) -> None:
    with pytest.raises(ConversionError, match="mode='int8' or mode='edgetpu'"):
        debug_quantization(sensitive_cnn, digits.x_test[:8], mode="float16")


def test_cli_debug_writes_json(sensitive_cnn, digits: Split, tmp_path) -> None:
    from tfcompress.cli import main

    model_path = tmp_path / "sensitive.keras"
    sensitive_cnn.save(model_path)
    np.savez(tmp_path / "data.npz", x=digits.x_test[:48], y=digits.y_test[:48])
    out = tmp_path / "report.json"
    status = main(
        ["debug", str(model_path), "--data", str(tmp_path / "data.npz"), "--num-samples", "48",
         "--no-isolated", "--json", str(out)]
    )  # fmt: skip
    assert status == 0
    written = QuantizationDebugReport.from_dict(json.loads(out.read_text()))
    assert written.num_samples == 48
    assert_error_starts_at(written, SENSITIVE_LAYER)


def test_keras_path_is_read_by_io_load_model(sensitive_cnn, digits: Split, tmp_path) -> None:
    from tfcompress.io import ModelFileError

    path = tmp_path / "sensitive.keras"
    sensitive_cnn.save(path)
    report = debug_quantization(str(path), digits.x_test[:32], num_samples=32, isolated=False)
    assert_error_starts_at(report, SENSITIVE_LAYER)
    (tmp_path / "cut.keras").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="cut.keras"):
        debug_quantization(tmp_path / "cut.keras", digits.x_test[:8], isolated=False)
