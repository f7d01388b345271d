"""quantize_apply keeps tfmot's meaning: only annotated layers, scheme positional, strict keyword."""

import keras
import numpy as np
import pytest

from tfcompress.experimental.combine import Default8BitPrunePreserveQuantizeScheme
from tfcompress.quantization import (
    QuantizeWrapper,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)


def _model() -> keras.Model:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="left_alone")(inputs)
    outputs = quantize_annotate_layer(keras.layers.Dense(3, name="annotated"))(hidden)
    return keras.Model(inputs, outputs)


def test_only_the_annotated_layer_is_quantized() -> None:
    model = _model()
    qat = quantize_apply(model)
    wrapped = [layer.layer.name for layer in qat.layers if isinstance(layer, QuantizeWrapper)]
    assert wrapped == ["annotated"]
    assert isinstance(qat.get_layer("left_alone"), keras.layers.Dense)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(qat(x), model(x), atol=0.1)


def test_a_model_without_annotation_is_refused() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer of model .* is annotated.*quantize_model"):
        quantize_apply(model)


def test_strict_is_keyword_only() -> None:
    model = quantize_annotate_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="keyword-only"):
        quantize_apply(model, True)
    with pytest.raises(TypeError):
        quantize_model(model, True)


def test_a_scheme_as_second_positional_argument_is_the_scheme() -> None:
    model = quantize_annotate_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    qat = quantize_apply(model, Default8BitPrunePreserveQuantizeScheme())
    assert all(
        layer.preserve_sparsity for layer in qat.layers if isinstance(layer, QuantizeWrapper)
    )
