"""Bad input gets a clear error naming the thing and the fix, and never a half-written file."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import TFLiteFileError, run_tflite


@pytest.fixture(scope="module")
def int8_bytes(trained_digits_cnn, digits):
    return tfc.convert(trained_digits_cnn, "int8", digits.x_train[:50])


def test_unknown_mode_lists_the_modes(trained_digits_cnn):
    with pytest.raises(tfc.ConversionError, match="float16"):
        tfc.convert(trained_digits_cnn, "int4")


def test_wrong_calibration_shape_says_expected_and_got(trained_digits_cnn):
    with pytest.raises(
        tfc.ConversionError, match=r"shape \(10, 8, 8\).*expected \(None, 8, 8, 1\)"
    ):
        tfc.convert(trained_digits_cnn, "int8", np.zeros((10, 8, 8), np.float32))


def test_wrong_calibration_dtype_says_expected_and_got(trained_digits_cnn):
    with pytest.raises(tfc.ConversionError, match="dtype uint8; expected float32"):
        tfc.convert(trained_digits_cnn, "int8", np.zeros((10, 8, 8, 1), np.uint8))


def test_nan_in_calibration_data_names_the_sample(trained_digits_cnn, digits):
    data = digits.x_train[:20].copy()
    data[7, 0, 0, 0] = np.nan
    with pytest.raises(tfc.ConversionError, match="NaN.*sample 7"):
        tfc.convert(trained_digits_cnn, "int8", data)


def test_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        tfc.convert(tmp_path / "missing.keras")


def test_corrupted_keras_file_is_a_conversion_error(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(tfc.ConversionError, match="broken.keras"):
        tfc.convert(path)


def test_keras_file_with_unknown_custom_layer_says_how_to_register(tmp_path):
    @keras.saving.register_keras_serializable(package="test_only")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, Doubler()(inputs)).save(path)
    keras.saving.get_custom_objects().pop("test_only>Doubler")
    with pytest.raises(tfc.ConversionError, match="custom_objects"):
        tfc.convert(path)
    assert tfc.inspect(tfc.convert(path, custom_objects={"test_only>Doubler": Doubler})).ops


def test_keras_file_with_lambda_is_refused_in_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 3.0)(inputs)).save(path)
    with pytest.raises(tfc.ConversionError, match="safe_mode=False"):
        tfc.convert(path)
    flatbuffer = tfc.convert(path, safe_mode=False)
    np.testing.assert_allclose(run_tflite(flatbuffer, np.ones((1, 4), np.float32)), 3.0)


def test_save_tflite_refuses_to_overwrite_unless_asked(int8_bytes, tmp_path):
    path = tmp_path / "model.tflite"
    tfc.save_tflite(int8_bytes, path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tfc.save_tflite(int8_bytes, path)
    tfc.save_tflite(int8_bytes, path, overwrite=True)
    assert path.read_bytes() == int8_bytes


def test_save_tflite_of_bad_bytes_writes_nothing(tmp_path):
    path = tmp_path / "out" / "model.tflite"
    with pytest.raises(TFLiteFileError):
        tfc.save_tflite(b"garbage bytes", path)
    assert not path.exists()
    assert not any(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "not_tflite", "bad_identifier", "empty"])
def test_damaged_tflite_files_get_a_clear_error_everywhere(damage, int8_bytes, tmp_path, digits):
    data = {
        "truncated": int8_bytes[: len(int8_bytes) // 3],
        "not_tflite": b"PK\x03\x04 a zip file, not a flatbuffer" * 10,
        "bad_identifier": int8_bytes[:4] + b"XXXX" + int8_bytes[8:],
        "empty": b"",
    }[damage]
    path = tmp_path / "damaged.tflite"
    path.write_bytes(data)
    for call in (
        lambda: tfc.inspect(path),
        lambda: tfc.edgetpu_report(path),
        lambda: tfc.evaluate_tflite(path, digits.x_test, digits.y_test),
        lambda: tfc.benchmark_tflite(path, runs=1),
    ):
        with pytest.raises(TFLiteFileError, match="damaged.tflite"):
            call()


def test_missing_tflite_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        tfc.inspect(tmp_path / "nope.tflite")


_FUZZ_SCRIPT = """
import sys
import numpy as np
import tfcompress as tfc
from tfcompress.converter import TFLiteFileError
data = open(sys.argv[1], "rb").read()
x = np.zeros((2, 8, 8, 1), np.float32)
rng = np.random.default_rng(0)
for trial in range(150):
    damaged = bytearray(data)
    for _ in range(4):
        damaged[int(rng.integers(8, len(damaged)))] = int(rng.integers(0, 256))
    try:
        tfc.evaluate_tflite(bytes(damaged), x, np.zeros(2, int))
    except (TFLiteFileError, ValueError):
        pass
print("survived")
"""


@pytest.mark.slow
def test_randomly_damaged_files_never_crash_the_process(int8_bytes, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "model.tflite"
    path.write_bytes(int8_bytes)
    result = subprocess.run(
        [sys.executable, "-c", _FUZZ_SCRIPT, str(path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "survived" in result.stdout


def test_saved_file_gets_normal_permissions(int8_bytes, tmp_path):
    import os

    path = tfc.save_tflite(int8_bytes, tmp_path / "m.tflite")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
