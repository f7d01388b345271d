"""Demo row for distillation: a student with ~1/17 of the CNN's parameters, distilled from it."""

from __future__ import annotations

import keras

from tfcompress.core.graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.distillation import Distiller
from tfcompress.models import build_digits_cnn

STUDENT_WIDTH, EPOCHS = 6, 15


def make_rows(
    split: Split, float_model: keras.Model, epochs: int | None = None
) -> list[tuple[str, keras.Model]]:
    """One row: ("distilled student int8", the width-6 student distilled for `epochs` (or
    `EPOCHS`)).

    The Distiller freezes its teacher, so the trained `float_model` is copied first and left as
    it was.

    Example:
        >>> rows = make_rows(split, float_model)  # doctest: +SKIP
        >>> rows[0][0]  # doctest: +SKIP
        'distilled student int8'
    """
    teacher = clone_with_weights(float_model)
    keras.utils.set_random_seed(0)
    student = build_digits_cnn(width=STUDENT_WIDTH, name="distilled_student")
    distiller = Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.5,
        temperature=2,
    )
    distiller.fit(split.x_train, split.y_train, epochs=epochs or EPOCHS, batch_size=64, verbose=0)
    return [("distilled student int8", distiller.student)]
