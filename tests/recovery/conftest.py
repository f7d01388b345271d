"""One small trained depthwise-separable net, with the channel imbalance that breaks per-tensor int8."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import pytest

from tests.fixtures.pretrained import pretrained
from tfcompress.data import load_digits


def build_dwsep(relu6: bool = False) -> keras.Model:
    """Conv-BN-ReLU, DepthwiseConv-BN-ReLU, 1x1 Conv-BN-ReLU, GAP, Dense on 8x8 digits."""
    act = (lambda name: keras.layers.ReLU(6.0, name=name)) if relu6 else keras.layers.ReLU
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = act(name="stem_relu")(keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = act(name="dw_relu")(keras.layers.BatchNormalization(momentum=0.9, name="dw_bn")(x))
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="pw")(x)
    x = act(name="pw_relu")(keras.layers.BatchNormalization(momentum=0.9, name="pw_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def imbalance(model: keras.Model, factor: float = 40.0) -> None:
    """Scale channel 0 of the depthwise output up and the next layer's input down: same function.

    This is the range imbalance of trained depthwise convolutions that DFQ repairs: one channel
    with a large range leaves the others few levels of a per-tensor grid.
    """
    dw, pw = model.get_layer("dw_bn"), model.get_layer("pw")
    gamma, beta, mean, variance = dw.get_weights()
    gamma[0] *= factor
    beta[0] *= factor
    dw.set_weights([gamma, beta, mean, variance])
    kernel = pw.get_weights()[0]
    kernel[:, :, 0, :] /= factor
    pw.set_weights([kernel])


@pytest.fixture(scope="session")
def trained() -> SimpleNamespace:
    """The trained, imbalanced net and the digits (train split for calibration, test to score)."""
    keras.utils.set_random_seed(0)
    split = load_digits()
    model = build_dwsep()
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )

    def train() -> None:
        model.fit(split.x_train, split.y_train, epochs=6, batch_size=64, verbose=0)

    pretrained("recovery-dwsep", model, train)
    imbalance(model)
    return SimpleNamespace(
        model=model,
        x_calib=split.x_train[:128],
        x_test=split.x_test[:200],
        y_test=split.y_test[:200],
    )
