"""keras.io "Knowledge Distillation" example with its Distiller class replaced by tfc.Distiller.

Everything else is the example's code path (keras-io/examples/vision/knowledge_distillation.py):
the same models (narrowed), the same compile/fit/evaluate calls. MNIST is replaced by sklearn
digits (8x8x1), and the epochs and widths are tiny.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import tfcompress as tfc

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("distillation-example")

Distiller = tfc.Distiller  # the example defines `class Distiller(keras.Model)`; ours replaces it


@pytest.fixture(scope="session")
def example(digits):
    keras.utils.set_random_seed(0)
    # "Create student and teacher models" (widths 256/512 and 16/32 made smaller)
    teacher = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(32, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
            layers.Flatten(),
            layers.Dense(10),
        ],
        name="teacher",
    )
    student = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(4, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            layers.Conv2D(8, (3, 3), strides=(2, 2), padding="same"),
            layers.Flatten(),
            layers.Dense(10),
        ],
        name="student",
    )
    student_scratch = keras.models.clone_model(student)

    # "Prepare the dataset" (digits instead of MNIST)
    x_train, y_train, x_test, y_test = digits.x_train, digits.y_train, digits.x_test, digits.y_test

    # "Train the teacher"
    teacher.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    teacher.fit(x_train, y_train, epochs=8, verbose=0)
    teacher_result = teacher.evaluate(x_test, y_test, verbose=0)

    # "Distill teacher to student"
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    distiller.fit(x_train, y_train, epochs=15, verbose=0)  # 3 on 60k MNIST images
    distiller_result = distiller.evaluate(x_test, y_test, verbose=0)

    # "Train student from scratch for comparison"
    student_scratch.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    student_scratch.fit(x_train, y_train, epochs=15, verbose=0)
    scratch_result = student_scratch.evaluate(x_test, y_test, verbose=0)
    return {
        "teacher": teacher_result,
        "distiller": distiller_result,
        "scratch": scratch_result,
        "distiller_model": distiller,
        "student": student,
    }


def test_distiller_evaluate_reports_the_examples_metric_above_chance(example):
    result = example["distiller"]
    values = result if isinstance(result, list) else [result]
    # the example prints the sparse categorical accuracy that evaluate reports
    assert any(0.3 < float(value) <= 1.0 for value in values), values


def test_distilled_student_predicts_digits_well_above_chance(example, digits):
    logits = example["student"].predict(digits.x_test, verbose=0)
    assert np.mean(logits.argmax(-1) == digits.y_test) > 0.3  # chance is 0.1


def test_distiller_trains_the_student_object_the_example_passed(example):
    assert example["distiller_model"].student is example["student"]
    assert not any(
        v.trainable for teacher in example["distiller_model"].teachers for v in teacher.variables
    )


def test_teacher_and_scratch_student_train_as_in_the_example(example):
    assert example["teacher"][1] > 0.8
    assert example["scratch"][1] > 0.3


def test_distilled_student_runs_in_litert_with_the_same_predictions(example, digits):
    flatbuffer = tfc.convert(example["student"], mode="float32")
    accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    expected = np.mean(
        example["student"].predict(digits.x_test, verbose=0).argmax(-1) == digits.y_test
    )
    assert abs(accuracy - expected) < 0.01
