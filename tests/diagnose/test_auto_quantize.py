"""auto_quantize: the smallest file that meets the accuracy target, measured on LiteRT."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.data import Split
from tfcompress.diagnose.auto import (
    AutoQuantizeResult,
    Candidate,
    _choose,
    auto_quantize,
    pareto_front,
)

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("auto-quantize")

TARGET = 0.01


@pytest.fixture(scope="session")
def result(sensitive_cnn, digits: Split) -> AutoQuantizeResult:
    return auto_quantize(
        sensitive_cnn,
        (digits.x_test, digits.y_test),
        max_accuracy_drop=TARGET,
        representative_data=digits.x_train[:100],
        try_int4=False,  # AdaRound runs in a process of its own: one run, not two
    )


def test_target_is_met_where_plain_int8_misses_it(result: AutoQuantizeResult) -> None:
    plain = result.candidates[0]
    assert plain.name == "int8" and not plain.meets_target  # the outlier costs plain int8
    assert result.choice != "int8" and result.chosen.meets_target
    accuracy = result.chosen.search.outputs[0]
    assert accuracy.metric == "accuracy" and accuracy.value >= accuracy.target


def test_target_is_judged_on_held_out_rows_the_search_never_saw(result, digits: Split) -> None:
    assert result.rows.startswith("300 search rows, 150 held-out rows")
    held = result.held_out
    assert held.held_out and held.rows == 150 and held.runtime == "LiteRT (XNNPACK)"
    assert result.target_met == held.met
    (logits,) = held.outputs
    correct = int(np.sum(run_tflite(result.flatbuffer, digits.x_test[2::3]).argmax(-1)
                         == digits.y_test[2::3]))  # fmt: skip
    assert logits.value == correct / 150
    assert logits.margin_count == correct - int(np.ceil(logits.target * 150 - 1e-9))
    assert "of 150" in result.summary()
    # only the chosen file is run on the held-out rows
    assert [c.held_out is not None for c in result.candidates].count(True) == 1


def test_chosen_file_is_the_smallest_that_meets_the_target(result) -> None:
    plain = result.candidates[0]
    assert len(result.flatbuffer) <= plain.size_bytes
    meeting = [c for c in result.candidates if c.meets_target]
    assert len(result.flatbuffer) == min(c.size_bytes for c in meeting)
    assert tfc.inspect(result.flatbuffer).float_ops == [] or "float" in result.choice


def test_each_recovery_step_is_a_candidate_of_its_own(result) -> None:
    names = [c.name for c in result.candidates]
    assert names[:4] == ["int8", "int8+equalize", "int8+bias_correction", "int8+adaround"]
    by_name = {c.name: c for c in result.candidates}
    assert by_name["int8+equalize"].settings == {"optimize": ["fold_bn", "equalize"]}
    # AdaRound is added to the step that measured best on the search rows, not to all of them
    best = max(result.candidates[:3], key=lambda c: c.slack)
    assert by_name["int8+adaround"].settings["optimize"] == [
        *best.settings.get("optimize", ["fold_bn"]), "adaround"
    ]  # fmt: skip


def test_trade_off_is_reported_as_table_json_and_plot(result, tmp_path) -> None:
    built = [c for c in result.candidates if c.error is None]
    assert result.choice in [c.name for c in pareto_front(built)]
    assert all(c.latency_ms and c.latency_ms > 0 for c in built)
    assert result.choice in result.summary()
    saved = json.loads(result.save_json(tmp_path / "auto.json").read_text())
    assert saved["choice"] == result.choice and len(saved["candidates"]) == len(built)
    assert saved["held_out"]["runtime"] == "LiteRT (XNNPACK)"
    assert result.plot(tmp_path / "auto.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_target_and_float_mode_are_refused(sensitive_cnn, digits: Split) -> None:
    with pytest.raises(ValueError, match="max_accuracy_drop is a fraction"):
        auto_quantize(sensitive_cnn, digits.x_test, max_accuracy_drop=5)
    with pytest.raises(ValueError, match="mode must be 'int8' or 'edgetpu'.*float16"):
        auto_quantize(sensitive_cnn, digits.x_test, mode="float16")


def test_without_recovery_the_fewest_float_layers_meet_the_target(
    sensitive_cnn, digits: Split
) -> None:
    found = auto_quantize(
        sensitive_cnn,
        digits.x_test,
        digits.y_test,
        representative_data=digits.x_train[:100],
        recovery=False,
        try_int16x8=False,
        measure_latency=False,
    )
    assert [c.name for c in found.candidates] == ["int8", "int8 with 1 of 7 ops float"]
    assert found.choice == "int8 with 1 of 7 ops float" and found.chosen.meets_target
    assert found.settings == {"keep_float": ["fc1"]}
    assert found.candidates[-1].latency_ms is None


def test_16_bit_activations_for_the_worst_layers_meet_the_target_in_an_integer_file(
    wide_activation_cnn, digits: Split
) -> None:
    found = auto_quantize(
        wide_activation_cnn,
        digits.x_test,
        digits.y_test,
        max_accuracy_drop=0.005,
        representative_data=digits.x_train[:100],
        recovery=False,
        measure_latency=False,
    )
    assert not found.candidates[0].meets_target  # plain int8
    sixteen = [c for c in found.candidates if c.name.endswith("16-bit")]
    assert sixteen and sixteen[-1].meets_target, found.summary()
    assert list(sixteen[-1].settings) == ["int16_layers"]
    report = tfc.inspect(sixteen[-1].flatbuffer)
    assert report.float_ops == [] and "INT16" in {t.dtype for t in report.tensors}
    # the same int8 weights: about the int8 file's size
    assert sixteen[-1].size_bytes < 1.1 * found.candidates[0].size_bytes
    # the smallest file meeting the target is chosen (int16x8 files are about as small)
    meeting = [c for c in found.candidates if c.meets_target]
    assert found.choice == min(meeting, key=lambda c: c.size_bytes).name


def _met(name: str, size: int) -> Candidate:
    return Candidate(name, {}, size_bytes=size, meets_target=True)


def test_an_int4_file_is_chosen_only_when_it_saves_more_than_two_percent():
    # an INT4 file gives up XNNPACK and TFLM: 0.3 % fewer bytes are not worth it
    plain, tiny_saving = _met("int8", 37_200), _met("int4+adaround", 37_100)
    assert _choose([plain, tiny_saving]).name == "int8"
    real_saving = _met("int4+adaround", 25_700)
    assert _choose([plain, real_saving]).name == "int4+adaround"
    assert _choose([_met("int8+adaround", 37_300), tiny_saving]).name == "int8+adaround"
