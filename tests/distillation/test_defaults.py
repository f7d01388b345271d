"""The compile defaults (chosen from benchmarks/distill_defaults_bench.py) and the keras.io path.

Changing a default must not change what keras.io's explicit arguments do: they still train
exactly like keras.io's own Distiller, reimplemented here from its published formula.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
from keras import ops

import tfcompress as tfc
from tfcompress.data import Split
from tfcompress.distillation import LogitsKL
from tfcompress.models import build_digits_cnn

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _KerasIoReference(keras.Model):
    """keras.io's distillation loss, alpha * SCCE + (1 - alpha) * T**2 * KL(soft t || soft s),
    through Keras's own `fit` loop (`compute_loss`)."""

    def __init__(self, teacher: keras.Model, student: keras.Model, alpha: float, t: float) -> None:
        super().__init__(name="keras_io_reference")
        self.teacher, self.student, self.alpha, self.t = teacher, student, alpha, t
        self.teacher.trainable = False
        self.kl = keras.losses.KLDivergence()

    def call(self, x, training=None):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        soft_teacher = ops.softmax(self.teacher(x, training=False) / self.t, axis=1)
        soft_student = ops.softmax(y_pred / self.t, axis=1)
        distillation = self.kl(soft_teacher, soft_student) * self.t**2
        return self.alpha * SCCE(y, y_pred) + (1 - self.alpha) * distillation


def _student(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_digits_cnn(width=4, name="student")


def test_keras_io_arguments_train_exactly_like_keras_io(teacher: keras.Model, batch: tuple) -> None:
    x, y = batch
    ours = tfc.Distiller(teacher=teacher, student=_student(5))
    ours.compile(
        optimizer=keras.optimizers.Adam(),
        student_loss_fn=SCCE,
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=3,
    )
    reference = _KerasIoReference(teacher, _student(5), alpha=0.1, t=3.0)
    reference.compile(optimizer=keras.optimizers.Adam())
    for model in (ours, reference):
        model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    trained = zip(ours.student.get_weights(), reference.student.get_weights(), strict=True)
    for ours_weight, reference_weight in trained:
        np.testing.assert_allclose(ours_weight, reference_weight, rtol=1e-4, atol=1e-5)


def test_compile_defaults_are_half_labels_half_teacher_at_temperature_one(
    teacher: keras.Model, student: keras.Model
) -> None:
    parameters = inspect.signature(tfc.Distiller.compile).parameters
    assert parameters["alpha"].default == 0.5
    assert parameters["temperature"].default == 1
    distiller = tfc.Distiller(teacher=teacher, student=student)
    assert (distiller.alpha, distiller.temperature) == (0.5, 1.0)
    distiller.compile()
    (loss,) = distiller.distillation_losses
    assert isinstance(loss, LogitsKL) and loss.loss is None and loss.temperature == 1.0
    assert (distiller.alpha, distiller.temperature) == (0.5, 1.0)


def _mlp_student(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name="mlp_student")


def _test_accuracy(model: keras.Model, digits: Split) -> float:
    return float(np.mean(model.predict(digits.x_test, verbose=0).argmax(-1) == digits.y_test))


@pytest.mark.slow
def test_distilling_with_the_defaults_is_not_worse_than_training_alone(
    teacher: keras.Model, digits: Split
) -> None:
    # the same student, initial weights, data order, optimizer and epochs; keras.io's alpha=0.1,
    # T=3 cost this student 2 to 6 points (benchmarks/studies/2026-11-24/distill_defaults_grid.json)
    fit = dict(x=digits.x_train, y=digits.y_train, epochs=15, batch_size=32, verbose=0)
    alone = _mlp_student(0)
    alone.compile(optimizer="adam", loss=SCCE)
    keras.utils.set_random_seed(0)
    alone.fit(**fit)
    distiller = tfc.Distiller(teacher=teacher, student=_mlp_student(0))
    distiller.compile()
    keras.utils.set_random_seed(0)
    distiller.fit(**fit)
    # one point is 4.5 test images; the defaults stay within one image of training alone
    assert _test_accuracy(distiller.student, digits) >= _test_accuracy(alone, digits) - 0.01
