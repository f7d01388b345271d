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


def _prelu_model() -> keras.Model:
    """Two convolutions with PReLU (MTCNN's face detectors are built this way)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    hidden = keras.layers.Conv2D(8, 3)(inputs)
    hidden = keras.layers.PReLU(shared_axes=[1, 2], name="prelu1")(hidden)
    hidden = keras.layers.Conv2D(8, 3)(hidden)
    hidden = keras.layers.PReLU(shared_axes=[1, 2], name="prelu2")(hidden)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    for name in ("prelu1", "prelu2"):
        layer = model.get_layer(name)
        alpha = np.random.default_rng(1).uniform(0.05, 0.5, size=layer.alpha.shape)
        layer.set_weights([alpha.astype("float32")])
    return model


def test_prelu_converts_to_int16x8_as_ops_with_16_bit_kernels():
    model = _prelu_model()
    x = np.random.default_rng(0).normal(size=(300, 12, 12, 3)).astype("float32")
    rewritten = integer_friendly(model, activation_bits=16)
    assert [type(layer).__name__ for layer in rewritten.layers].count("IntegerPReLU") == 2
    np.testing.assert_allclose(rewritten(x[:8]), model(x[:8]), atol=1e-6)
    assert integer_friendly(model) is model  # int8 has a PRELU kernel: nothing to rewrite
    sixteen = tfc.convert(model, "int16x8", x, num_samples=100)  # TF's converter alone refuses
    ops = {op.name for op in tfc.inspect(sixteen).ops}
    assert "PRELU" not in ops and {"MINIMUM", "MUL"} <= ops
    assert sixteen.fidelity.passed and sixteen.fidelity.outputs[0].agreement >= 0.98
    assert "PRELU" in {op.name for op in tfc.inspect(tfc.convert(model, "int8", x[:100])).ops}
