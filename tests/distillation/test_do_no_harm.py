"""The opt-in "do no harm" settings: distilling only where the teacher is right, and annealing
the teacher's weight to 0 over training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.distillation import LogitsKL, TeacherCorrectKL


def test_teacher_correct_kl_is_logits_kl_on_the_examples_the_teacher_gets_right(
    rng: np.random.Generator,
) -> None:
    teacher, student = rng.normal(size=(2, 8, 10)).astype("float32")
    labels = teacher.argmax(-1)
    labels[::2] = (labels[::2] + 1) % 10  # the teacher is wrong on the even examples
    right = np.arange(8) % 2 == 1
    per_example = [
        float(LogitsKL(2.0).compute(teacher[i : i + 1], student[i : i + 1])) for i in range(8)
    ]
    expected = np.sum(np.array(per_example)[right]) / 8  # zero on the wrong ones, batch mean
    gated = TeacherCorrectKL(2.0)
    np.testing.assert_allclose(
        float(gated.compute(teacher, student, labels=labels)), expected, rtol=1e-5
    )
    one_hot = np.eye(10, dtype="float32")[labels]
    np.testing.assert_allclose(
        float(gated.compute(teacher, student, labels=one_hot)), expected, rtol=1e-5
    )
    with pytest.raises(ValueError, match="labels"):
        gated.compute(teacher, student)
    with pytest.raises(ValueError, match="teacher_layer='relu2'"):
        TeacherCorrectKL(teacher_layer="relu2")


def test_annealed_distiller_trains_on_the_labels_alone_after_anneal_steps(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    x, y = batch[0][:64], batch[1][:64]
    distiller = tfc.Distiller(teacher=teacher, student=student)
    # 64 examples, batch 32: the teacher's weight falls to 0 over the first epoch's 2 steps
    distiller.compile(
        alpha=0.5, anneal_steps=2, distillation_loss_fn=TeacherCorrectKL(), run_eagerly=True
    )
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0).history
    assert history["distillation_loss"][1] > 0
    # epoch 1 mixed both losses; in epoch 2 the loss is the student loss alone
    assert history["loss"][0] != pytest.approx(history["student_loss"][0], rel=1e-3)
    assert history["loss"][1] == pytest.approx(history["student_loss"][1], rel=1e-6)


def test_distiller_gives_labels_to_the_gated_loss_so_a_wrong_teacher_teaches_nothing(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    x = batch[0][:64]
    wrong = (keras.ops.convert_to_numpy(teacher(x)).argmax(-1) + 1) % 10
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(distillation_loss_fn=TeacherCorrectKL(), run_eagerly=True)
    result = distiller.evaluate(x, wrong, batch_size=64, verbose=0, return_dict=True)
    assert result["distillation_loss"] == 0.0
    assert result["student_loss"] > 0
    right = distiller.evaluate(x, (wrong + 9) % 10, batch_size=64, verbose=0, return_dict=True)
    assert right["distillation_loss"] > 0


@pytest.mark.slow
def test_compiled_gated_annealed_distiller_round_trips_through_keras_file(
    teacher: keras.Model, student: keras.Model, tmp_path
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(alpha=0.7, anneal_steps=100, distillation_loss_fn=TeacherCorrectKL(2.0))
    path = tmp_path / "annealed.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.alpha, restored.anneal_steps) == (0.7, 100)
    (loss,) = restored.distillation_losses
    assert isinstance(loss, TeacherCorrectKL) and loss.temperature == 2.0


def test_anneal_steps_must_be_a_positive_number_of_steps(
    teacher: keras.Model, student: keras.Model
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    with pytest.raises(ValueError, match="anneal_steps.*got 0"):
        distiller.compile(anneal_steps=0)
