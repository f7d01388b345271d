"""The demo row: a stripped 80%-sparse model that converts to int8 with its zeros."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.demos.pruning import make_rows


@pytest.mark.slow
def test_demo_row_is_a_plain_80_percent_sparse_model(digits, trained_digits_cnn) -> None:
    before = [w.copy() for w in trained_digits_cnn.get_weights()]
    ((name, model),) = make_rows(digits, trained_digits_cnn)
    assert name == "pruned 80% int8"
    for old, new in zip(before, trained_digits_cnn.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the float model is not mutated
    assert not tfc.pruning.pruned_layers(model)
    kernels = [
        keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    ]
    zeros = sum(float(np.sum(kernel == 0)) for kernel in kernels)
    assert zeros / sum(kernel.size for kernel in kernels) == pytest.approx(0.8, abs=0.01)
    flatbuffer = tfc.convert(model, "int8", digits.x_train[:64])
    assert tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test) > 0.8
