"""PruningSummaries writes TensorBoard scalars; TaylorScores drives the loss-aware criterion."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.models import build_digits_cnn, compile_classifier
from tfcompress.pruning import (
    ConstantSparsity,
    PruningSummaries,
    TaylorScores,
    UpdatePruningStep,
    magnitude_mask,
    pruned_layers,
)


def _scalars(log_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for path in log_dir.rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else 0.0
                values.setdefault(value.tag, []).append(number)
    return values


def test_pruning_summaries_write_sparsity_and_threshold_per_layer(tmp_path, digits) -> None:
    model = compile_classifier(
        tfc.prune_low_magnitude(
            build_digits_cnn(width=4), ConstantSparsity(0.5, 0), allocation="uniform"
        )
    )
    model.fit(
        digits.x_train[:32],
        digits.y_train[:32],
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[UpdatePruningStep(), PruningSummaries(str(tmp_path))],
    )
    scalars = _scalars(tmp_path)
    for name in ("conv1", "conv2", "conv3", "fc1", "logits"):
        assert scalars[f"{name}/sparsity"] == pytest.approx([0.5, 0.5], abs=0.02)
        assert len(scalars[f"{name}/threshold"]) == 2
        assert all(threshold > 0 for threshold in scalars[f"{name}/threshold"])


def test_callbacks_refuse_a_model_without_pruned_layers_and_bad_arguments(tmp_path) -> None:
    model = compile_classifier(build_digits_cnn(width=4))
    with pytest.raises(ValueError, match="no PruneLowMagnitude"):
        model.fit(np.zeros((4, 8, 8, 1)), np.zeros(4), verbose=0, callbacks=[UpdatePruningStep()])
    with pytest.raises(ValueError, match="update_freq"):
        PruningSummaries(str(tmp_path), update_freq=0)


def test_taylor_criterion_keeps_the_weights_with_largest_weight_times_gradient(digits) -> None:
    keras.utils.set_random_seed(3)
    model = tfc.prune_low_magnitude(
        build_digits_cnn(width=4),
        ConstantSparsity(0.5, 0),
        criterion="taylor",
        allocation="uniform",
    )
    # a zero learning rate keeps the weights fixed, so the mask can be recomputed independently
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True))
    x, y = digits.x_train[:64], digits.y_train[:64]
    weights = [keras.ops.convert_to_numpy(w.kernels[0]) for w in pruned_layers(model)]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
    gradients = tape.gradient(loss, [w.kernels[0].value for w in pruned_layers(model)])
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0,
              callbacks=[UpdatePruningStep(), TaylorScores(x, y)])  # fmt: skip
    for wrapper, weight, gradient in zip(pruned_layers(model), weights, gradients, strict=True):
        expected = magnitude_mask(np.abs(weight * gradient.numpy()), 0.5).numpy()
        assert np.mean(expected == wrapper.masks[0].numpy()) > 0.97, wrapper.name
        magnitude = magnitude_mask(weight, 0.5).numpy()
        assert not np.array_equal(magnitude, wrapper.masks[0].numpy())


def test_taylor_scores_requires_a_taylor_pruned_model(digits) -> None:
    model = compile_classifier(tfc.prune_low_magnitude(build_digits_cnn(width=4)))
    with pytest.raises(ValueError, match="criterion='taylor'"):
        model.fit(
            digits.x_train[:8],
            digits.y_train[:8],
            verbose=0,
            callbacks=[UpdatePruningStep(), TaylorScores(digits.x_train[:8], digits.y_train[:8])],
        )
