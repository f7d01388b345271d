"""Demo rows for quantization-aware training: the digits CNN fine-tuned with fake quant (int8),
and with 4-bit weights and learned step sizes (LSQ)."""

from __future__ import annotations

import keras

from tfcompress.core.graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.models import compile_classifier
from tfcompress.quantization import quantize_model

EPOCHS = 3
BATCH = 64
LOW_BIT = {"weight_bits": 4, "learned_step": True}


def make_rows(
    split: Split, float_model: keras.Model, epochs: int | None = None
) -> list[tuple[str, keras.Model]]:
    """("qat int8", ...) and ("qat 4bit lsq int8", ...) fine-tuned from clones of `float_model`
    (for `epochs`, or `EPOCHS`).

    Example (skipped by the docstring tests: tests/test_demo.py runs every row maker):
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.demo import train_float_model
        >>> split = load_digits()
        >>> [name for name, _ in make_rows(split, train_float_model(split, 2))]  # doctest: +SKIP
        ['qat int8', 'qat 4bit lsq int8']
    """
    rows = []
    for name, options in [("qat int8", {}), ("qat 4bit lsq int8", LOW_BIT)]:
        keras.utils.set_random_seed(0)
        qat = quantize_model(clone_with_weights(float_model), **options)
        compile_classifier(qat, learning_rate=1e-3)
        qat.fit(split.x_train, split.y_train, epochs=epochs or EPOCHS, batch_size=BATCH, verbose=0)
        rows.append((name, qat))
    return rows
