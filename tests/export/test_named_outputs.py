"""A model with named (dict) outputs keeps its names through QAT, pruning, clustering and convert."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.tflite.runtime import run_tflite


def _two_heads() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    digit = keras.layers.Dense(10, name="digit_head")(x)
    size = keras.layers.Dense(1, name="size_head")(x)
    return keras.Model(inputs, {"digit": digit, "size": size})


WRAPPERS = {
    "qat": tfc.quantize_model,
    "pruning": tfc.prune_low_magnitude,
    "clustering": lambda model: tfc.cluster_weights(model, 4),
}


@pytest.mark.parametrize("technique", sorted(WRAPPERS))
def test_dict_outputs_keep_their_keys_for_losses_and_predict(technique, digits):
    wrapped = WRAPPERS[technique](_two_heads())
    wrapped.compile(
        "adam",
        loss={
            "digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "size": "mse",
        },
    )
    x = digits.x_train[:32]
    targets = {"digit": digits.y_train[:32], "size": x.mean(axis=(1, 2, 3))}
    callbacks = [tfc.pruning.UpdatePruningStep()] if technique == "pruning" else []
    wrapped.fit(x, targets, epochs=1, batch_size=32, verbose=0, callbacks=callbacks)
    predicted = wrapped.predict(x, verbose=0)
    assert isinstance(predicted, dict) and sorted(predicted) == ["digit", "size"]


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_the_file_names_its_outputs_as_the_keras_model_does(mode, digits):
    model = _two_heads()
    x = digits.x_test[:64]
    flatbuffer = tfc.convert(model, mode, digits.x_train[:64] if mode == "int8" else None)
    names = tfc.inspect(flatbuffer).output_names
    assert names == ["digit", "size"]
    keras_out = model.predict(x, verbose=0)
    for name, got in zip(names, run_tflite(flatbuffer, x), strict=True):
        np.testing.assert_allclose(got, keras_out[name], atol=0.05 if mode == "int8" else 1e-5)
    labels = keras_out["digit"].argmax(-1)
    assert tfc.evaluate_tflite(flatbuffer, x, labels, output="digit") >= 0.9
    assert tfc.evaluate_tflite(flatbuffer, x, keras_out["size"][:, 0], output="size") < 0.05
