"""The layer catalog: every row holds for a real Keras layer of its class, and techniques read it."""

from __future__ import annotations

import keras
import pytest

from tfcompress.core import catalog
from tfcompress.pruning.wrapper import prunable_attributes, prunable_variables
from tfcompress.quantization.config import float_only_reason, get_quantize_config

L = keras.layers

# a built instance of each class with kernels, to resolve its attribute paths on
_BUILT = {
    L.Dense: lambda: L.Dense(2),
    L.EinsumDense: lambda: L.EinsumDense("ab,bc->ac", output_shape=2),
    L.Conv1D: lambda: L.Conv1D(2, 3),
    L.Conv2D: lambda: L.Conv2D(2, 3),
    L.Conv3D: lambda: L.Conv3D(2, 3),
    L.DepthwiseConv1D: lambda: L.DepthwiseConv1D(3),
    L.DepthwiseConv2D: lambda: L.DepthwiseConv2D(3),
    L.SeparableConv1D: lambda: L.SeparableConv1D(2, 3),
    L.SeparableConv2D: lambda: L.SeparableConv2D(2, 3),
    L.Conv1DTranspose: lambda: L.Conv1DTranspose(2, 3),
    L.Conv2DTranspose: lambda: L.Conv2DTranspose(2, 3),
    L.Conv3DTranspose: lambda: L.Conv3DTranspose(2, 3),
    L.Embedding: lambda: L.Embedding(10, 4),
    L.MultiHeadAttention: lambda: L.MultiHeadAttention(2, 4),
    L.LSTM: lambda: L.LSTM(3),
    L.GRU: lambda: L.GRU(3),
    L.SimpleRNN: lambda: L.SimpleRNN(3),
    L.Bidirectional: lambda: L.Bidirectional(L.LSTM(3)),
}
_SHAPES = {L.Conv3D: (6, 6, 6, 2), L.Conv3DTranspose: (6, 6, 6, 2), L.Embedding: (5,)}


def _built(klass: type) -> keras.layers.Layer:
    layer = _BUILT[klass]()
    shape = _SHAPES.get(klass)
    if shape is None:
        shape = (6, 6, 2) if "2D" in klass.__name__ else (6, 2) if klass is not L.Dense else (4,)
        if klass is L.EinsumDense:
            shape = (4,)
    inputs = keras.Input(shape, dtype="int32" if klass is L.Embedding else "float32")
    if klass is L.MultiHeadAttention:
        layer(inputs, inputs)
    else:
        layer(inputs)
    return layer


@pytest.mark.parametrize(
    "klass", sorted(_BUILT, key=lambda k: k.__name__), ids=lambda k: k.__name__
)
def test_kernel_paths_of_each_row_resolve_on_a_real_layer(klass):
    row = catalog.info(klass)
    layer = _built(klass)
    variables = prunable_variables(layer, row.kernels)
    assert len(variables) == len(row.kernels) and all(len(v.shape) >= 1 for v in variables)
    if row.cluster_kernel is not None:
        assert getattr(layer, row.cluster_kernel) is not None


def test_every_class_with_kernels_is_covered_above():
    assert set(catalog.classes(lambda row: bool(row.kernels))) == set(_BUILT)


def test_lookups_follow_the_class_hierarchy_unless_exact():
    class MyConv(L.Conv2D):
        pass

    assert catalog.info(MyConv) is catalog.info(L.Conv2D)
    assert catalog.exact_info(MyConv) is None  # clustering's single-kernel wrapper does not guess
    assert catalog.info(L.Layer) is None


def test_techniques_read_the_catalog():
    assert prunable_attributes(L.Conv2D(2, 3)) == ("kernel",)
    assert prunable_attributes(L.BatchNormalization()) is None
    assert get_quantize_config(L.MaxPooling2D()).role == catalog.PASSTHROUGH
    assert get_quantize_config(L.RandomFlip()).role == catalog.PASSTHROUGH
    assert float_only_reason(L.Conv3D(2, 3)) == catalog.info(L.Conv3D).float_reason
    assert float_only_reason(L.Dense(2)) is None
