"""Models as users write them convert to int8 files that match them: a subclassed model called
once, uint8 images into a model that augments and rescales them itself, QAT included."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core.graph import inputs_rescaled

L = keras.layers


class SmallNet(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(3)

    def call(self, inputs):
        return self.head(self.pool(self.conv(inputs)))


def _augmenting() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = L.RandomTranslation(0.1, 0.1)(L.RandomFlip("horizontal")(inputs))
    x = L.Flatten()(L.Conv2D(4, 3, activation="relu")(L.Rescaling(1 / 255.0)(x)))
    return keras.Model(inputs, L.Dense(3)(x))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(96, 8, 8, 1)).astype("uint8")


def test_a_subclassed_model_called_once_converts_without_an_input_signature(images):
    keras.utils.set_random_seed(0)
    model = SmallNet()
    x = images.astype("float32") / 255.0
    model(x[:1])
    converted = tfc.convert(model, "int8", x, num_samples=64)
    assert tfc.inspect(converted).float_ops == []
    assert converted.fidelity.held_out and converted.fidelity.passed


def test_a_never_called_subclassed_model_is_refused_with_what_to_do(images):
    with pytest.raises(tfc.ConversionError, match=r"Call it once on a batch"):
        tfc.convert(SmallNet(), "int8", images.astype("float32"))


def test_uint8_images_reach_rescaling_through_augmentation_and_fake_quant(images):
    keras.utils.set_random_seed(0)
    model = _augmenting()
    qat = tfc.quantize_model(model)
    assert inputs_rescaled(model) == [True] and inputs_rescaled(qat) == [True]
    converted = tfc.convert(model, "int8", images, num_samples=64)
    assert converted.fidelity.held_out and converted.fidelity.passed
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(images, np.zeros(len(images), "int32"), epochs=1, verbose=0)
    assert tfc.inspect(tfc.convert(qat, "int8", images, num_samples=64)).float_ops == []


def test_a_keras_2_h5_file_converts_as_its_rebuilt_model():
    path = Path(__file__).parent.parent / "fixtures" / "keras_files" / "keras2_mobilenet.h5"
    with pytest.warns(UserWarning, match="rebuilt"):
        model = tfc.load_model(path)
    x = np.random.default_rng(0).random((48, *model.input_shape[1:])).astype("float32")
    with pytest.warns(UserWarning, match="rebuilt"):
        converted = tfc.convert(path, "int8", x, num_samples=32)
    assert tfc.inspect(converted).float_ops == [] and converted.fidelity.held_out
    assert converted == tfc.convert(model, "int8", x, num_samples=32, check=False)
