"""Distillation figures of issue 5 on scikit-learn's digits.

A width-32 digits CNN teacher; a student with at most 1/8 of its parameters, trained for the same
number of epochs from scratch and with `tfc.Distiller` (mean of 3 seeds, test accuracy). If
`quantize_model` exists, the first distilled student is made quantization-aware, distilled a few
epochs more, converted to int8 and evaluated on the LiteRT interpreter.

Run: .venv/bin/python benchmarks/distill_bench.py   (writes benchmarks/results/distill.json)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEACHER_WIDTH, TEACHER_EPOCHS = 32, 12
STUDENT_WIDTH, STUDENT_EPOCHS, SEEDS = 6, 15, (0, 1, 2)
ALPHA, TEMPERATURE, BATCH = 0.5, 2, 64
QAT_EPOCHS = 3


def _accuracy(model, split) -> float:
    return float((model.predict(split.x_test, verbose=0).argmax(-1) == split.y_test).mean())


def _scratch(split, seed: int):
    import keras

    from tfcompress.models import build_digits_cnn, compile_classifier

    keras.utils.set_random_seed(seed)
    student = compile_classifier(build_digits_cnn(width=STUDENT_WIDTH, name="student"))
    student.fit(split.x_train, split.y_train, epochs=STUDENT_EPOCHS, batch_size=BATCH, verbose=0)
    return student


def _distill(split, teacher, student, seed: int, epochs: int = STUDENT_EPOCHS):
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(seed)
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        metrics=["accuracy"],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=ALPHA,
        temperature=TEMPERATURE,
    )
    distiller.fit(split.x_train, split.y_train, epochs=epochs, batch_size=BATCH, verbose=0)
    return distiller.student


def _qat_row(split, teacher, float_student) -> dict:
    """QAT as a fine-tuning step: quantize the distilled float student, distill a few epochs more."""
    import keras

    import tfcompress as tfc

    try:
        from tfcompress.quantization import quantize_model
    except ImportError:
        return {"skipped": "tfcompress.quantization is not available in this checkout"}
    keras.utils.set_random_seed(0)
    student = _distill(split, teacher, quantize_model(float_student), seed=0, epochs=QAT_EPOCHS)
    keras_accuracy = _accuracy(student, split)
    # fake-quant ranges learned in training: no calibration data needed
    flatbuffer = tfc.convert(student, mode="int8")
    int8_accuracy = tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test)
    return {
        "recipe": f"distilled float student -> quantize_model -> distilled {QAT_EPOCHS} epochs",
        "keras_accuracy": keras_accuracy,
        "int8_accuracy": int8_accuracy,
        "gap_pp": 100 * abs(int8_accuracy - keras_accuracy),
        "int8_bytes": len(flatbuffer),
    }


def main() -> None:
    import keras
    from _common import write_results

    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn, compile_classifier

    split = tfc.data.load_digits()
    keras.utils.set_random_seed(0)
    teacher = compile_classifier(build_digits_cnn(width=TEACHER_WIDTH, name="teacher"))
    teacher.fit(split.x_train, split.y_train, epochs=TEACHER_EPOCHS, batch_size=BATCH, verbose=0)
    teacher_params = teacher.count_params()
    student_params = build_digits_cnn(width=STUDENT_WIDTH).count_params()

    scratch, distilled, students = [], [], []
    for seed in SEEDS:
        scratch.append(_accuracy(_scratch(split, seed), split))
        keras.utils.set_random_seed(seed)
        student = build_digits_cnn(width=STUDENT_WIDTH, name="student")
        students.append(_distill(split, teacher, student, seed))
        distilled.append(_accuracy(students[-1], split))

    write_results(
        "distill",
        {
            "dataset": "sklearn digits (test split)",
            "teacher": {"width": TEACHER_WIDTH, "params": teacher_params, "epochs": TEACHER_EPOCHS},
            "student": {
                "width": STUDENT_WIDTH,
                "params": student_params,
                "params_ratio": student_params / teacher_params,
                "epochs": STUDENT_EPOCHS,
            },
            "settings": {"alpha": ALPHA, "temperature": TEMPERATURE, "seeds": list(SEEDS)},
            "teacher_accuracy": _accuracy(teacher, split),
            "distilled_accuracy_mean": statistics.mean(distilled),
            "scratch_accuracy_mean": statistics.mean(scratch),
            "distilled_accuracy": distilled,
            "scratch_accuracy": scratch,
            "distilled_beats_scratch": statistics.mean(distilled) > statistics.mean(scratch),
            "qat_student_int8": _qat_row(split, teacher, students[0]),
        },
    )


if __name__ == "__main__":
    main()
