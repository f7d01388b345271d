"""Layers whose Keras ops have no int8 TFLite kernel are rewritten into ones that do (PTQ and QAT),
and the rewritten QAT models save and load back identically."""

from __future__ import annotations

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.quantization import integer_friendly

L = keras.layers


def _normalizations() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = L.GroupNormalization(4)(x)
    x = L.AdaptiveAveragePooling2D((3, 3))(x)
    x = L.Reshape((9, 8))(x)
    x = L.Dense(8, activation="elu")(x)
    x = L.LayerNormalization()(x)
    x = L.RMSNormalization()(x)
    x = L.ELU(alpha=0.5)(x)
    x = L.UnitNormalization()(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(5)(x))


def test_rewrite_computes_the_same_function(rng):
    model = _normalizations()
    x = rng.normal(size=(4, 6, 6, 4)).astype("float32")
    rewritten = integer_friendly(model)
    names = {type(layer).__name__ for layer in rewritten.layers}
    assert {"IntegerGroupNormalization", "IntegerLayerNormalization", "IntegerELU"} <= names
    assert "AdaptiveAveragePooling2D" not in names
    np.testing.assert_allclose(rewritten(x), model(x), atol=1e-5)


def test_ptq_and_qat_int8_have_no_float_op_and_qat_saves_identically(rng, tmp_path):
    keras.utils.set_random_seed(0)
    model = _normalizations()
    x = rng.normal(size=(64, 6, 6, 4)).astype("float32")
    y = rng.integers(0, 5, size=64)
    assert tfc.inspect(tfc.convert(model, "int8", x)).float_ops == []

    qat = tfc.quantize_model(model)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert tfc.inspect(tfc.convert(qat, "int8", x)).float_ops == []
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
