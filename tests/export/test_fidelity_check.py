"""Every integer `convert` checks its file against the Keras model and returns the figures."""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.fidelity import ConvertedFile, FidelityThresholds

L = keras.layers


def _outlier_model() -> keras.Model:
    """One unit 1000x larger than the rest: int8 per-tensor activations zero the others."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((8,))
    wide = L.Dense(16, name="wide")
    hidden = wide(inputs)
    head = L.Dense(4, name="head")
    model = keras.Model(inputs, head(hidden), name="outlier")
    kernel = rng.normal(size=(8, 16)).astype("float32")
    kernel[:, 0] *= 1000.0
    wide.set_weights([kernel, np.zeros(16, "float32")])
    head_kernel = rng.normal(size=(16, 4)).astype("float32")
    head_kernel[0] = 0.0  # the head never reads the outlier unit
    head.set_weights([head_kernel, np.zeros(4, "float32")])
    return model


def _two_heads() -> keras.Model:
    inputs = keras.Input((8,))
    hidden = L.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = {
        "digit": L.Dense(3, activation="softmax", name="digit")(hidden),
        "size": L.Dense(1, name="size")(hidden),
    }
    return keras.Model(inputs, outputs, name="two_heads")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(300, 8)).astype("float32")


def test_an_int8_file_comes_back_with_figures_on_held_out_rows(x):
    keras.utils.set_random_seed(0)
    model = _two_heads()
    converted = tfc.convert(model, "int8", x, num_samples=100)
    assert isinstance(converted, ConvertedFile) and isinstance(converted, bytes)
    fidelity = converted.fidelity
    assert fidelity.held_out and fidelity.rows == 200  # the rows after the 100 calibrated on
    assert fidelity.runtime == "LiteRT (XNNPACK)"
    by_name = {output.name: output for output in fidelity.outputs}
    assert by_name["digit"].kind == "classes" and by_name["digit"].agreement >= 0.95
    assert by_name["size"].kind == "values" and by_name["size"].agreement is None
    assert by_name["size"].sqnr_db > 20 and fidelity.passed
    # the check reads the data once and calibrates on the same rows: the same bytes as unchecked
    assert converted == tfc.convert(model, "int8", x, num_samples=100, check=False)


def test_an_int16x8_file_is_said_to_run_on_the_builtin_kernels(x):
    # XNNPACK has no 16-bit activation kernel: LiteRT's builtin kernels run every op
    keras.utils.set_random_seed(0)
    converted = tfc.convert(_two_heads(), "int16x8", x, num_samples=100)
    assert converted.fidelity.runtime == "LiteRT (builtin kernels, no XNNPACK)"


def test_without_rows_to_spare_the_file_is_checked_on_the_calibration_rows(x):
    converted = tfc.convert(_two_heads(), "int8", x[:50])
    assert not converted.fidelity.held_out and converted.fidelity.rows == 50
    assert "50 calibration rows" in converted.fidelity.summary()


def test_validation_data_is_what_the_file_is_checked_on(x):
    converted = tfc.convert(_two_heads(), "int8", x[:50], validation_data=x[250:])
    assert converted.fidelity.held_out and converted.fidelity.rows == 50


def test_a_file_that_misses_the_model_warns_with_the_layer_to_keep_float(x):
    model = _outlier_model()
    pattern = r"does not compute.*agreement 0\.\d+ \(\d+ of 200 differ\).*held-out.*XNNPACK"
    with pytest.warns(
        UserWarning, match=pattern + r".*keep_float=\['wide', 'head'\] brings it back"
    ) as caught:
        converted = tfc.convert(model, "int8", x, num_samples=100)
    assert not converted.fidelity.passed
    assert converted.fidelity.outputs[0].agreement < 0.9
    fixed = tfc.convert(model, "int8", x, num_samples=100, keep_float=["wide", "head"])
    assert fixed.fidelity.outputs[0].agreement > 0.95
    # 16-bit activations are tried too, and the verdict is what the int16x8 file gives
    (text,) = [str(w.message) for w in caught if "does not compute" in str(w.message)]
    assert re.search(r"mode='int16x8' brings it back \(.*tried on 64 rows; [\d,]+ bytes", text)
    sixteen = tfc.convert(model, "int16x8", x, num_samples=100)
    assert sixteen.fidelity.passed and sixteen.fidelity.outputs[0].agreement > 0.95


def test_strict_raises_instead_of_warning_and_thresholds_are_adjustable(x):
    model = _outlier_model()
    with pytest.raises(ConversionError, match="does not compute what the Keras model computes"):
        tfc.convert(model, "int8", x, num_samples=100, strict=True)
    lenient = FidelityThresholds(min_agreement=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = tfc.convert(model, "int8", x, num_samples=100, thresholds=lenient, strict=True)
    assert converted.fidelity.passed


def test_float_modes_and_check_false_carry_no_figures(x):
    assert tfc.convert(_two_heads(), "float32").fidelity is None
    assert tfc.convert(_two_heads(), "int8", x[:50], check=False).fidelity is None
