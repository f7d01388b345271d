"""`tfcompress.micro.check` on TensorFlow Lite Micro's real interpreter, against LiteRT's reference
kernels; no mocks."""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.micro import MicroError, MicroUnavailableError
from tfcompress.micro.runner import attempt, smallest_arena
from tfcompress.models import build_digits_cnn
from tfcompress.tflite.flatbuffer import pack, read_model
from tfcompress.tflite.runtime import make_interpreter


def test_digits_int8_runs_on_tflm_within_two_steps_of_litert_reference(digits_int8, digits):
    report = tfc.micro.check(digits_int8, digits.x_test[:100])

    assert report.runs and report.error == "" and report.failing_op is None
    assert report.arena_bytes > 0
    assert report.recommended_arena_bytes >= report.arena_bytes * 1.25
    assert report.recommended_arena_bytes % 16 == 0
    assert report.flash_bytes == len(digits_int8)
    assert report.constant_bytes == tfc.inspect(digits_int8).weights_bytes
    assert report.op_counts == tfc.inspect(digits_int8).all_op_counts
    assert report.missing_ops == []
    [output] = report.outputs
    assert (output.dtype, output.unit, output.samples) == ("INT8", "steps", 100)
    assert output.max_difference <= 2
    json.dumps(report.to_dict())  # JSON-ready as it is
    assert (
        "runs" in report.summary() and f"{report.arena_bytes:,} bytes measured" in report.summary()
    )


def test_measured_arena_is_the_smallest_that_allocates_and_invokes(digits_int8):
    arena = tfc.micro.check(digits_int8).arena_bytes

    assert attempt(digits_int8, arena).ok
    too_small = attempt(digits_int8, arena - 1)
    assert not too_small.ok
    assert too_small.crashed or "allocate" in too_small.log + too_small.message


def test_an_arena_below_the_recorded_use_is_found_exactly_in_a_few_probes(digits):
    model = build_digits_cnn(width=4)
    flatbuffer = tfc.convert(model, "int16x8", digits.x_train[:64], check=False)
    recorded = attempt(flatbuffer, 1 << 20, record=True).recorded
    arena, probes = smallest_arena(flatbuffer, 1 << 20, recorded)

    assert arena < recorded  # the int16x8 digits file needs a little less than recorded
    assert attempt(flatbuffer, arena).ok and not attempt(flatbuffer, arena - 1).ok
    assert probes <= 8  # stepping down from the recorded use, not up from zero


def test_a_file_checked_again_is_not_bisected_again_and_gets_the_same_arena(digits_int8):
    first = tfc.micro.check(digits_int8)
    again = tfc.micro.check(digits_int8)

    assert again.arena_bytes == first.arena_bytes
    assert again.probes == 1  # the load that checks it runs; the bisection is not repeated
    changed = bytearray(digits_int8)  # other bytes: measured afresh
    changed[-1] ^= 1
    assert tfc.micro.check(bytes(changed)).probes > 1


def test_upsampling_file_is_reported_not_running_at_tile_with_the_resizing_advice(
    upsampling_int8,
):
    report = tfc.micro.check(upsampling_int8)

    assert not report.runs
    assert report.failing_op is not None
    assert report.failing_op.name == "TILE"
    assert report.failing_op.layer == "upsample"
    assert tfc.inspect(upsampling_int8).ops[report.failing_op.index].name == "TILE"
    assert 'Resizing(height, width, interpolation="nearest")' in report.failing_op.advice
    assert "TILE" in report.error and report.missing_ops == ["TILE"]
    assert report.arena_bytes is None and report.outputs == []
    assert "does NOT run" in report.summary() and "upsample" in report.summary()


def test_resizing_nearest_instead_of_upsampling_runs_on_tflm():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.Resizing(8, 8, interpolation="nearest"),
            keras.layers.Conv2D(2, 1),
        ]
    )
    x = np.random.default_rng(0).random((32, 4, 4, 2), dtype=np.float32)
    report = tfc.micro.check(tfc.convert(model, "int8", x), x)

    assert report.runs and "RESIZE_NEAREST_NEIGHBOR" in report.op_counts
    assert report.outputs[0].max_difference <= 2


def test_dynamic_batch_shape_arithmetic_is_reported_and_a_static_batch_runs():
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Dense(8, name="project"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).random((32, 8, 8), dtype=np.float32)
    dynamic = tfc.micro.check(tfc.convert(model, "int8", x))
    static = tfc.micro.check(
        tfc.convert(model, "int8", x, input_signature=[tf.TensorSpec([1, 8, 8], tf.float32)]), x
    )

    assert not dynamic.runs
    assert dynamic.failing_op.name == "REDUCE_PROD" and dynamic.failing_op.layer == "project"
    assert "target='micro'" in dynamic.failing_op.advice
    assert static.runs and "REDUCE_PROD" not in static.op_counts
    assert static.outputs[0].max_difference <= 2


def test_truncated_file_gives_a_clear_file_error_before_tflm(digits_int8):
    with pytest.raises(tfc.TFLiteFileError, match="truncated or corrupted"):
        tfc.micro.check(digits_int8[:200])


def test_file_that_crashes_tflm_gives_a_report_and_the_process_lives_on(digits_int8):
    model = read_model(digits_int8)
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].shape = [1, 8, 8, 1000]  # disagrees with the conv weights
    damaged = pack(model)
    pid = os.getpid()

    report = tfc.micro.check(damaged)

    assert not report.runs
    assert "TFLM crashed with SIG" in report.error and "unharmed" in report.error
    assert os.getpid() == pid and tfc.micro.check(digits_int8).runs


def test_missing_tflite_micro_package_says_how_to_install(digits_int8, monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # what an absent package looks like

    with pytest.raises(MicroUnavailableError, match=r"pip install 'tfcompress\[micro\]'") as error:
        tfc.micro.check(digits_int8)
    assert isinstance(error.value, ImportError) and isinstance(error.value, MicroError)


def test_integers_of_the_input_type_are_taken_as_quantized_and_floats_are_quantized(
    digits_int8, digits
):
    x = digits.x_test[:20]
    info = tfc.inspect(digits_int8)
    quantization = info.tensors[info.inputs[0]].quantization
    scaled = np.round(x / quantization.scale[0] + quantization.zero_point[0])
    quantized = np.clip(scaled, -128, 127).astype(np.int8)

    from_floats = tfc.micro.check(digits_int8, x)
    from_integers = tfc.micro.check(digits_int8, quantized)

    assert from_floats.outputs == from_integers.outputs


def test_data_that_does_not_fit_the_input_is_refused(digits_int8):
    with pytest.raises(ValueError, match=r"expects samples of shape \(8, 8, 1\)"):
        tfc.micro.check(digits_int8, np.zeros((4, 8, 8), np.float32))


@pytest.fixture(scope="module")
def softmax_int16x8() -> tuple[bytes, np.ndarray]:
    """A tiny classifier ending in Softmax as a TFLM int16x8 file, and inputs to run it on."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
            keras.layers.Softmax(),
        ]
    )
    x = np.random.default_rng(0).random((32, 8, 8, 2), dtype=np.float32)
    return tfc.convert(model, "int16x8", x, target="micro"), x


def _reference_int16(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = make_interpreter(flatbuffer, reference=True)
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = given["quantization"]
    rows = []
    for row in np.clip(np.round(x / scale + zero), -32768, 32767).astype(np.int16):
        interpreter.set_tensor(given["index"], row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(taken["index"])[0])
    return np.stack(rows)


def test_int16_output_difference_is_counted_in_int16_steps(softmax_int16x8):
    flatbuffer, x = softmax_int16x8
    info = tfc.inspect(flatbuffer)
    quantization = info.tensors[info.inputs[0]].quantization
    scale, zero = quantization.scale[0], quantization.zero_point[0]
    quantized = np.clip(np.round(x / scale + zero), -32768, 32767).astype(np.int16)
    on_tflm = attempt(flatbuffer, 1 << 20, [quantized]).outputs[0]

    [output] = tfc.micro.check(flatbuffer, x).outputs

    assert on_tflm.dtype == np.int16 and (output.dtype, output.unit) == ("INT16", "steps")
    gap = np.abs(on_tflm.astype(int) - _reference_int16(flatbuffer, x).astype(int))
    assert output.max_difference == gap.max() <= 3  # of 65,536 steps
    assert output.differing == pytest.approx(np.mean(gap > 0))


def test_logits_before_softmax_are_compared_for_an_output_softmax_writes(softmax_int16x8, rng):
    flatbuffer, x = softmax_int16x8
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x_plain = rng.random((16, 4), dtype=np.float32)

    [output] = tfc.micro.check(flatbuffer, x).outputs
    [no_softmax] = tfc.micro.check(tfc.convert(plain, "int8", x_plain), x_plain).outputs

    assert output.logits_max_difference is not None and output.logits_max_difference <= 1
    assert no_softmax.logits_max_difference is None


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_a_sum_is_compared_with_the_litert_kernels_that_compute_it_right(rng, mode):
    """LiteRT's reference SUM kernel is far from the float model; TFLM's SUM and LiteRT's
    optimized one are not. The figure is against the nearer kernels, and names them."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    unit = keras.layers.UnitNormalization(name="unit")(keras.layers.Dense(16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(unit))
    x = rng.normal(size=(128, 8)).astype(np.float32)
    flatbuffer = tfc.convert(model, mode, x[:64], check=False)
    expected = np.asarray(model(x[64:]))
    wrong = np.abs(run_tflite(flatbuffer, x[64:], reference=True) - expected).max()
    right = np.abs(run_tflite(flatbuffer, x[64:], builtin_only=True) - expected).max()
    assert wrong > 2 * right  # the reference kernels' SUM, not TFLM's, is the one that is off

    report = tfc.micro.check(flatbuffer, x[64:])

    assert report.runs and not report.notes
    (output,) = report.outputs
    assert output.compared_with == "LiteRT's optimized builtin kernels"
    # TFLM computes what the optimized kernels compute, within a rounding (the reference: 70 int8
    # steps off); an int16 step is 1/256 of an int8 one
    assert output.max_difference <= (2 if mode == "int8" else 16)
    assert "from LiteRT's optimized builtin kernels" in report.summary()
