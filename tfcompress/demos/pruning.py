"""Demo row for pruning: the digits CNN pruned to 80% sparsity, converted to int8."""

from __future__ import annotations

import keras

from tfcompress.core.graph import clone_with_weights
from tfcompress.data import Split
from tfcompress.models import compile_classifier
from tfcompress.pruning import (
    PolynomialDecay,
    UpdatePruningStep,
    prune_low_magnitude,
    strip_pruning,
)

EPOCHS = 10
BATCH = 64


def make_rows(
    split: Split, float_model: keras.Model, epochs: int | None = None
) -> list[tuple[str, keras.Model]]:
    """("pruned 80% int8", stripped model) fine-tuned from a clone of `float_model` (for
    `epochs`, or `EPOCHS`; the sparsity reaches 80% half-way).

    Example (skipped by the docstring tests: tests/test_demo.py runs every row maker):
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.demo import train_float_model
        >>> split = load_digits()
        >>> [name for name, _ in make_rows(split, train_float_model(split, 2))]  # doctest: +SKIP
        ['pruned 80% int8']
    """
    epochs = epochs or EPOCHS
    keras.utils.set_random_seed(0)
    clone = clone_with_weights(float_model)
    steps = -(-len(split.x_train) // BATCH)
    schedule = PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=max(steps * epochs // 2, 1), frequency=10
    )
    pruned = compile_classifier(prune_low_magnitude(clone, schedule=schedule), 1e-3)
    pruned.fit(split.x_train, split.y_train, epochs=epochs, batch_size=BATCH, verbose=0,
               callbacks=[UpdatePruningStep()])  # fmt: skip
    return [("pruned 80% int8", strip_pruning(pruned))]
