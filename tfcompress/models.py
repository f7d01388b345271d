"""Small reference models used by the demo, the benchmarks, the notebooks and the tests."""

from __future__ import annotations

import keras

__all__ = ["build_digits_cnn", "compile_classifier"]


def build_digits_cnn(
    input_shape: tuple[int, int, int] = (8, 8, 1),
    num_classes: int = 10,
    width: int = 32,
    name: str = "digits_cnn",
) -> keras.Model:
    """A small functional CNN (Conv-BN-ReLU blocks, pooling, Dense) for scikit-learn's digits.

    Its layers are the ones real mobile models are made of, so it exercises conversion, QAT and
    pruning end to end while training in seconds on a CPU. The model outputs logits.

    Example:
        >>> model = build_digits_cnn()
        >>> model.output_shape
        (None, 10)
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(width * 2, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model: keras.Model, learning_rate: float = 3e-3) -> keras.Model:
    """Compile a logits classifier with Adam, sparse cross-entropy and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
