"""The four MLPerf Tiny reference architectures, with stand-in data that ships with scikit-learn.

MLPerf Tiny (mlcommons/tiny, `benchmark/training/`) defines four reference models that
microcontroller users know; the builders here write them again as Keras 3 functional models,
layer for layer, from those published definitions (the parameter counts are theirs):

| task   | model                          | input            | output            | parameters |
|--------|--------------------------------|------------------|-------------------|------------|
| `kws`  | DS-CNN (keyword spotting)      | `(49, 10, 1)` MFCC | 12 classes, softmax | 24,908   |
| `vww`  | MobileNetV1 alpha 0.25 (visual wake words) | `(96, 96, 3)` | 2 classes, softmax | 221,794 |
| `ic`   | ResNet-8 (image classification) | `(32, 32, 3)`   | 10 classes, softmax | 78,666   |
| `ad`   | FC autoencoder (anomaly detection) | `(640,)`     | `(640,)` reconstruction | 269,992 |

The datasets (Speech Commands, COCO person crops, CIFAR-10, ToyADMOS) are downloads; `load`
builds stand-ins of the same shapes from scikit-learn's 8x8 digits, enough to train each model
to a useful function in seconds and to measure conversion on held-out rows:

- `kws`: each digit stretched to 49x10 (10 "words"), plus "silence" (faint noise) and
  "unknown" (a digit's pixels shuffled), 12 classes.
- `vww`: an 8x8 glyph enlarged to 48x48 in a random colour, pasted at a random place of a 96x96
  noisy colour background: class 1 ("person") a digit, class 0 the same digit's pixels shuffled.
- `ic`: a digit enlarged to 32x32, in a random colour over a noisy colour background, 10 classes.
- `ad`: each digit stretched to 5 frames of 128 bins (640 values); digits 0-4 are the machine's
  normal sound (the only training rows), digits 5-9 anomalies (`y` is 1 for them); the anomaly
  score is the reconstruction's mean squared error.

Example:
    >>> from tfcompress.examples import mlperf_tiny
    >>> model = mlperf_tiny.build("kws")
    >>> model.count_params() == mlperf_tiny.PARAMETERS["kws"], model.output_shape
    (True, (None, 12))
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from scipy import ndimage

from tfcompress.data import Split, load_digits

TASKS = ("kws", "vww", "ic", "ad")
NAMES = {
    "kws": "ds_cnn",
    "vww": "mobilenet_v1_025",
    "ic": "resnet8",
    "ad": "fc_autoencoder",
}
INPUT_SHAPES = {"kws": (49, 10, 1), "vww": (96, 96, 3), "ic": (32, 32, 3), "ad": (640,)}
CLASSES = {"kws": 12, "vww": 2, "ic": 10}
# Parameters (trainable and BatchNorm statistics) of the reference definitions, as their Keras
# model.summary() counts them; each builder reproduces its count exactly.
PARAMETERS = {"kws": 24_908, "vww": 221_794, "ic": 78_666, "ad": 269_992}
# Epochs after which each model's held-out score stops improving on its stand-in data.
EPOCHS = {"kws": 8, "vww": 6, "ic": 8, "ad": 30}
WEIGHT_DECAY = 1e-4  # the reference models' L2 kernel regularizer
# BatchNorm statistics settle within a few short epochs (the references train for hundreds of
# epochs with Keras's 0.99); the momentum changes no parameter and no converted op.
BN_MOMENTUM = 0.9


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown MLPerf Tiny task {task!r}; choose one of {', '.join(TASKS)}.")


# -- the architectures ---------------------------------------------------------------------------
def _l2() -> keras.regularizers.Regularizer:
    return keras.regularizers.L2(WEIGHT_DECAY)


def _depthwise_he() -> keras.initializers.Initializer:
    """He initialisation over a 3x3 depthwise window (fan-in 9).

    Keras's `he_normal` counts a depthwise kernel's fan-in as window x channels, which shrinks
    the signal by the square root of the width at every block: 13 blocks of MobileNetV1 end near
    1e-12 and a short training cannot recover (the reference trains 50 epochs on 100k images).
    """
    return keras.initializers.TruncatedNormal(stddev=float(np.sqrt(2.0 / 9.0)) / 0.87962566)


def _bn_relu(x: Any, name: str) -> Any:
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def ds_cnn(filters: int = 64, classes: int = 12) -> keras.Model:
    """DS-CNN for keyword spotting, as MLPerf Tiny defines it.

    Source: mlcommons/tiny, `benchmark/training/keyword_spotting/keras_model.py`,
    `get_model` with `model_architecture='ds_cnn'`: a 10x4 stride-2 convolution, four
    depthwise-separable blocks (3x3 depthwise, 1x1 pointwise, each with BatchNorm and ReLU), 64
    channels throughout, dropout 0.2 and 0.4, average pooling over the whole 25x5 map, a softmax
    dense layer. Input: 49 frames of 10 MFCC coefficients.

    Example:
        >>> ds_cnn().count_params()
        24908
    """
    inputs = keras.Input(INPUT_SHAPES["kws"], name="mfcc")
    x = keras.layers.Conv2D(
        filters, (10, 4), strides=2, padding="same", kernel_regularizer=_l2(), name="conv1"
    )(inputs)
    x = _bn_relu(x, "conv1")
    x = keras.layers.Dropout(0.2, name="dropout1")(x)
    for block in range(1, 5):
        name = f"block{block}"
        x = keras.layers.DepthwiseConv2D(
            3, padding="same", depthwise_regularizer=_l2(), name=f"{name}_dw"
        )(x)
        x = _bn_relu(x, f"{name}_dw")
        x = keras.layers.Conv2D(filters, 1, kernel_regularizer=_l2(), name=f"{name}_pw")(x)
        x = _bn_relu(x, f"{name}_pw")
    x = keras.layers.Dropout(0.4, name="dropout2")(x)
    x = keras.layers.AveragePooling2D(tuple(x.shape[1:3]), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def mobilenet_v1(alpha: float = 0.25, classes: int = 2) -> keras.Model:
    """MobileNetV1 for visual wake words (person detection), as MLPerf Tiny defines it.

    Source: mlcommons/tiny, `benchmark/training/visual_wake_words/vww_model.py`
    (`mobilenet_v1`, after Silicon Labs' EEMBC model): a 3x3 stride-2 convolution with
    `32 * alpha` filters, then 13 depthwise-separable blocks (3x3 depthwise, 1x1 pointwise, BatchNorm
    and ReLU after each; strides 2 at blocks 2, 4, 6 and 12; the width doubles where the reference
    doubles it), average pooling over the 3x3 map, a softmax dense layer. Input: 96x96 RGB.

    Example:
        >>> mobilenet_v1().count_params()
        221794
    """
    width = int(32 * alpha)
    he = "he_normal"
    inputs = keras.Input(INPUT_SHAPES["vww"], name="image")
    x = keras.layers.Conv2D(
        width, 3, strides=2, padding="same", kernel_initializer=he, kernel_regularizer=_l2(),
        name="conv1",
    )(inputs)  # fmt: skip
    x = _bn_relu(x, "conv1")
    # (stride of the depthwise convolution, whether the pointwise one doubles the width)
    blocks = [(1, True), (2, True), (1, False), (2, True), (1, False), (2, True)]
    blocks += [(1, False)] * 5 + [(2, True), (1, False)]
    for index, (stride, doubles) in enumerate(blocks, start=1):
        name = f"block{index}"
        x = keras.layers.DepthwiseConv2D(
            3, strides=stride, padding="same", depthwise_initializer=_depthwise_he(),
            depthwise_regularizer=_l2(), name=f"{name}_dw",
        )(x)  # fmt: skip
        x = _bn_relu(x, f"{name}_dw")
        width = 2 * width if doubles else width
        x = keras.layers.Conv2D(
            width, 1, kernel_initializer=he, kernel_regularizer=_l2(), name=f"{name}_pw"
        )(x)
        x = _bn_relu(x, f"{name}_pw")
    x = keras.layers.AveragePooling2D(tuple(x.shape[1:3]), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1_025")


def _residual_stack(x: Any, filters: int, stride: int, name: str) -> Any:
    he = "he_normal"

    def conv(size: int, strides: int, label: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters, size, strides=strides, padding="same", kernel_initializer=he,
            kernel_regularizer=_l2(), name=f"{name}_{label}",
        )  # fmt: skip

    y = _bn_relu(conv(3, stride, "a")(x), f"{name}_a")
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_b_bn")(
        conv(3, 1, "b")(y)
    )
    if stride != 1:  # the identity path changes shape too: a strided 1x1 convolution
        x = conv(1, stride, "shortcut")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def resnet8(filters: int = 16, classes: int = 10) -> keras.Model:
    """ResNet-8 for image classification, as MLPerf Tiny defines it (`resnet_v1_eembc`).

    Source: mlcommons/tiny, `benchmark/training/image_classification/keras_model.py`: a 3x3
    convolution with 16 filters, three residual stacks of two 3x3 convolutions (16, 32, 64
    filters; the second and third start with stride 2 and a strided 1x1 convolution on the
    identity path), average pooling over the 8x8 map, a softmax dense layer. Input: 32x32 RGB.
    The reference's later `conv_filters` argument is `filters` (16 in the pretrained model).

    Example:
        >>> resnet8().count_params()
        78666
    """
    inputs = keras.Input(INPUT_SHAPES["ic"], name="image")
    x = keras.layers.Conv2D(
        filters, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=_l2(),
        name="conv1",
    )(inputs)  # fmt: skip
    x = _bn_relu(x, "conv1")
    for index, stride in enumerate((1, 2, 2)):
        x = _residual_stack(x, filters * 2**index, stride, f"stack{index + 1}")
    x = keras.layers.AveragePooling2D(tuple(x.shape[1:3]), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(
        classes, activation="softmax", kernel_initializer="he_normal", name="classes"
    )(x)
    return keras.Model(inputs, outputs, name="resnet8")


def fc_autoencoder(inputs_dim: int = 640, width: int = 128, bottleneck: int = 8) -> keras.Model:
    """The fully-connected autoencoder for anomaly detection, as MLPerf Tiny defines it.

    Source: mlcommons/tiny, `benchmark/training/anomaly_detection/keras_model.py`
    (`get_model`, after Hitachi's DCASE 2020 baseline): four Dense(128)-BatchNorm-ReLU layers, a
    Dense(8)-BatchNorm-ReLU bottleneck, four more Dense(128)-BatchNorm-ReLU layers and a linear
    Dense(640) reconstruction. Input: 5 frames of 128 log-mel bins.

    Example:
        >>> fc_autoencoder().count_params()
        269992
    """
    inputs = keras.Input((inputs_dim,), name="frames")
    x = inputs
    for index, units in enumerate((width,) * 4 + (bottleneck,) + (width,) * 4, start=1):
        x = keras.layers.Dense(units, name=f"dense{index}")(x)
        x = _bn_relu(x, f"dense{index}")
    outputs = keras.layers.Dense(inputs_dim, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="fc_autoencoder")


_BUILDERS = {"kws": ds_cnn, "vww": mobilenet_v1, "ic": resnet8, "ad": fc_autoencoder}


def build(task: str, seed: int = 0) -> keras.Model:
    """The reference model of an MLPerf Tiny `task`, initialised from `seed`.

    Args:
        task: `"kws"`, `"vww"`, `"ic"` or `"ad"` (see the module's table).
        seed: seeds Keras's random generators before the layers are built.

    Returns:
        An uncompiled functional `keras.Model` with the reference's layers and parameter count.

    Example:
        >>> build("ad").output_shape
        (None, 640)
    """
    _check_task(task)
    keras.utils.set_random_seed(seed)
    return _BUILDERS[task]()


# -- stand-in data -------------------------------------------------------------------------------
def load(task: str, seed: int = 0) -> Split:
    """Stand-in data of `task`'s input shape, from scikit-learn's digits (no download).

    Args:
        task: one of `TASKS`.
        seed: seed of the split and of the random colours, positions and noise.

    Returns:
        A `Split` of float32 inputs in [0, 1] and int32 labels: class ids for the classifiers;
        for `"ad"`, 0 (normal) or 1 (anomaly), with only normal rows in `x_train`.

    Example:
        >>> split = load("kws")
        >>> split.x_train.shape[1:], split.num_classes
        ((49, 10, 1), 12)
    """
    _check_task(task)
    digits = load_digits(seed=seed)
    rng = np.random.default_rng(seed)
    make = {"kws": _keyword_spotting, "vww": _wake_words, "ic": _image_classes, "ad": _machine}
    train = make[task](digits.x_train, digits.y_train, rng)
    test = make[task](digits.x_test, digits.y_test, rng)
    if task == "ad":  # an autoencoder learns the normal sound only
        train = (train[0][train[1] == 0], train[1][train[1] == 0])
    return Split(train[0], train[1], test[0], test[1])


def _stretch(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 8, 8) images resized to (N, height, width), bilinear, clipped to [0, 1]."""
    factors = (1.0, height / images.shape[1], width / images.shape[2])
    return np.clip(ndimage.zoom(images, factors, order=1), 0.0, 1.0).astype(np.float32)


def _keyword_spotting(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    pixels = images[..., 0]
    extra = len(pixels) // 10  # as many "silence" and "unknown" rows as rows of one digit
    silence = rng.uniform(0.0, 0.1, (extra, 8, 8))
    chosen = pixels[rng.choice(len(pixels), extra, replace=False)].reshape(extra, 64)
    unknown = rng.permuted(chosen, axis=1).reshape(extra, 8, 8)
    x = _stretch(np.concatenate([pixels, silence, unknown]), 49, 10)[..., None]
    y = np.concatenate([labels, np.full(extra, 10), np.full(extra, 11)]).astype(np.int32)
    order = rng.permutation(len(x))
    return x[order], y[order]


def _coloured(images: np.ndarray, size: int, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """Digits enlarged to size x size, each in a random colour at a random place of a noisy
    canvas x canvas colour background."""
    count = len(images)
    colours = rng.uniform(0.5, 1.0, (count, 1, 1, 3)).astype(np.float32)
    glyphs = _stretch(images[..., 0], size, size)[..., None] * colours
    tints = rng.uniform(0.3, 1.0, (count, 1, 1, 3)).astype(np.float32)
    x = rng.random((count, canvas, canvas, 3), dtype=np.float32)
    x *= 0.3 * tints
    corners = rng.integers(0, canvas - size + 1, (count, 2))
    for image, glyph, (top, left) in zip(x, glyphs, corners, strict=True):
        window = image[top : top + size, left : left + size]
        np.maximum(window, glyph, out=window)
    return x


def _wake_words(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    person = rng.integers(0, 2, len(images))  # the other half: the same ink, its pixels shuffled
    shuffled = rng.permuted(images.reshape(len(images), 64), axis=1).reshape(images.shape)
    glyphs = np.where(person[:, None, None, None] == 1, images, shuffled)
    return _coloured(glyphs, 48, 96, rng), person.astype(np.int32)


def _image_classes(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    return _coloured(images, 28, 32, rng), labels.astype(np.int32)


def _machine(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    frames = _stretch(images[..., 0], 5, 128).reshape(len(images), 640)
    noisy = np.clip(frames + rng.normal(0.0, 0.02, frames.shape), 0.0, 1.0)
    return noisy.astype(np.float32), (labels >= 5).astype(np.int32)


# -- training and scores -------------------------------------------------------------------------
def train(
    model: keras.Model,
    task: str,
    split: Split,
    epochs: int | None = None,
    seed: int = 0,
    *,
    learning_rate: float = 3e-3,
    batch_size: int = 32,
) -> keras.Model:
    """Compile `model` for `task` (Adam; cross-entropy, or mean squared error for `"ad"`) and fit it.

    Args:
        model: a model of `build(task)` (or one taking the same inputs).
        task: one of `TASKS`.
        split: the data, from `load(task)`.
        epochs: passes over the training rows; `EPOCHS[task]` when None.
        seed: seeds the shuffling and the dropout.
        learning_rate: Adam's learning rate.
        batch_size: rows per step.

    Returns:
        The same model, trained.

    Example:
        >>> split = load("ad")
        >>> model = train(build("ad"), "ad", split, epochs=1)
        >>> 0.0 <= score(model, "ad", split) <= 1.0
        True
    """
    _check_task(task)
    keras.utils.set_random_seed(seed)
    loss = "mse" if task == "ad" else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    target = split.x_train if task == "ad" else split.y_train
    model.fit(
        split.x_train,
        target,
        epochs=EPOCHS[task] if epochs is None else epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
    )
    return model


def anomaly_scores(inputs: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Each row's anomaly score: the mean squared error of its reconstruction.

    Example:
        >>> anomaly_scores(np.zeros((2, 3)), np.array([[0, 0, 0], [1, 1, 1]]))
        array([0., 1.])
    """
    inputs = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    reconstructions = np.asarray(reconstructions, np.float64).reshape(len(inputs), -1)
    return np.mean((inputs - reconstructions) ** 2, axis=1)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 = anomaly, scored higher).

    Ties count a half, as in the Mann-Whitney statistic.

    Example:
        >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        raise ValueError("auc needs both normal (0) and anomalous (1) rows.")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))


def score(model: keras.Model, task: str, split: Split) -> float:
    """Held-out quality of a float `model`: top-1 accuracy, or the anomaly AUC for `"ad"`.

    Example:
        >>> split = load("kws")
        >>> 0.0 <= score(build("kws"), "kws", split) <= 1.0
        True
    """
    _check_task(task)
    outputs = model.predict(split.x_test, batch_size=128, verbose=0)
    if task == "ad":
        return auc(anomaly_scores(split.x_test, outputs), split.y_test)
    return float(np.mean(np.argmax(outputs, -1) == split.y_test))
