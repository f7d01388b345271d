"""Every output scored, on held-out rows, on a named runtime: two heads, a dense map, TFLM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.diagnose.conftest import SENSITIVE_LAYER, size_targets
from tfcompress.data import Split
from tfcompress.diagnose.auto import auto_quantize
from tfcompress.diagnose.debug import debug_quantization
from tfcompress.diagnose.keep_float import quantize_keeping, search_keep_float, suggest_keep_float
from tfcompress.diagnose.scoring import (
    Score,
    Scorer,
    check_runtime,
    run_file,
    split_data,
    split_rows,
)
from tfcompress.export import convert
from tfcompress.tflite.fidelity import keras_outputs
from tfcompress.tflite.runtime import run_tflite

pytestmark = pytest.mark.xdist_group("diagnose-scoring")


def test_every_third_row_is_held_out() -> None:
    search, held = split_rows(10)
    assert held.tolist() == [2, 5, 8] and len(search) == 7
    assert not set(search) & set(held)
    with pytest.raises(ValueError, match="validation_data"):
        split_rows(2)
    # without representative_data, calibration rows come out of the search rows, never shared
    rows = split_data([np.arange(12.0)], [np.arange(12)], None, calibrate_from_data=True)
    assert rows.calibration_x[0].tolist() == [0, 3, 6, 9]
    assert rows.search_x[0].tolist() == [1, 4, 7, 10] == rows.search_labels[0].tolist()
    assert rows.held_x[0].tolist() == [2, 5, 8, 11]
    assert rows.rule == "4 calibration rows, 4 search rows, 4 held-out rows (every 3rd row of data)"
    given = split_data([np.arange(4.0)], [None], ([np.arange(3.0)], [None]))
    assert given.search_x[0].tolist() == [0, 1, 2, 3] and given.calibration_x is None
    with pytest.raises(ValueError, match="runtime='tpu'.*'xnnpack'.*'micro'"):
        check_runtime("tpu")


@pytest.fixture(scope="session")
def heads_suggestion(two_heads, digits: Split):
    x = digits.x_test[:240]
    labels = {"digit": digits.y_test[:240], "size": size_targets(x)}
    return suggest_keep_float(two_heads, x, labels, representative_data=digits.x_train[:100])


def test_debugger_scores_both_heads_and_ranks_the_regression_layer_first(
    two_heads, digits: Split
) -> None:
    report = debug_quantization(
        two_heads, digits.x_test[:48], representative_data=digits.x_train[:100],
        num_samples=48, isolated_samples=24,
    )  # fmt: skip
    by_name = {row["name"]: row for row in report.outputs}
    assert by_name["digit"]["kind"] == "classes" and by_name["size"]["kind"] == "values"
    assert by_name["digit"]["agreement"] > 0.9
    assert by_name["size"]["sqnr_db"] < 15.0 < by_name["digit"]["sqnr_db"]
    assert report.output_sqnr_db == by_name["size"]["sqnr_db"]  # the worst output
    assert report.ranking[0] == "size"
    assert report.runtime == "LiteRT (XNNPACK)" and "reference kernels" in report.layer_runtime
    assert "'size' (values)" in report.summary()


def test_keep_float_on_two_heads_keeps_the_regression_layer_and_reports_held_out_rows(
    heads_suggestion, two_heads, digits: Split
) -> None:
    s = heads_suggestion
    assert s.keep_float == ["size"] and s.target_met
    assert s.held_out.held_out and not s.search.held_out
    assert s.held_out.rows == 80 and s.search.rows == 160  # every third row of 240
    digit, size = s.held_out.outputs
    assert (digit.metric, size.metric) == ("accuracy", "sqnr_db")
    assert size.mae is not None and size.mae < 2 * size.float_mae
    # the all-integer file misses only on the regression head: the worst output decides
    assert s.int8_held_out.outputs[0].met and not s.int8_held_out.outputs[1].met
    # the held-out figures are the file's own on rows 2, 5, 8, ... (recomputed here)
    held = digits.x_test[:240][2::3]
    outputs = run_tflite(s.flatbuffer, held)
    correct = int(np.sum(outputs[0].argmax(-1) == digits.y_test[:240][2::3]))
    assert digit.value == correct / 80
    assert digit.margin_count == correct - math.ceil(digit.target * 80 - 1e-9)
    keras_size = keras_outputs(two_heads, [held])[1]
    noise = np.sum((outputs[1] - keras_size) ** 2)
    assert size.value == pytest.approx(10 * np.log10(np.sum(keras_size**2) / noise), abs=0.01)
    assert "held-out rows on LiteRT (XNNPACK)" in s.summary()


def test_auto_quantize_is_decided_by_the_worst_output_and_names_the_float_fallback(
    two_heads, digits: Split
) -> None:
    x = digits.x_test[:240]
    result = auto_quantize(
        two_heads, x, {"digit": digits.y_test[:240]}, representative_data=digits.x_train[:100],
        recovery=False, try_int16x8=False, measure_latency=False,
    )  # fmt: skip
    plain, fallback = result.candidates
    assert plain.name == "int8" and not plain.meets_target
    assert plain.search.outputs[0].met and not plain.search.outputs[1].met
    assert result.choice == fallback.name and fallback.name.startswith("int8 with 1 of ")
    assert result.settings == {"keep_float": ["size"]}
    assert result.target_met and result.held_out.rows == 80 and result.held_out.met
    rebuilt = convert(
        two_heads, "int8", x[[i for i in range(240) if i % 3 != 2]], **result.settings
    )
    scorer = Scorer(two_heads, [x[2::3]], [digits.y_test[:240][2::3], None])
    assert scorer.score(rebuilt).met
    assert "met with a margin of" in result.summary()


def test_dense_map_is_scored_per_pixel(dense_map, digits: Split) -> None:
    suggestion = suggest_keep_float(dense_map, digits.x_test[:30], max_layers=0)
    (scores,) = suggestion.held_out.outputs
    assert scores.kind == "classes" and scores.unit == "pixels"
    assert scores.count == 10 * 64 and scores.metric == "agreement"
    assert Score.from_dict(suggestion.held_out.to_dict()) == suggestion.held_out


def test_layer_the_quantizer_keeps_integer_is_left_out_not_an_error(
    sensitive_cnn, sensitive_calibrated, digits: Split
) -> None:
    flatbuffer, kept, dropped = quantize_keeping(sensitive_calibrated, ["pool", SENSITIVE_LAYER])
    assert kept == [SENSITIVE_LAYER] and dropped == ["pool"]
    assert flatbuffer == sensitive_calibrated.quantize([SENSITIVE_LAYER])
    scorer = Scorer(sensitive_cnn, [digits.x_test[:150]], [digits.y_test[:150]], held_out=False)
    keep, _, found, gone, _ = search_keep_float(
        sensitive_calibrated, ["pool", SENSITIVE_LAYER], scorer.score, None
    )
    assert keep == [SENSITIVE_LAYER] and gone == ["pool"] and found.met


def test_micro_runs_the_file_and_is_named(sensitive_cnn, sensitive_calibrated, digits) -> None:
    flatbuffer = sensitive_calibrated.quantize([])
    x = [digits.x_test[:12]]
    micro, reference = run_file(flatbuffer, x, "micro")[0], run_file(flatbuffer, x, "reference")[0]
    scale = np.abs(reference).max() / 127
    assert np.abs(micro - reference).max() <= 2 * scale  # TFLM: LiteRT's kernels within steps
    score = Scorer(sensitive_cnn, x, [None], runtime="micro").score(flatbuffer)
    assert score.runtime == "TensorFlow Lite Micro"


def test_an_int16x8_candidate_is_said_to_run_on_the_builtin_kernels(sensitive_cnn, digits) -> None:
    x = [digits.x_test[:12]]
    scorer = Scorer(sensitive_cnn, x, [None])
    int8 = convert(sensitive_cnn, "int8", digits.x_train[:64], check=False)
    int16x8 = convert(sensitive_cnn, "int16x8", digits.x_train[:64], check=False)
    assert scorer.score(int8).runtime == "LiteRT (XNNPACK)"
    assert scorer.score(int16x8).runtime == "LiteRT (builtin kernels, no XNNPACK)"


def test_output_kinds_can_be_given_and_real_labels_make_values(two_heads, digits) -> None:
    x = [digits.x_test[:30]]
    flatbuffer = convert(two_heads, "int8", digits.x_train[:60], keep_float=["size"])
    guessed = Scorer(two_heads, x, [None, None]).score(flatbuffer)
    assert [o.metric for o in guessed.outputs] == ["agreement", "sqnr_db"]
    told = Scorer(two_heads, x, [None, None], kinds={"digit": "values"}).score(flatbuffer)
    assert [o.metric for o in told.outputs] == ["sqnr_db", "sqnr_db"]
    with pytest.raises(ValueError, match=r"unknown outputs \['boxes'\].*\['digit', 'size'\]"):
        Scorer(two_heads, x, [None, None], kinds={"boxes": "values"})
