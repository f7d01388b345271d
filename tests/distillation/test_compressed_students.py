"""Distilling into a pruning-wrapped student (and a QAT student when tfc.quantize_model exists)."""

from __future__ import annotations

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.data import Split
from tfcompress.models import build_digits_cnn


def test_pruning_callbacks_work_through_distiller_fit(teacher: keras.Model, digits: Split) -> None:
    keras.utils.set_random_seed(2)
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    student = tfc.prune_low_magnitude(build_digits_cnn(width=4), schedule=schedule)
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(metrics=["accuracy"], alpha=0.3)
    x, y = digits.x_train[:256], digits.y_train[:256]
    distiller.fit(
        x, y, epochs=2, batch_size=64, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()]
    )
    wrappers = tfc.pruning.pruned_layers(distiller.student)
    # 8 batches: the callback advanced every wrapper once per batch (steps count from 0)
    assert wrappers and all(int(w.pruning_step.numpy()) == 7 for w in wrappers)
    final = tfc.strip_pruning(distiller.student)
    kernels = [
        layer.kernel.numpy()
        for layer in final.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]
    sparsity = np.mean(np.concatenate([k.ravel() for k in kernels]) == 0)
    assert 0.45 <= sparsity <= 0.55
    np.testing.assert_allclose(
        final.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-5
    )


def test_qat_student_distills_converts_to_int8_and_reloads(
    teacher: keras.Model, digits: Split, tmp_path
) -> None:
    from tfcompress.quantization import quantize_model

    keras.utils.set_random_seed(4)
    student = quantize_model(build_digits_cnn(width=4))
    distiller = tfc.Distiller(teacher=teacher, student=student)
    distiller.compile(metrics=["accuracy"], alpha=0.5, temperature=2)
    x, y = digits.x_train[:256], digits.y_train[:256]
    distiller.fit(x, y, epochs=1, batch_size=64, verbose=0)

    path = tmp_path / "qat_distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    x_test = digits.x_test[:200]
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), distiller.predict(x_test, verbose=0), atol=1e-6
    )

    # the fake-quant student converts as is (no calibration data) and the int8 model agrees
    flatbuffer = tfc.convert(distiller.student, mode="int8")
    keras_logits = distiller.student.predict(x_test, verbose=0)
    tflite_logits = tfc.converter.run_tflite(flatbuffer, x_test)
    output_step = (keras_logits.max() - keras_logits.min()) / 255
    assert np.abs(keras_logits - tflite_logits).max() <= 3 * output_step
