"""`tfcompress compress` takes what a classifier recipe can train, loads custom and Lambda models
when told how, and refuses other tasks up front with what to use instead."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.cli import main
from tfcompress.recipe import compress

CONVERT_ONLY = {"steps": [{"convert": {"mode": "float32"}}]}


def test_a_regression_model_is_refused_before_any_training(tmp_path):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"trains classifiers.*shape \(None, 1\).*Python API"):
        compress(model, "digits", CONVERT_ONLY, tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


def test_a_multi_output_model_is_refused_before_any_training(tmp_path):
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    heads = {"digit": keras.layers.Dense(10)(flat), "size": keras.layers.Dense(1)(flat)}
    with pytest.raises(ValueError, match="it has 2 outputs"):
        compress(keras.Model(inputs, heads), "digits", CONVERT_ONLY, tmp_path / "out", log=None)


def test_the_command_loads_custom_layers_and_lambdas_when_told(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='my_layers')\n"
        "class Double(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t + 0.0, name="shift")(my_layers.Double()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    path = tmp_path / "custom.keras"
    model.save(path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - convert:\n      mode: float32\n")
    out = tmp_path / "out"
    args = ["compress", str(path), "--data", "digits", "--recipe", str(recipe), "-o", str(out)]
    assert main(args) == 2  # safe mode refuses the Lambda: a clear error, exit status 2
    assert main([*args, "--unsafe", "--custom-objects", "my_layers"]) == 0
    assert (out / "model.tflite").stat().st_size > 0
    assert np.isfinite(model.predict(np.ones((1, 8, 8, 1)), verbose=0)).all()
