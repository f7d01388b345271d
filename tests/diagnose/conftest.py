"""A trained digits CNN whose `fc1` layer is made int8-sensitive (one outlier row of weights), a
two-head model (classes + regression) and a dense-map model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.fixtures.pretrained import pretrained
from tfcompress.data import Split
from tfcompress.diagnose.outliers import (
    inject_activation_outlier,
    inject_weight_outlier,
    quietest_channel,
)

SENSITIVE_LAYER = "fc1"


@pytest.fixture(scope="session")
def sensitive_cnn(trained_digits_cnn: keras.Model, digits: Split) -> keras.Model:
    """Same float function as `trained_digits_cnn`; its int8 file loses about 13 pp."""
    channel = quietest_channel(trained_digits_cnn, SENSITIVE_LAYER, digits.x_train[:200])
    return inject_weight_outlier(trained_digits_cnn, SENSITIVE_LAYER, 300.0, channel)


@pytest.fixture(scope="session")
def wide_activation_cnn(trained_digits_cnn: keras.Model) -> keras.Model:
    """Same float function as `trained_digits_cnn`; one channel of the tensor `conv3` reads is
    300x wider than the others, so 8-bit steps round the others away."""
    return inject_activation_outlier(trained_digits_cnn, "conv3", 300.0, 0)


@pytest.fixture(scope="session")
def sensitive_calibrated(sensitive_cnn: keras.Model, digits: Split):
    """One calibration of the sensitive model, reused by the debugger and keep_float tests."""
    from tfcompress.export import calibrate

    return calibrate(sensitive_cnn, "int8", digits.x_train[:100])


@pytest.fixture(scope="session")
def two_heads(digits: Split) -> keras.Model:
    """A digits classifier with a second, regression head ('size': two mean intensities).

    The regression head's last layer carries a weight outlier: its int8 SQNR falls far below
    20 dB while the class head's agreement stays near 1.0, so only the regression head can tell
    that plain int8 misses the target.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    hidden = keras.layers.Flatten(name="flat")(hidden)
    hidden = keras.layers.Dense(32, activation="relu", name="trunk")(hidden)
    digit = keras.layers.Dense(10, name="digit")(hidden)
    size = keras.layers.Dense(16, activation="relu", name="size_hidden")(hidden)
    size = keras.layers.Dense(2, name="size")(size)
    model = keras.Model(inputs, {"digit": digit, "size": size})
    model.compile(
        "adam",
        {"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "size": "mse"},
    )

    def train() -> None:
        model.fit(digits.x_train, {"digit": digits.y_train, "size": size_targets(digits.x_train)},
                  epochs=4, batch_size=64, verbose=0)  # fmt: skip

    pretrained("diagnose-two-heads", model, train)
    channel = quietest_channel(model, "size", digits.x_train[:200])
    return inject_weight_outlier(model, "size", 300.0, channel)


def size_targets(x: np.ndarray) -> np.ndarray:
    """The regression head's targets: the mean intensity of the image and of its top half."""
    return np.stack([x.mean((1, 2, 3)), x[:, :4].mean((1, 2, 3))], axis=1)


@pytest.fixture(scope="session")
def dense_map() -> keras.Model:
    """A per-pixel classifier (3 classes per pixel of an 8x8 image), untrained."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    scores = keras.layers.Conv2D(3, 1, activation="softmax", name="scores")(hidden)
    return keras.Model(inputs, scores)
