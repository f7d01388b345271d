"""Demo row for quantization-aware training: the digits CNN fine-tuned with fake quant (int8)."""

from __future__ import annotations

import keras

from tfcompress._graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.models import compile_classifier
from tfcompress.quantization import quantize_model

EPOCHS = 3
BATCH = 64


def make_rows(split: Split, float_model: keras.Model) -> list[tuple[str, keras.Model]]:
    """("qat int8", QAT model) fine-tuned from a clone of `float_model`; convert it as is.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.demo import train_float_model
        >>> split = load_digits()
        >>> [name for name, _ in make_rows(split, train_float_model(split, 2))]
        ['qat int8']
    """
    keras.utils.set_random_seed(0)
    clone = clone_with_weights(float_model)
    qat = compile_classifier(quantize_model(clone), learning_rate=1e-3)
    qat.fit(split.x_train, split.y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    return [("qat int8", qat)]
