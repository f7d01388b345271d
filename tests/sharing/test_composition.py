"""Parameter sharing composes with pruning: pruned zeros and shared values both reach the int8 file."""

from __future__ import annotations

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.models import compile_classifier


def test_prune_then_cluster_keeps_zeros_and_shared_values_in_int8(trained_digits_cnn, digits):
    keras.utils.set_random_seed(0)
    model = keras.models.clone_model(trained_digits_cnn)
    model.set_weights(trained_digits_cnn.get_weights())
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = compile_classifier(
        tfc.prune_low_magnitude(model, schedule=schedule, allocation="uniform"), 1e-3
    )
    pruned.fit(
        digits.x_train[:256], digits.y_train[:256], epochs=1, batch_size=64, verbose=0,
        callbacks=[tfc.pruning.UpdatePruningStep()],
    )  # fmt: skip
    sparse = tfc.strip_pruning(pruned)
    clustered = tfc.cluster_weights(
        sparse, number_of_clusters=8, preserve_sparsity=True, layers=["fc1"]
    )
    compile_classifier(clustered, 1e-3)
    clustered.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, batch_size=64, verbose=0)
    final = tfc.strip_clustering(clustered)
    flatbuffer = tfc.convert(final, "int8", digits.x_train[:100], per_channel=False)
    report = tfc.inspect(flatbuffer)
    fc1 = next(op for op in report.ops if op.name == "FULLY_CONNECTED")
    weights = report.tensors[fc1.inputs[1]].buffer
    assert abs(np.mean(weights == 0) - 0.5) <= 0.02
    assert len(np.unique(weights[weights != 0])) <= 8


def test_factorized_model_can_be_pruned(digits):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(x))
    factorized, _ = tfc.factorize(model, rank=8, layers=["hidden"])
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = compile_classifier(
        tfc.prune_low_magnitude(factorized, schedule=schedule, allocation="uniform"), 1e-3
    )
    pruned.fit(
        digits.x_train[:128], digits.y_train[:128], epochs=1, batch_size=64, verbose=0,
        callbacks=[tfc.pruning.UpdatePruningStep()],
    )  # fmt: skip
    final = tfc.strip_pruning(pruned)
    kernels = [w for w in final.get_weights() if w.ndim == 2]
    assert len(kernels) == 3
    assert all(abs(np.mean(k == 0) - 0.5) <= 0.05 for k in kernels)


def test_cluster_preserving_qat_keeps_shared_values_in_the_int8_file(trained_digits_cnn, digits):
    keras.utils.set_random_seed(0)
    clustered = compile_classifier(
        tfc.cluster_weights(trained_digits_cnn, number_of_clusters=8), 1e-3
    )
    clustered.fit(digits.x_train[:512], digits.y_train[:512], epochs=1, batch_size=64, verbose=0)
    qat = compile_classifier(
        tfc.sharing.quantize_clustered_model(tfc.strip_clustering(clustered)), 1e-3
    )
    qat.fit(digits.x_train[:512], digits.y_train[:512], epochs=1, batch_size=64, verbose=0)
    flatbuffer = tfc.convert(qat, "int8")
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    kernels = [
        report.tensors[op.inputs[1]]
        for op in report.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(kernels) == 5 and all(len(np.unique(t.buffer)) <= 8 for t in kernels)
    keras_top1 = qat.predict(digits.x_test, verbose=0).argmax(-1)
    tflite_top1 = tfc.converter.run_tflite(flatbuffer, digits.x_test).argmax(-1)
    assert np.mean(keras_top1 == tflite_top1) >= 0.98


def test_clustered_student_distills(trained_digits_cnn, digits):
    from tfcompress.models import build_digits_cnn

    student = tfc.cluster_weights(build_digits_cnn(width=8), number_of_clusters=4)
    from tfcompress.core.graph import clone_with_weights

    # the Distiller freezes its teacher: give it a copy, not the shared session fixture
    distiller = tfc.Distiller(teacher=clone_with_weights(trained_digits_cnn), student=student)
    distiller.compile(
        optimizer="adam",
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.5,
        temperature=2,
    )
    distiller.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, batch_size=64, verbose=0)
    plain = tfc.strip_clustering(distiller.student)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            assert len(np.unique(keras.ops.convert_to_numpy(layer.kernel))) <= 4
