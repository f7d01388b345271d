"""Sparse TFLite export: smaller file, same outputs, and where it runs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.models import build_digits_cnn
from tfcompress.pruning import (
    ConstantSparsity,
    check_sparse_runtime,
    convert_sparse,
    pruned_layers,
)


def _one_shot_pruned(sparsity: float, **options) -> keras.Model:
    """A digits CNN pruned in one forward pass (no training needed to check the file format)."""
    keras.utils.set_random_seed(6)
    pruned = tfc.prune_low_magnitude(
        build_digits_cnn(width=16), ConstantSparsity(sparsity, 0), **options
    )
    for wrapper in pruned_layers(pruned):
        wrapper.pruning_step.assign(0)
    pruned(np.zeros((1, 8, 8, 1), "float32"), training=True)
    return pruned


def test_sparse_int8_file_is_smaller_and_computes_the_same(digits) -> None:
    final = tfc.strip_pruning(_one_shot_pruned(0.8))
    calibration = digits.x_train[:32]
    dense = tfc.convert(final, "int8", calibration)
    sparse = convert_sparse(final, "int8", calibration)
    assert len(sparse) < len(dense)
    assert "DENSIFY" in {op.name for op in tfc.inspect(sparse).ops}
    report = check_sparse_runtime(sparse, digits.x_test)
    assert report.delegate in ("xnnpack", "builtin")
    assert (report.xnnpack_error is None) == (report.delegate == "xnnpack")
    x = digits.x_test[:16]
    expected = run_tflite(dense, x, builtin_only=True)
    actual = run_tflite(sparse, x, builtin_only=report.builtin_only)
    scale = np.abs(expected).max() / 127
    np.testing.assert_allclose(actual, expected, atol=2 * scale)


def test_convert_sparse_refuses_an_unstripped_model(digits) -> None:
    with pytest.raises(ValueError, match="strip_pruning"):
        convert_sparse(_one_shot_pruned(0.5), "int8", digits.x_train[:8])


def test_two_of_four_sparsity_survives_int8_conversion(digits) -> None:
    pruned = _one_shot_pruned(0.5, layers=["conv2", "conv3", "fc1"], sparsity_n_m=(2, 4))
    flatbuffer = tfc.convert(tfc.strip_pruning(pruned), "int8", digits.x_train[:32])
    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None
        and t.buffer.dtype == np.int8
        and any(f"/{name}" in t.name for name in ("conv2", "conv3", "fc1"))
    ]
    assert len(kernels) == 3
    for kernel in kernels:  # TFLite kernels are (outputs, ..., inputs): groups run along inputs
        groups = kernel.reshape(kernel.shape[0], -1, 4)
        assert np.all((groups == 0).sum(-1) >= 2)
