"""One contract for every technique that trains through wrappers: wrap, fit, save, load, resume,
strip, convert.

Each technique's training layers are found by type (`TrainingLayer`), survive a `.keras` round
trip with identical outputs, keep training after loading, disappear when stripped, and the
stripped (or quantization-aware) model converts to a full-integer file whose LiteRT outputs
follow the Keras model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core.wrappers import training_layers
from tfcompress.data import Split
from tfcompress.models import build_digits_cnn, compile_classifier
from tfcompress.tflite.runtime import run_tflite


@dataclass(frozen=True)
class Technique:
    name: str
    wrap: Callable[[keras.Model], keras.Model]
    strip: Callable[[keras.Model], keras.Model]
    callbacks: Callable[[], list] = list
    has_training_layers: bool = True
    convert_options: tuple = ()


TECHNIQUES = [
    Technique(
        "pruning",
        lambda m: tfc.prune_low_magnitude(
            m, tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
        ),
        tfc.strip_pruning,
        lambda: [tfc.pruning.UpdatePruningStep()],
    ),
    Technique(
        "clustering",
        lambda m: tfc.cluster_weights(m, 8),
        tfc.strip_clustering,
        convert_options=(("per_channel", False),),
    ),  # fmt: skip
    Technique(
        "quantization-aware training",
        tfc.quantize_model,
        lambda m: m,  # converted as it is: its fake-quant ranges are the file's
        has_training_layers=False,
    ),
]


@pytest.fixture(scope="session")
def small_digits(digits: Split) -> Split:
    return Split(digits.x_train[:256], digits.y_train[:256], digits.x_test[:64], digits.y_test[:64])


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: t.name)
def test_wrap_fit_save_load_resume_strip_convert(technique: Technique, small_digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = technique.wrap(build_digits_cnn(width=8))
    assert bool(training_layers(model)) == technique.has_training_layers
    compile_classifier(model)
    x, y = small_digits.x_train, small_digits.y_train
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=technique.callbacks())

    path = tmp_path / "wrapped.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    probe = small_digits.x_test
    np.testing.assert_array_equal(loaded.predict(probe, verbose=0), model.predict(probe, verbose=0))

    # training resumes from the file: the optimizer state and the wrappers' state came back
    loaded.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=technique.callbacks())
    assert loaded.optimizer.iterations.numpy() == 2 * model.optimizer.iterations.numpy()

    stripped = technique.strip(loaded)
    assert training_layers(stripped) == []
    keras_logits = stripped.predict(probe, verbose=0)
    flatbuffer = tfc.convert(stripped, "int8", x[:64], **dict(technique.convert_options))
    assert tfc.inspect(flatbuffer).float_ops == []
    file_logits = run_tflite(flatbuffer, probe)
    agreement = np.mean(file_logits.argmax(-1) == keras_logits.argmax(-1))
    assert agreement >= 0.9, f"{technique.name}: the int8 file agrees on {agreement:.2f}"
