"""Digits CNN: prune -> strip -> int8 TFLite on LiteRT; .keras save/load and resume mid-schedule."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.models import compile_classifier
from tfcompress.pruning import PolynomialDecay, UpdatePruningStep, pruned_layers


def _clone(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def kernel_sparsity_in_flatbuffer(flatbuffer: bytes) -> dict[str, float]:
    """Fraction of zeros of every int8 constant kernel (rank >= 2) in the flatbuffer."""
    return {
        tensor.name: float(np.mean(tensor.buffer == 0))
        for tensor in tfc.inspect(flatbuffer).tensors
        if tensor.buffer is not None and tensor.buffer.dtype == np.int8 and len(tensor.shape) >= 2
    }


@pytest.mark.slow
def test_pruned_digits_cnn_keeps_accuracy_and_its_zeros_in_the_int8_file(
    digits, trained_digits_cnn
) -> None:
    keras.utils.set_random_seed(1)
    float_accuracy = trained_digits_cnn.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=40, frequency=10)
    pruned = compile_classifier(
        tfc.prune_low_magnitude(
            _clone(trained_digits_cnn), schedule=schedule, allocation="uniform"
        ),
        1e-3,
    )
    pruned.fit(
        digits.x_train,
        digits.y_train,
        batch_size=64,
        epochs=3,
        verbose=0,
        callbacks=[UpdatePruningStep()],
    )
    final = tfc.strip_pruning(pruned)
    flatbuffer = tfc.convert(final, mode="int8", representative_data=digits.x_train[:200])
    accuracy = tfc.evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    assert accuracy >= float_accuracy - 0.01
    sparsities = kernel_sparsity_in_flatbuffer(flatbuffer)
    assert len(sparsities) == 5  # conv1, conv2, conv3, fc1, logits
    for name, sparsity in sparsities.items():
        assert sparsity == pytest.approx(0.5, abs=0.01), name


def test_pruned_model_saves_and_resumes_mid_schedule(tmp_path, digits) -> None:
    from tfcompress.models import build_digits_cnn

    keras.utils.set_random_seed(2)
    schedule = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=8, frequency=2)
    pruned = compile_classifier(
        tfc.prune_low_magnitude(build_digits_cnn(width=4), schedule, allocation="uniform")
    )
    x, y = digits.x_train[:64], digits.y_train[:64]
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruningStep()])
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(digits.x_test, verbose=0), pruned.predict(digits.x_test, verbose=0), 1e-6
    )
    before = pruned_layers(restored)
    assert [int(w.pruning_step.numpy()) for w in before] == [3] * 5
    for old, new in zip(pruned_layers(pruned), before, strict=True):
        np.testing.assert_array_equal(old.masks[0].numpy(), new.masks[0].numpy())
        assert new.schedule == schedule
    restored.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    for wrapper in pruned_layers(restored):
        assert int(wrapper.pruning_step.numpy()) == 11
        assert wrapper.sparsity() == pytest.approx(0.6, abs=1.0 / wrapper.masks[0].numpy().size)


def test_pruning_trains_under_mirrored_strategy(digits) -> None:
    import tensorflow as tf

    from tfcompress.models import build_digits_cnn
    from tfcompress.pruning import ConstantSparsity

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        pruned = compile_classifier(
            tfc.prune_low_magnitude(
                build_digits_cnn(width=4), ConstantSparsity(0.5, 0), allocation="uniform"
            )
        )
    pruned.fit(digits.x_train[:64], digits.y_train[:64], batch_size=32, epochs=1, verbose=0,
               callbacks=[UpdatePruningStep()])  # fmt: skip
    for wrapper in pruned_layers(pruned):
        assert wrapper.sparsity() == pytest.approx(0.5, abs=0.01)
        assert int(wrapper.pruning_step.numpy()) == 1
