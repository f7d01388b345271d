"""Sparsity-preserving QAT: a pruned model keeps its zeros through quantize_model into int8."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import compile_classifier
from tfcompress.pruning import (
    PolynomialDecay,
    PreserveSparsity,
    UpdatePruningStep,
    kernel_sparsity,
)

quantization = pytest.importorskip("tfcompress.quantization")
# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("preserve-sparsity")


def _pruned(model: keras.Model, digits, sparsity: float) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    schedule = PolynomialDecay(0.0, sparsity, begin_step=0, end_step=40, frequency=10)
    pruned = tfc.prune_low_magnitude(clone, schedule, allocation="uniform")
    pruned = compile_classifier(pruned, 1e-3)
    pruned.fit(digits.x_train, digits.y_train, batch_size=64, epochs=3, verbose=0,
               callbacks=[UpdatePruningStep()])  # fmt: skip
    return tfc.strip_pruning(pruned)


def _assert_int8_kernels_are_70_percent_zeros(flatbuffer: bytes) -> None:
    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None and t.buffer.dtype == np.int8 and len(t.shape) >= 2
    ]
    assert len(kernels) == 5
    for kernel in kernels:
        assert np.mean(kernel == 0) == pytest.approx(0.7, abs=0.01)


@pytest.fixture(scope="session")
def sparse(digits, trained_digits_cnn) -> keras.Model:
    """The trained CNN pruned to 70 % and stripped. Do not mutate it in tests."""
    keras.utils.set_random_seed(8)
    return _pruned(trained_digits_cnn, digits, 0.7)


@pytest.mark.slow
def test_qat_of_a_pruned_model_keeps_its_zeros_in_the_int8_file(digits, sparse) -> None:
    keras.utils.set_random_seed(8)
    sparse_accuracy = compile_classifier(sparse).evaluate(digits.x_test, digits.y_test, verbose=0)[
        1
    ]
    qat = compile_classifier(quantization.quantize_model(sparse), 1e-3)
    qat.fit(digits.x_train, digits.y_train, batch_size=64, epochs=1, verbose=0,
            callbacks=[PreserveSparsity()])  # fmt: skip
    for path, sparsity in kernel_sparsity(qat).items():
        assert sparsity == pytest.approx(0.7, abs=0.01), path
    flatbuffer = tfc.convert(qat, mode="int8")
    _assert_int8_kernels_are_70_percent_zeros(flatbuffer)
    accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    assert accuracy >= sparse_accuracy - 0.02


@pytest.mark.slow
def test_quantize_model_alone_keeps_the_zeros_of_a_pruned_model(digits, sparse) -> None:
    keras.utils.set_random_seed(9)
    qat = compile_classifier(quantization.quantize_model(sparse), 1e-3)
    qat.fit(digits.x_train, digits.y_train, batch_size=64, epochs=1, verbose=0)  # no callback
    flatbuffer = tfc.convert(qat, mode="int8")
    _assert_int8_kernels_are_70_percent_zeros(flatbuffer)


def test_dense_model_gets_no_sparsity_mask(trained_digits_cnn) -> None:
    qat = quantization.quantize_model(trained_digits_cnn)
    wrappers = [layer for layer in qat.layers if isinstance(layer, quantization.QuantizeWrapper)]
    assert wrappers and not any(w.preserve_sparsity for w in wrappers)
