"""Misuse of the Distiller fails early with a message naming the argument and the fix."""

from __future__ import annotations

import keras
import pytest

import tfcompress as tfc
from tfcompress.distillation import FeatureLoss, LogitsKL
from tfcompress.models import build_digits_cnn


def test_different_output_shapes_are_refused(teacher: keras.Model) -> None:
    student = build_digits_cnn(width=4, num_classes=5, name="five_classes")
    with pytest.raises(ValueError, match=r"outputs shape \(10,\).*'five_classes' outputs \(5,\)"):
        tfc.Distiller(teacher=teacher, student=student)


@pytest.mark.parametrize(
    ("loss", "role"),
    [(FeatureLoss("no_such_layer", "relu2"), "teacher"), (FeatureLoss("relu2", "typo"), "student")],
)
def test_unknown_feature_layer_names_the_layer_and_lists_the_choices(
    teacher: keras.Model, student: keras.Model, loss: FeatureLoss, role: str
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match=rf"the {role} .* has no layer named .*Its layers are"):
        distiller.compile(distillation_loss_fn=loss)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.5"])
def test_alpha_outside_zero_one_is_refused(
    teacher: keras.Model, student: keras.Model, alpha: object
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]"):
        distiller.compile(alpha=alpha)


@pytest.mark.parametrize("temperature", [0, -2.0])
def test_non_positive_temperature_is_refused(
    teacher: keras.Model, student: keras.Model, temperature: float
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        distiller.compile(temperature=temperature)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        LogitsKL(temperature=temperature)


def test_feature_maps_of_different_resolution_are_refused(
    teacher: keras.Model, student: keras.Model
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match="all dimensions but the last must match"):
        distiller.compile(distillation_loss_fn=FeatureLoss("relu2", "conv3"))


def test_teacher_weights_must_match_the_teachers(
    teacher: keras.Model, student: keras.Model
) -> None:
    with pytest.raises(ValueError, match="one per teacher"):
        tfc.Distiller(teacher=[teacher], student=student, teacher_weights=[0.5, 0.5])


def test_fit_before_compile_says_to_compile(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match="compile"):
        distiller.fit(*batch, epochs=1, verbose=0)
