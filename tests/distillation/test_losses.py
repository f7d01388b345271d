"""Distillation losses against direct numpy computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.distillation import (
    AngleLoss,
    FeatureLoss,
    LogitsKL,
    NonTargetKL,
    PairwiseDistanceLoss,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _softened_kl(teacher: np.ndarray, student: np.ndarray, temperature: float) -> float:
    """T**2 times the mean KL divergence between the two softened distributions."""
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    return temperature**2 * np.mean(np.sum(p * np.log(p / q), -1))


def test_logits_kl_is_temperature_squared_times_softened_kl(rng: np.random.Generator) -> None:
    teacher, student = rng.normal(size=(2, 16, 10)).astype("float32") * 3
    expected = _softened_kl(teacher, student, 4)
    np.testing.assert_allclose(float(LogitsKL(4).compute(teacher, student)), expected, rtol=1e-4)


def test_keras_kl_divergence_on_probabilities_gives_the_same_loss(
    rng: np.random.Generator,
) -> None:
    teacher, student = rng.normal(size=(2, 16, 10)).astype("float32")
    exact = LogitsKL(3).compute(teacher, student)
    keras_io = LogitsKL(3, loss=keras.losses.KLDivergence()).compute(teacher, student)
    np.testing.assert_allclose(float(keras_io), float(exact), rtol=1e-3)


def _gradient_norm(loss: LogitsKL, teacher: np.ndarray, student: np.ndarray) -> float:
    logits = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = loss.compute(teacher, logits)
    return float(tf.norm(tape.gradient(value, logits)))


def test_temperature_squared_keeps_gradient_magnitude_across_temperatures(
    rng: np.random.Generator,
) -> None:
    teacher, student = rng.normal(size=(2, 32, 10)).astype("float32")
    low, high = (_gradient_norm(LogitsKL(t), teacher, student) for t in (5.0, 20.0))
    # without the T**2 factor the gradient would shrink 16 times from T=5 to T=20
    assert 0.8 < high / low < 1.25


def test_non_target_kl_is_the_kl_over_the_classes_the_teacher_does_not_predict(
    rng: np.random.Generator,
) -> None:
    teacher, student = rng.normal(size=(2, 16, 10)).astype("float32") * 3
    top = teacher.argmax(-1)
    keep = np.ones_like(teacher, bool)
    keep[np.arange(16), top] = False
    expected = _softened_kl(teacher[keep].reshape(16, 9), student[keep].reshape(16, 9), 2)
    np.testing.assert_allclose(float(NonTargetKL(2).compute(teacher, student)), expected, rtol=1e-4)


def test_non_target_kl_leaves_the_predicted_class_logit_to_the_labels(
    rng: np.random.Generator,
) -> None:
    teacher, student = rng.normal(size=(2, 8, 10)).astype("float32")
    logits = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = NonTargetKL().compute(teacher, logits)
    gradient = tape.gradient(value, logits).numpy()
    on_top = gradient[np.arange(8), teacher.argmax(-1)]
    assert float(value) > 0 and np.abs(gradient).max() > 1e-3
    np.testing.assert_array_equal(on_top, np.zeros(8, "float32"))


def test_feature_loss_is_mean_squared_error(rng: np.random.Generator) -> None:
    teacher, student = rng.normal(size=(2, 4, 3, 3, 5)).astype("float32")
    value = FeatureLoss("conv").compute(teacher, student)
    np.testing.assert_allclose(float(value), np.mean((teacher - student) ** 2), rtol=1e-5)


@pytest.mark.parametrize("loss_class", [PairwiseDistanceLoss, AngleLoss])
def test_relation_losses_ignore_scale_but_see_changed_relations(
    loss_class: type, rng: np.random.Generator
) -> None:
    features = rng.normal(size=(8, 6)).astype("float32")
    loss = loss_class()
    assert float(loss.compute(features, 5 * features)) < 1e-5
    shuffled = features.copy()
    shuffled[:, :3] = rng.normal(size=(8, 3))
    assert float(loss.compute(features, shuffled)) > 1e-3


def test_pairwise_distance_loss_matches_numpy(rng: np.random.Generator) -> None:
    teacher, student = rng.normal(size=(2, 6, 4)).astype("float32")

    def normalized(f: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(f[:, None] - f[None], axis=-1)
        return d / (d.sum() / (len(f) * (len(f) - 1)))

    diff = np.abs(normalized(teacher) - normalized(student))
    expected = np.mean(np.where(diff < 1, 0.5 * diff**2, diff - 0.5))
    value = PairwiseDistanceLoss().compute(teacher, student)
    np.testing.assert_allclose(float(value), expected, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        LogitsKL(2.5, weight=0.5),
        LogitsKL(3, loss=keras.losses.KLDivergence()),
        FeatureLoss("relu2", "relu1", loss="mae", weight=2.0),
        PairwiseDistanceLoss(teacher_layer="gap", name="rkd_d"),
        AngleLoss(teacher_layer="fc1"),
        NonTargetKL(2.0, weight=0.5),
    ],
)
def test_losses_serialize_and_compute_the_same_after_reload(
    loss: object, rng: np.random.Generator
) -> None:
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config()["name"] == loss.get_config()["name"]
    teacher, student = rng.normal(size=(2, 6, 10)).astype("float32")
    np.testing.assert_allclose(
        float(restored.compute(teacher, student)), float(loss.compute(teacher, student)), rtol=1e-6
    )
