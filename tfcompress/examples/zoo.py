"""The model zoo the benchmarks measure against: seven small families trained on the digits.

Each architecture is written once, against a `layers` namespace, and built either with Keras 3
(`build`) or with legacy Keras 2 (`build_legacy`, the `tf_keras` package tfmot runs on), so that
both libraries start from the same float weights (`to_legacy`). Every model outputs logits for the
10 digit classes and trains to about 0.9+ test accuracy in a few seconds on two CPU cores.

| arch          | input          | layers                                                         |
|---------------|----------------|----------------------------------------------------------------|
| `mlp`         | `(n, 64)`      | Dense 64-32-10                                                 |
| `cnn1d`       | `(n, 8, 8)`    | (Conv1D-BN-ReLU) x2, GlobalAveragePooling1D, Dense             |
| `cnn2d_bn`    | `(n, 8, 8, 1)` | (Conv2D-BN-ReLU) x2, MaxPool, Conv2D-BN-ReLU, GAP, Dense       |
| `dwsep`       | `(n, 16, 16, 1)` | Conv-BN-ReLU, 3 x (DepthwiseConv2D-BN-ReLU, 1x1 Conv-BN-ReLU), GAP, Dense |
| `resnet`      | `(n, 16, 16, 1)` | Conv-BN-ReLU stem, 3 residual blocks (Add), GAP, Dense       |
| `transformer` | `(n, 8, 8)`    | Dense row embedding, MHA + LayerNorm + FFN block, Flatten, Dense |
| `gru`         | `(n, 8, 8)`    | GRU(32), Dense                                                 |

Sequences are the image's 8 rows (8 steps of 8 pixels); `dwsep` and `resnet` see the image
upsampled to 16x16 (nearest neighbour), enough for their two stride-2 stages while staying cheap.
The transformer keeps the row order with a Flatten before its classifier (attention alone is
blind to positions and the zoo has no position-embedding layer, which tf_keras would not share).
`small=True` builds a student of the same family with a quarter of the parameters or fewer.

Example:
    >>> from tfcompress.examples import zoo
    >>> split = zoo.load("mlp")
    >>> model = zoo.train(zoo.build("mlp", seed=0), split, epochs=1, seed=0)
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import keras
import numpy as np

from tfcompress.data import Split, load_digits

ARCHITECTURES = ("mlp", "cnn1d", "cnn2d_bn", "dwsep", "resnet", "transformer", "gru")
UPSAMPLE = 2  # dwsep and resnet see 16x16 images
BN_MOMENTUM = 0.9  # BatchNorm statistics settle within a few short epochs

# Epochs at which each architecture reaches its float accuracy (batch 64, Adam 3e-3).
EPOCHS = {
    "mlp": 20,
    "cnn1d": 20,
    "cnn2d_bn": 12,
    "dwsep": 15,
    "resnet": 12,
    "transformer": 20,
    "gru": 20,
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}."
        )


def load(arch: str) -> Split:
    """The digits split in the input format of `arch` (see the module's table).

    Args:
        arch: one of `ARCHITECTURES`.

    Returns:
        A `tfcompress.data.Split` whose images are reshaped (or upsampled) for `arch`.

    Example:
        >>> load("gru").x_train.shape[1:], load("dwsep").x_test.shape[1:]
        ((8, 8), (16, 16, 1))
    """
    _check_arch(arch)
    split = load_digits()
    return Split(
        _format(split.x_train, arch), split.y_train, _format(split.x_test, arch), split.y_test
    )


def _format(images: np.ndarray, arch: str) -> np.ndarray:
    if arch == "mlp":
        return images.reshape(len(images), 64)
    if arch in ("cnn1d", "gru", "transformer"):
        return images.reshape(len(images), 8, 8)
    if arch in ("dwsep", "resnet"):
        return images.repeat(UPSAMPLE, axis=1).repeat(UPSAMPLE, axis=2)
    return images


def input_shape(arch: str) -> tuple[int, ...]:
    """The shape of one example of `arch` (without the batch axis).

    Example:
        >>> input_shape("cnn2d_bn")
        (8, 8, 1)
    """
    _check_arch(arch)
    return {"mlp": (64,), "cnn2d_bn": (8, 8, 1), "dwsep": (16, 16, 1), "resnet": (16, 16, 1)}.get(
        arch, (8, 8)
    )


# -- architectures, written once against a `layers` namespace (Keras 3 or tf_keras) -----------
def _mlp(k: Any, small: bool) -> Any:
    inputs = k.Input(input_shape("mlp"), name="pixels")
    x = inputs
    for index, width in enumerate((16,) if small else (64, 32)):
        x = k.layers.Dense(width, activation="relu", name=f"dense{index + 1}")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="mlp")


def _conv_bn_relu(k: Any, x: Any, conv: Any, name: str) -> Any:
    x = conv(x)
    x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return k.layers.ReLU(name=f"{name}_relu")(x)


def _cnn1d(k: Any, small: bool) -> Any:
    inputs = k.Input(input_shape("cnn1d"), name="rows")
    x = inputs
    for index, width in enumerate((12, 24) if small else (32, 64)):
        name = f"conv{index + 1}"
        conv = k.layers.Conv1D(width, 3, padding="same", use_bias=False, name=name)
        x = _conv_bn_relu(k, x, conv, name)
    x = k.layers.GlobalAveragePooling1D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="cnn1d")


def _cnn2d_bn(k: Any, small: bool) -> Any:
    widths = (8, 12, 16) if small else (16, 32, 32)
    inputs = k.Input(input_shape("cnn2d_bn"), name="image")
    x = inputs
    for index, width in enumerate(widths):
        name = f"conv{index + 1}"
        conv = k.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)
        x = _conv_bn_relu(k, x, conv, name)
        if index == 1:
            x = k.layers.MaxPooling2D(2, name="pool")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="cnn2d_bn")


def _dwsep(k: Any, small: bool) -> Any:
    stem_width, widths = (8, (16, 24, 24)) if small else (16, (32, 64, 64))
    inputs = k.Input(input_shape("dwsep"), name="image")
    stem = k.layers.Conv2D(stem_width, 3, padding="same", use_bias=False, name="stem")
    x = _conv_bn_relu(k, inputs, stem, "stem")
    for index, (width, stride) in enumerate(zip(widths, (2, 2, 1), strict=True)):
        name = f"block{index + 1}"
        depthwise = k.layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
        )
        x = _conv_bn_relu(k, x, depthwise, f"{name}_dw")
        pointwise = k.layers.Conv2D(width, 1, use_bias=False, name=f"{name}_pw")
        x = _conv_bn_relu(k, x, pointwise, f"{name}_pw")
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="dwsep")


def _residual_block(k: Any, x: Any, width: int, stride: int, name: str) -> Any:
    conv = k.layers.Conv2D(
        width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_a"
    )
    y = _conv_bn_relu(k, x, conv, f"{name}_a")
    y = k.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_b")(y)
    y = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_b_bn")(y)
    if stride != 1 or x.shape[-1] != width:
        x = k.layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        x = k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(x)
    y = k.layers.Add(name=f"{name}_add")([x, y])
    return k.layers.ReLU(name=f"{name}_relu")(y)


def _resnet(k: Any, small: bool) -> Any:
    widths = (8, 12, 16) if small else (16, 32, 32)
    inputs = k.Input(input_shape("resnet"), name="image")
    stem = k.layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem")
    x = _conv_bn_relu(k, inputs, stem, "stem")
    for index, (width, stride) in enumerate(zip(widths, (1, 2, 2), strict=True)):
        x = _residual_block(k, x, width, stride, f"block{index + 1}")
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="resnet")


def _transformer(k: Any, small: bool) -> Any:
    width, heads, hidden = (12, 1, 24) if small else (32, 2, 64)
    inputs = k.Input(input_shape("transformer"), name="rows")
    x = k.layers.Dense(width, name="embed")(inputs)
    attention = k.layers.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = k.layers.LayerNormalization(name="norm1")(k.layers.Add(name="add1")([x, attention]))
    y = k.layers.Dense(hidden, activation="relu", name="ffn1")(x)
    y = k.layers.Dense(width, name="ffn2")(y)
    x = k.layers.LayerNormalization(name="norm2")(k.layers.Add(name="add2")([x, y]))
    x = k.layers.Flatten(name="flatten")(x)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="transformer")


def _gru(k: Any, small: bool) -> Any:
    inputs = k.Input(input_shape("gru"), name="rows")
    x = k.layers.GRU(12 if small else 32, name="gru")(inputs)
    return k.Model(inputs, k.layers.Dense(10, name="logits")(x), name="gru")


_BUILDERS = {
    "mlp": _mlp,
    "cnn1d": _cnn1d,
    "cnn2d_bn": _cnn2d_bn,
    "dwsep": _dwsep,
    "resnet": _resnet,
    "transformer": _transformer,
    "gru": _gru,
}


def _namespace(module: Any) -> SimpleNamespace:
    return SimpleNamespace(Input=module.Input, Model=module.Model, layers=module.layers)


def build(arch: str, seed: int, *, small: bool = False) -> keras.Model:
    """The Keras 3 model of `arch`, initialised from `seed`, with a logits output (10 classes).

    Args:
        arch: one of `ARCHITECTURES`.
        seed: seeds Keras's random generators before the layers are built.
        small: a smaller student of the same family (a quarter of the parameters or fewer).

    Returns:
        An uncompiled functional `keras.Model`.

    Example:
        >>> big, small = build("dwsep", 0), build("dwsep", 0, small=True)
        >>> small.count_params() <= big.count_params() / 4
        True
    """
    _check_arch(arch)
    keras.utils.set_random_seed(seed)
    return _BUILDERS[arch](_namespace(keras), small)


def build_legacy(arch: str, seed: int, *, small: bool = False) -> Any:
    """The same architecture as `build(arch, seed, small=small)`, built with tf_keras (Keras 2).

    The layer names and the order of the weights match the Keras 3 model's, so
    `legacy.set_weights(model.get_weights())` gives the same function (see `to_legacy`). The
    initial weights themselves differ: tf_keras draws them from its own generators.

    Example:
        >>> type(build_legacy("gru", 0).get_layer("gru")).__module__.split(".")[0]
        'tf_keras'
    """
    import tf_keras

    _check_arch(arch)
    tf_keras.utils.set_random_seed(seed)
    return _BUILDERS[arch](_namespace(tf_keras), small)


def to_legacy(model: keras.Model, arch: str, *, small: bool = False) -> Any:
    """A tf_keras twin of the Keras 3 `model` of `arch`, holding identical weights.

    Args:
        model: a model made by `build(arch, ..., small=small)` (trained or not).
        arch: its architecture.
        small: whether it is the small student.

    Returns:
        A tf_keras model whose logits equal `model`'s.

    Example:
        >>> model = build("mlp", 0)
        >>> twin = to_legacy(model, "mlp")
        >>> x = load("mlp").x_test[:4]
        >>> bool(np.allclose(model.predict(x, verbose=0), twin.predict(x, verbose=0), atol=1e-5))
        True
    """
    twin = build_legacy(arch, 0, small=small)
    mine, theirs = model.get_weights(), twin.get_weights()
    shapes = [w.shape for w in mine], [w.shape for w in theirs]
    if shapes[0] != shapes[1]:
        raise ValueError(
            f"to_legacy: the model's weights do not match a {'small ' if small else ''}{arch!r} "
            f"zoo model ({shapes[0]} vs {shapes[1]}); pass the arch and small flag it was built with."
        )
    twin.set_weights(mine)
    return twin


def train(
    model: Any,
    split: Split,
    epochs: int,
    seed: int,
    *,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
    callbacks: list | None = None,
) -> Any:
    """Compile `model` (Adam, sparse cross-entropy from logits, accuracy) and fit it on `split`.

    Works for Keras 3 models and for tf_keras models (with tf_keras's own optimizer and loss).

    Args:
        model: a zoo model (or a wrapped one, e.g. pruned) taking `split`'s inputs.
        split: the data, from `load(arch)`.
        epochs: passes over the training set.
        seed: seeds the shuffling (and dropout-like randomness) of the fit.
        learning_rate: Adam's learning rate.
        batch_size: examples per step.
        callbacks: passed to `fit` (e.g. `UpdatePruningStep()`).

    Returns:
        The same model, trained.

    Example:
        >>> split = load("cnn2d_bn")
        >>> model = train(build("cnn2d_bn", 0), split, epochs=1, seed=0)
        >>> 0.0 <= accuracy(model, split) <= 1.0
        True
    """
    module = keras
    if not isinstance(model, keras.Model):
        import tf_keras as module

    module.utils.set_random_seed(seed)
    model.compile(
        optimizer=module.optimizers.Adam(learning_rate),
        loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(batches(split, seed, batch_size), epochs=epochs, verbose=0, callbacks=callbacks or [])
    return model


def batches(split: Split, seed: int, batch_size: int = 64) -> Any:
    """The training set as a tf.data pipeline: a new seeded order every epoch, same in both libraries.

    Every fit of the zoo benchmarks trains on this. After `set_random_seed`, Keras 3.15's `fit` on
    arrays repeats one batch order in every epoch while tf_keras's reshuffles each epoch, which
    alone put the Keras 3 side behind on equal pruning
    (docs/dev/decisions/2026-11-23-zoo-benchmark-protocol.md). A tf.data shuffle with a fixed seed gives
    both libraries the same sequence of orders.

    Example:
        >>> split = load("mlp")
        >>> dataset = batches(split, 0)
        >>> first, second = (next(iter(dataset))[1] for _ in range(2))  # two epochs' first batch
        >>> bool((first.numpy() != second.numpy()).any())  # a new order on every pass
        True
    """
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((split.x_train, split.y_train))
        .shuffle(len(split.x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )


def accuracy(model: Any, split: Split) -> float:
    """Test accuracy of a Keras 3 or tf_keras logits model on `split`.

    Example:
        >>> split = load("mlp")
        >>> 0.0 <= accuracy(build("mlp", 0), split) <= 1.0
        True
    """
    logits = model.predict(split.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == split.y_test))


if __name__ == "__main__":
    # Float accuracy of every architecture, 3 seeds: python -m tfcompress.examples.zoo [arch ...]
    import json
    import sys
    import time

    report = {}
    for name in sys.argv[1:] or ARCHITECTURES:
        data = load(name)
        rows = []
        for seed in range(3):
            start = time.perf_counter()
            net = train(build(name, seed), data, EPOCHS[name], seed)
            rows.append({"seed": seed, "accuracy": accuracy(net, data),
                         "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        params = (build(name, 0).count_params(), build(name, 0, small=True).count_params())
        report[name] = {"params": params[0], "small_params": params[1], "runs": rows}
        print(json.dumps({name: report[name]}), flush=True)
