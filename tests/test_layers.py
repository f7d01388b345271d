"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes, faster."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.layers import FusedBatchNormalization
from tfcompress.models import build_digits_cnn


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((8, 6, 6, 5), {}),  # the fused kernel
        ((8, 6, 6, 5), {"center": False, "momentum": 0.9}),
        ((8, 6, 6, 5), {"epsilon": 1e-6}),  # below the fused op's minimum: Keras's code
        ((8, 5), {}),  # 2-D: Keras's code
    ],
)
def test_training_step_matches_keras_batchnorm(shape: tuple, kwargs: dict, rng) -> None:
    x = tf.constant(rng.normal(2.0, 3.0, size=shape).astype("float32"))
    ours, theirs = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    results = []
    for layer in (ours, theirs):
        layer.build(x.shape)
        if layer.gamma is not None:
            layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]).astype("float32"))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        results.append((y, grads, layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    (y1, g1, m1, v1), (y2, g2, m2, v2) = results
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)  # biased variance, as Keras 3 tracks it
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-5)


def test_pruning_trains_with_fused_batchnorm_and_strips_back_to_keras(tmp_path, digits) -> None:
    pruned = tfc.prune_low_magnitude(build_digits_cnn(width=4))
    kinds = {type(layer) for layer in pruned.layers}
    assert FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])  # fmt: skip
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    x = digits.x_test[:64]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    plain = tfc.strip_pruning(pruned)
    assert {type(layer) for layer in plain.layers} >= {keras.layers.BatchNormalization}
    assert FusedBatchNormalization not in {type(layer) for layer in plain.layers}
    np.testing.assert_allclose(plain.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
