"""LiteRT runtime helpers: predictions, evaluation metrics and latency."""

from __future__ import annotations

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite


@pytest.fixture(scope="module")
def float_bytes(trained_digits_cnn):
    return tfc.convert(trained_digits_cnn, "float32")


def test_run_tflite_matches_keras_for_any_batch_size(float_bytes, trained_digits_cnn, digits):
    expected = trained_digits_cnn.predict(digits.x_test[:37], verbose=0)
    for batch_size in (1, 10, 256):
        got = run_tflite(float_bytes, digits.x_test[:37], batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_evaluate_tflite_equals_keras_accuracy(float_bytes, trained_digits_cnn, digits):
    keras_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test) == pytest.approx(
        keras_accuracy, abs=1e-6
    )


def test_evaluate_tflite_dequantizes_int8_outputs(trained_digits_cnn, digits):
    int8 = tfc.convert(trained_digits_cnn, "int8", digits.x_train[:100])
    keras_logits = trained_digits_cnn.predict(digits.x_test, verbose=0)
    tflite_logits = run_tflite(int8, digits.x_test)
    assert tflite_logits.dtype == np.float32
    assert np.mean(np.abs(tflite_logits - keras_logits)) < 0.1 * np.abs(keras_logits).mean()


def test_regression_metrics(float_bytes, trained_digits_cnn, digits):
    targets = trained_digits_cnn.predict(digits.x_test[:20], verbose=0)
    assert tfc.evaluate_tflite(float_bytes, digits.x_test[:20], targets, metric="mae") < 1e-4
    with pytest.raises(ValueError, match="Unknown metric"):
        tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test, metric="f1")


def test_mismatched_labels_are_an_error(float_bytes, digits):
    with pytest.raises(ValueError, match="y has 3"):
        tfc.evaluate_tflite(float_bytes, digits.x_test, digits.y_test[:3])


@pytest.mark.parametrize("builtin_only", [False, True])
def test_benchmark_reports_median_and_p90(float_bytes, builtin_only):
    latency = tfc.benchmark_tflite(float_bytes, runs=20, warmup=2, builtin_only=builtin_only)
    assert 0 < latency.min_ms <= latency.median_ms <= latency.p90_ms
    assert latency.runs == 20 and latency.delegate == ("builtin" if builtin_only else "xnnpack")


def test_benchmark_rejects_bad_arguments(float_bytes):
    with pytest.raises(ValueError, match="runs >= 1"):
        tfc.benchmark_tflite(float_bytes, runs=0)
