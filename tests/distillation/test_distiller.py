"""Distiller training behaviour, checked on the real digits data with real Keras models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.data import Split
from tfcompress.distillation import AngleLoss, FeatureLoss, LogitsKL, PairwiseDistanceLoss

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _keras_io_compile(distiller: tfc.Distiller, **overrides: object) -> None:
    arguments = dict(
        optimizer="adam",
        metrics=["accuracy"],
        student_loss_fn=SCCE,
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=3,
    )
    distiller.compile(**{**arguments, **overrides})


def test_keras_io_signature_trains_only_the_student_and_reports_losses_separately(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [v.numpy().copy() for v in student.trainable_variables]
    distiller = tfc.Distiller(teacher=teacher, student=student)
    _keras_io_compile(distiller)
    history = distiller.fit(*batch, epochs=1, batch_size=32, verbose=0).history
    assert set(history) == {"loss", "student_loss", "distillation_loss", "accuracy"}
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }
    for before, after in zip(teacher_before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for before, variable in zip(student_before, student.trainable_variables, strict=True):
        assert not np.array_equal(before, variable.numpy()), variable.path


def test_teacher_runs_in_inference_mode(student: keras.Model, batch: tuple) -> None:
    # a dropout teacher: in training mode its logits would be random
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dropout(0.5)(keras.layers.Flatten()(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    distiller = tfc.Distiller(teacher=teacher, student=student)
    _keras_io_compile(distiller, optimizer=keras.optimizers.SGD(0.0), alpha=0.0)
    x, y = batch
    history = distiller.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
    expected = LogitsKL(3).compute(teacher(x, training=False), student(x, training=True))
    np.testing.assert_allclose(history["distillation_loss"][0], float(expected), rtol=1e-3)
    np.testing.assert_allclose(history["loss"][0], float(expected), rtol=1e-3)


def test_evaluate_reports_the_students_metrics(
    teacher: keras.Model, student: keras.Model, digits: Split
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    _keras_io_compile(distiller, alpha=0.5)
    distiller.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)
    x, y = digits.x_test[:200], digits.y_test[:200]
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    logits = student.predict(x, verbose=0)
    np.testing.assert_allclose(result["accuracy"], np.mean(logits.argmax(-1) == y), atol=1e-6)
    student_loss = float(SCCE(y, logits))
    np.testing.assert_allclose(result["student_loss"], student_loss, rtol=1e-4)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), logits, atol=1e-6)


def test_student_is_a_plain_model_that_converts_to_int8(
    teacher: keras.Model, student: keras.Model, digits: Split
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    _keras_io_compile(distiller)
    distiller.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    exported = distiller.student
    assert exported is student and not isinstance(exported, tfc.Distiller)
    x, y = digits.x_test[:200], digits.y_test[:200]
    flatbuffer = tfc.convert(exported, mode="int8", representative_data=digits.x_train[:100])
    keras_accuracy = float(np.mean(exported.predict(x, verbose=0).argmax(-1) == y))
    assert abs(tfc.evaluate_tflite(flatbuffer, x, y) - keras_accuracy) <= 0.03


def test_keras_distillation_loss_objects_are_accepted(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        student_loss_fn=SCCE,
        distillation_loss_fn=[
            keras.distillation.LogitsDistillation(temperature=2.0),
            keras.distillation.FeatureDistillation(
                loss="mse", teacher_layer_name="fc1", student_layer_name="fc1"
            ),
        ],
        alpha=0.0,
    )
    x, y = batch
    result = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    expected_logits = LogitsKL(2.0).compute(teacher(x), student(x))
    np.testing.assert_allclose(result["logits_kl"], float(expected_logits), rtol=1e-3)
    assert result["feature_fc1"] > 0
    np.testing.assert_allclose(
        result["distillation_loss"], result["logits_kl"] + result["feature_fc1"], rtol=1e-4
    )


def test_feature_loss_learns_a_projection_when_widths_differ(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(distillation_loss_fn=[LogitsKL(4), FeatureLoss("relu2")], alpha=0.5)
    projection = distiller.projections["1_0"]
    # student relu2 has 8 channels, the teacher's 32: a learned 8 -> 32 map (1x1 convolution)
    assert tuple(projection.kernel.shape) == (8, 32)
    before = projection.kernel.numpy().copy()
    distiller.fit(*batch, epochs=1, batch_size=32, verbose=0)
    assert not np.allclose(before, projection.kernel.numpy())
    assert all(w is not projection.kernel for w in distiller.student.weights)


def test_several_teachers_are_weighted(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    keras.utils.set_random_seed(3)
    other = tfc.models.build_digits_cnn(width=4, name="other_teacher")
    distiller = tfc.Distiller(teacher=[teacher, other], student=student, teacher_weights=[0.7, 0.3])
    distiller.compile(distillation_loss_fn=LogitsKL(2.0), alpha=0.0)
    x, y = batch
    result = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    s = student(x)
    expected = 0.7 * LogitsKL(2.0).compute(teacher(x), s) + 0.3 * LogitsKL(2.0).compute(other(x), s)
    np.testing.assert_allclose(result["distillation_loss"], float(expected), rtol=1e-3)


def test_relation_losses_train_through_the_distiller(
    teacher: keras.Model, student: keras.Model, batch: tuple
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(
        distillation_loss_fn=[
            PairwiseDistanceLoss(teacher_layer="gap"),
            AngleLoss(teacher_layer="fc1", weight=2.0),
        ],
        alpha=0.2,
    )
    history = distiller.fit(*batch, epochs=2, batch_size=32, verbose=0).history
    assert {"pairwise_distance", "angle"} <= set(history)
    assert all(np.isfinite(v).all() for v in history.values())


@pytest.mark.slow
def test_saved_distiller_loads_back_with_identical_predictions_and_settings(
    teacher: keras.Model, student: keras.Model, batch: tuple, tmp_path
) -> None:
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(
        metrics=["accuracy"],
        distillation_loss_fn=[LogitsKL(5), FeatureLoss("relu2", weight=0.5)],
        alpha=0.25,
    )
    x, y = batch
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, tfc.Distiller)
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0))
    assert restored.alpha == 0.25
    assert [loss.get_config() for loss in restored.distillation_losses] == [
        loss.get_config() for loss in distiller.distillation_losses
    ]
    np.testing.assert_array_equal(
        restored.projections["1_0"].kernel.numpy(), distiller.projections["1_0"].kernel.numpy()
    )
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = restored.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-5)
    restored.fit(x, y, epochs=1, batch_size=32, verbose=0)
