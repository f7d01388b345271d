"""keep_float: the named layers' ops run in float inside an int8 file; suggestions; bad names."""

from __future__ import annotations

import numpy as np
import pytest

from tests.diagnose.conftest import SENSITIVE_LAYER
from tfcompress.data import Split
from tfcompress.diagnose.keep_float import suggest_keep_float
from tfcompress.export import convert
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.layer_map import map_layers
from tfcompress.tflite.runtime import run_tflite


@pytest.fixture(scope="session")
def kept(sensitive_cnn, digits: Split) -> bytes:
    return convert(sensitive_cnn, "int8", digits.x_train[:100], keep_float=[SENSITIVE_LAYER])


def test_kept_layer_runs_in_float_and_the_rest_in_int8(sensitive_cnn, kept: bytes) -> None:
    graph = inspect(kept).subgraphs[0]
    rows = {row.layer: row for row in map_layers(kept, sensitive_cnn)}
    fc1 = graph.ops[int(rows[SENSITIVE_LAYER].ops[0].split(":")[0])]
    assert fc1.name == "FULLY_CONNECTED" and fc1.input_dtypes == ["FLOAT32"] * 3
    assert fc1.output_dtypes == ["FLOAT32"]
    compute = [op for op in graph.ops if op.name not in ("QUANTIZE", "DEQUANTIZE")]
    assert [op.index for op in compute if op.computes_in_float] == [fc1.index]
    assert sorted(op.name for op in graph.ops if op.computes_in_float) == [
        "DEQUANTIZE", "FULLY_CONNECTED", "QUANTIZE"]  # fmt: skip
    assert graph.input_dtypes == ["INT8"] and graph.output_dtypes == ["INT8"]


def test_keep_float_brings_the_file_closer_to_keras(
    sensitive_cnn, sensitive_calibrated, kept: bytes, digits: Split
) -> None:
    x = digits.x_test[:128]
    reference = sensitive_cnn.predict(x, verbose=0)
    plain = sensitive_calibrated.quantize([])
    error_plain = np.abs(run_tflite(plain, x) - reference).mean()
    error_kept = np.abs(run_tflite(kept, x) - reference).mean()
    assert error_kept < error_plain / 4
    # convert(keep_float=...) and the debugger's calibration make the same file
    assert sensitive_calibrated.quantize([SENSITIVE_LAYER]) == kept


def test_suggestion_keeps_only_the_sensitive_layer(
    sensitive_cnn, sensitive_calibrated, digits: Split
) -> None:
    suggestion = suggest_keep_float(
        sensitive_cnn,
        digits.x_test,
        digits.y_test,
        max_accuracy_drop=0.01,
        representative_data=digits.x_train[:100],
    )
    (plain,) = suggestion.int8_held_out.outputs
    assert plain.float_value - plain.value > 0.05  # the gap is real
    assert suggestion.keep_float == [SENSITIVE_LAYER] and suggestion.target_met
    (kept,) = suggestion.held_out.outputs
    assert kept.value - plain.value >= 0.8 * (kept.float_value - plain.value)
    held = digits.x_test[2::3]  # the held-out rows
    accuracy = np.mean(run_tflite(suggestion.flatbuffer, held).argmax(-1) == digits.y_test[2::3])
    assert accuracy == pytest.approx(kept.value)


def test_unknown_layer_names_are_listed(sensitive_cnn, digits: Split) -> None:
    with pytest.raises(ConversionError, match=r"\['conv9'\].*Its layers are: conv1, bn1"):
        convert(sensitive_cnn, "int8", digits.x_train[:20], keep_float=["conv9"])
    with pytest.raises(ConversionError, match=r"keep_float=\['fc1'\]"):
        convert(sensitive_cnn, "int8", digits.x_train[:20], keep_float="fc1")


def test_keep_float_needs_an_integer_mode(sensitive_cnn) -> None:
    with pytest.raises(ConversionError, match="keep_float needs mode='int8'"):
        convert(sensitive_cnn, "float16", keep_float=["fc1"])


def test_edgetpu_warns_where_the_graph_is_cut(sensitive_cnn, digits: Split) -> None:
    with pytest.warns(UserWarning, match=r"cuts the graph at op \d+ \(DEQUANTIZE"):
        flatbuffer = convert(sensitive_cnn, "edgetpu", digits.x_train[:50], keep_float=["fc1"])
    assert inspect(flatbuffer).subgraphs[0].input_dtypes == ["UINT8"]


def test_unreachable_target_returns_the_best_found_and_the_shortfall(
    sensitive_cnn, digits: Split
) -> None:
    suggestion = suggest_keep_float(
        sensitive_cnn,
        digits.x_test[:210],
        digits.y_test[:210],
        max_accuracy_drop=0.0,
        max_layers=0,
        representative_data=digits.x_train[:100],
    )
    assert not suggestion.target_met and suggestion.keep_float == []
    (plain,) = suggestion.held_out.outputs
    assert plain.margin_count < -3  # more than 3 of the 70 held-out rows short
    assert "misses by" in suggestion.summary()
