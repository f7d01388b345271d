"""BatchNorm folding, the one implementation QAT, clustering and PTQ recovery share."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from tfcompress.core.batchnorm import FOLDABLE, FoldedBatchNormalization, fold_batch_norms

L = keras.layers
_SHAPES = {1: (6, 3), 2: (6, 6, 3), 3: (4, 4, 4, 3)}


def _producer(kind: type) -> tuple[keras.layers.Layer, tuple]:
    name = kind.__name__
    match = re.search(r"(\d)D", name)
    dims = int(match.group(1)) if match else 1
    if kind is L.Dense:
        return L.Dense(5), (7,)
    if "Depthwise" in name:
        return kind(3, depth_multiplier=2), _SHAPES[dims]
    return kind(4, 3), _SHAPES[dims]


@pytest.mark.parametrize("kind", FOLDABLE, ids=lambda kind: kind.__name__)
def test_folding_keeps_the_function_of_every_foldable_layer(kind):
    rng = np.random.default_rng(0)
    producer, shape = _producer(kind)
    inputs = keras.Input(shape)
    batchnorm = L.BatchNormalization()
    model = keras.Model(inputs, batchnorm(producer(inputs)))
    # statistics far from the identity, as after training
    channels = batchnorm.gamma.shape[0]
    batchnorm.set_weights(
        [
            rng.uniform(0.5, 2.0, channels),
            rng.normal(0, 1, channels),
            rng.normal(0, 1, channels),
            rng.uniform(0.1, 3.0, channels),
        ]
    )
    folded = fold_batch_norms(model)
    x = rng.normal(0, 1, (4, *shape)).astype("float32")
    assert isinstance(folded.layers[-1], FoldedBatchNormalization)
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_batchnorm_after_an_activation_is_not_folded():
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, L.BatchNormalization()(L.Conv2D(4, 3, activation="relu")(inputs)))
    folded = fold_batch_norms(model)
    assert isinstance(folded.layers[-1], L.BatchNormalization)
