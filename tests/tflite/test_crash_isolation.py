"""A crash or a hang inside TF's converter becomes a ConversionError; the process lives on."""

from __future__ import annotations

import os
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.models import build_digits_cnn
from tfcompress.tflite.convert import run_converter as _run_converter
from tfcompress.tflite.isolation import (
    IsolatedCrash,
    isolation_available,
    report_progress,
    run_in_child,
    run_in_new_process,
)

pytestmark = pytest.mark.skipif(not isolation_available(), reason="isolation forks (Linux only)")


def _raw_int8_converter(model: keras.Model, data: np.ndarray) -> tf.lite.TFLiteConverter:
    """The plain TF converter, without tfcompress's recurrent rewrite: the path that crashes."""
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    converter.experimental_lower_to_saved_model = False
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def _static_batch_gru() -> keras.Model:
    inputs = keras.Input((8, 8), batch_size=1)
    outputs = keras.layers.Dense(10)(keras.layers.GRU(16)(inputs))
    return keras.Model(inputs, outputs, name="static_gru")


def _digits(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 8, 8, 1), dtype=np.float32)


def test_segfault_in_int8_calibration_becomes_conversion_error_and_process_lives_on():
    data = np.random.default_rng(0).random((16, 8, 8), dtype=np.float32)
    converter = _raw_int8_converter(_static_batch_gru(), data)
    with pytest.raises(tfc.ConversionError, match=r"SIGSEGV") as caught:
        _run_converter(converter, "static_gru", "int8")
    message = str(caught.value)
    assert "'static_gru'" in message and "mode='int8'" in message
    assert "unharmed" in message and "mode='dynamic'" in message and "LSTM/GRU" in message
    # the same process converts a normal model afterwards, and the file runs
    model = build_digits_cnn()
    x = _digits(8)
    flatbuffer = tfc.convert(model, "int8", x)
    assert tfc.inspect(flatbuffer).float_ops == []
    expected = model.predict(x, verbose=0)
    error = np.abs(run_tflite(flatbuffer, x) - expected).max()
    assert error < 0.05 * np.ptp(expected)  # a few int8 steps


def test_isolated_int8_file_equals_in_process_file():
    model, x = build_digits_cnn(), _digits(20)
    isolated = tfc.convert(model, "int8", x)
    in_process = tfc.convert(model, "int8", x, isolate=False)
    assert isolated == in_process


def test_converter_error_in_child_is_conversion_error_with_converter_text():
    converter = _raw_int8_converter(build_digits_cnn(), _digits(4))
    # calibration samples of the wrong shape: the calibrator raises inside the child
    converter.representative_dataset = lambda: ([np.zeros((1, 5, 5, 1), np.float32)] for _ in "ab")
    with pytest.raises(tfc.ConversionError, match="could not convert 'digits_cnn'") as caught:
        _run_converter(converter, "digits_cnn", "int8")
    assert not isinstance(caught.value.__cause__, tfc.ConversionError)
    assert "dimension" in str(caught.value).lower() or "shape" in str(caught.value).lower()


def test_conversion_past_timeout_is_stopped_and_reported():
    model, x = build_digits_cnn(), _digits(200)
    with pytest.raises(tfc.ConversionError, match=r"within timeout=0.001 s") as caught:
        tfc.convert(model, "int8", x, timeout=0.001)
    assert "'digits_cnn'" in str(caught.value) and "larger timeout" in str(caught.value)
    assert _children() == []  # the child was killed and reaped (the AdaRound worker stays)


def _children() -> list[int]:
    """This process's child processes, but the worker `run_in_new_process` keeps for reuse."""
    from tfcompress.tflite import isolation

    kept = {worker.process.pid for worker in isolation._WORKERS}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and int(entry) not in kept:
                found.append(int(entry))
    return found


def test_bad_timeout_is_refused_by_name():
    with pytest.raises(tfc.ConversionError, match="timeout must be a positive"):
        tfc.convert(build_digits_cnn(), "int8", _digits(2), timeout=0)


def test_child_warnings_and_exceptions_reach_the_parent():
    def warn_and_return() -> int:
        warnings.warn("from the child", RuntimeWarning, stacklevel=1)
        return os.getpid()

    with pytest.warns(RuntimeWarning, match="from the child"):
        child_pid = run_in_child(warn_and_return, name="m", mode="int8", timeout=60)
    assert child_pid != os.getpid()

    def fail() -> None:
        raise KeyError("missing tensor")

    with pytest.raises(KeyError, match="missing tensor"):
        run_in_child(fail, name="m", mode="int8", timeout=60)


def test_child_that_exits_without_answer_is_reported():
    with pytest.raises(tfc.ConversionError, match=r"exited \(status 3\) without an answer"):
        run_in_child(lambda: os._exit(3), name="m", mode="int8", timeout=60)


def test_new_process_crash_is_reported_by_name_and_results_come_back():
    with pytest.raises(IsolatedCrash, match=r"the demo crashed with SIGABRT .* unharmed\. Retry"):
        run_in_new_process(os.abort, what="the demo", advice="Retry.", timeout=60)
    assert run_in_new_process(divmod, 7, 2, what="divmod", advice="", timeout=60) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        run_in_new_process(divmod, 1, 0, what="divmod", advice="", timeout=60)


def test_the_separate_interpreter_is_kept_for_the_next_call_and_replaced_when_it_dies():
    first = run_in_new_process(os.getpid, what="pid", advice="", timeout=60)
    assert first != os.getpid()
    assert run_in_new_process(os.getpid, what="pid", advice="", timeout=60) == first  # reused
    with pytest.raises(IsolatedCrash, match=r"did not finish within timeout=1 s.*unharmed"):
        run_in_new_process(time.sleep, 30, what="sleeping", advice="", timeout=1)
    after = run_in_new_process(os.getpid, what="pid", advice="", timeout=60)
    assert after not in (first, os.getpid())  # a new interpreter after the stopped one


def _say_three_lines(count: int) -> int:
    for number in range(count):
        report_progress(f"line {number}")
    return os.getpid()


def test_progress_lines_of_the_work_arrive_in_order_while_it_runs():
    lines: list[str] = []
    pid = run_in_new_process(
        _say_three_lines, 3, what="talking", advice="", timeout=60, progress=lines.append
    )
    assert pid != os.getpid()
    assert lines == ["line 0", "line 1", "line 2"]


def _raise_file_error() -> None:
    raise tfc.ModelFileError("m.keras", "'Double' named in its config cannot be found", "Fix it.")


def test_an_error_whose_class_takes_other_arguments_comes_back_as_itself():
    # ModelFileError(path, reason, advice) is not rebuilt from its message alone
    with pytest.raises(tfc.ModelFileError, match="Cannot load 'm.keras': 'Double'") as caught:
        run_in_new_process(_raise_file_error, what="loading", advice="", timeout=60)
    assert (caught.value.path, caught.value.reason) == (
        "m.keras",
        "'Double' named in its config cannot be found",
    )


def test_the_worker_learns_import_paths_added_after_it_started(tmp_path, monkeypatch):
    run_in_new_process(os.getpid, what="pid", advice="", timeout=60)  # a worker is up
    (tmp_path / "added_later.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import added_later

    assert run_in_new_process(added_later.answer, what="answer", advice="", timeout=60) == 42
