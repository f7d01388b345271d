"""AdaRound (Nagel et al. 2020): learn, per layer, whether each weight rounds up or down.

Rounding every weight to its nearest level minimises each weight's error, not the layer's output
error. AdaRound keeps the floor of `w / s` and learns a soft choice `h(V) in [0, 1]` to add to it
(a rectified sigmoid of a free variable `V`), minimising the squared error between the layer's
output with the soft-rounded kernel on the quantized model's inputs and the float layer's output
on the float model's inputs, plus a regulariser `sum(1 - |2h - 1| ** beta)` that pushes every `h`
to 0 or 1 as `beta` is annealed from 20 to 2. At the end each `h` is rounded: the kernel lies
exactly on TFLite's grid, so the converter keeps these integers.

The gradient steps run TensorFlow's training kernels, and TensorFlow's oneDNN filter gradient of
some convolutions crashes the process (a 1x1 stride-2 convolution on a 60x60x8 input segfaults
in TF 2.21). So `adaround` runs in a separate Python process by default
(`tfcompress.tflite.isolation.run_in_new_process`): such a crash becomes an error that names the
step and the workaround, and your process lives on.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core.graph import check_model, clone_with_weights
from tfcompress.recovery.weights import (
    as_batches,
    channel_axes,
    check_bits,
    check_layer_bits,
    kernel_layers,
    linear,
    predict,
    qmax,
    weight_scale,
)
from tfcompress.tflite.isolation import DEFAULT_TIMEOUT_S, run_in_new_process

_ZETA, _GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid, so that h reaches 0 and 1 exactly
_WARMUP = 0.2  # first fraction of the iterations: reconstruction only, no rounding regulariser
_BETA = (20.0, 2.0)
#: what to do when AdaRound's process dies inside TensorFlow
CRASH_ADVICE = (
    "TensorFlow's oneDNN kernels crash on some convolution shapes: set TF_ENABLE_ONEDNN_OPTS=0 "
    "in the environment (the separate process reads it when it starts, so "
    "os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0' in your script is enough) and retry, or leave "
    "'adaround' out of optimize= (round to nearest)."
)


def _h(v: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(tf.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _initial_v(fraction: np.ndarray) -> np.ndarray:
    """V such that h(V) equals the fractional part (soft rounding starts at the float weight)."""
    p = np.clip((fraction - _GAMMA) / (_ZETA - _GAMMA), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32)


def _schedule(i: int, warmup: int, iterations: int, regularization: float) -> tuple[float, float]:
    """Step `i`'s rounding-regulariser exponent and weight: none while warming up, then the
    exponent annealed from high to low on a cosine."""
    if i < warmup:
        return _BETA[0], 0.0
    progress = (i - warmup) / max(iterations - warmup, 1)
    return _BETA[1] + 0.5 * (_BETA[0] - _BETA[1]) * (1 + np.cos(np.pi * progress)), regularization


def round_layer(
    layer: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    bits: int = 8,
    per_channel: bool = True,
    iterations: int = 300,
    batch_size: int = 32,
    learning_rate: float = 3e-2,
    regularization: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """The AdaRound kernel of one layer: on its TFLite grid, fitted to `targets` from `inputs`.

    Args:
        layer: a built Dense, Conv or DepthwiseConv layer (its kernel and bias are read).
        inputs: the layer's inputs in the quantized model (batch first).
        targets: the float layer's outputs (after its activation) for the same samples.
        bits: 8 or 4.
        per_channel: one scale per output channel, or one per tensor.
        iterations: optimisation steps (0: round to nearest).
        batch_size: samples per step.
        learning_rate: Adam's step size on `V`.
        regularization: weight of the rounding regulariser (relative to the reconstruction error
            of round-to-nearest, which the loss is normalised by).
        seed: the batch sampling seed.

    Returns:
        The kernel, in float, on the grid `scale * integer` with |integer| <= 2**(bits-1) - 1;
        the largest weight of each channel keeps its nearest level, so the grid's scale is the
        one the converter computes. Never worse than round-to-nearest on `inputs`: when the
        learned rounding reconstructs worse, the nearest levels are returned.

    Example:
        >>> import keras, numpy as np
        >>> layer = keras.layers.Dense(3)
        >>> x = np.random.rand(64, 5).astype("float32")
        >>> y = np.asarray(layer(x))
        >>> kernel = round_layer(layer, x, y, bits=4, iterations=50)
        >>> scale = np.abs(kernel).max(axis=0) / 7
        >>> bool(np.allclose(kernel / scale, np.round(kernel / scale), atol=1e-4))
        True
    """
    check_bits(bits, "adaround")
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else None
    scale = weight_scale(layer, kernel, bits, per_channel)
    limit = qmax(bits)
    ratio = kernel / scale
    floor = np.floor(ratio)
    nearest = np.clip(np.round(ratio), -limit, limit)
    axes = channel_axes(layer, kernel) if per_channel else tuple(range(kernel.ndim))
    peak = np.abs(kernel) == np.max(np.abs(kernel), axis=axes, keepdims=True)
    if iterations <= 0:
        return (nearest * scale).astype(np.float32)
    activation = layer.activation if hasattr(layer, "activation") else (lambda t: t)

    def output(x: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
        y = linear(layer, x, k)
        return activation(y if bias is None else y + bias)

    x_all = tf.constant(inputs, tf.float32)
    y_all = tf.constant(targets, tf.float32)
    scale_t = tf.constant(scale)
    floor_t = tf.constant(floor, tf.float32)
    nearest_kernel = tf.constant(nearest * scale, tf.float32)
    baseline = (
        float(tf.reduce_mean(tf.square(output(x_all, nearest_kernel) - y_all)).numpy()) or 1e-12
    )
    v = tf.Variable(_initial_v(ratio - floor))
    first_moment = tf.Variable(tf.zeros_like(v))
    second_moment = tf.Variable(tf.zeros_like(v))
    count_t = tf.Variable(0.0)

    def step(x: tf.Tensor, y: tf.Tensor, beta: tf.Tensor, weight: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            soft = scale_t * tf.clip_by_value(floor_t + _h(v), -limit, limit)
            error = tf.reduce_mean(tf.square(output(x, soft) - y)) / baseline
            rounding = tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * _h(v) - 1.0), beta))
            loss = error + weight * rounding
        gradient = tape.gradient(loss, v)
        count_t.assign_add(1.0)  # Adam, written out: the variable is a plain tf.Variable
        first_moment.assign(0.9 * first_moment + 0.1 * gradient)
        second_moment.assign(0.999 * second_moment + 0.001 * tf.square(gradient))
        m_hat = first_moment / (1.0 - tf.pow(0.9, count_t))
        v_hat = second_moment / (1.0 - tf.pow(0.999, count_t))
        v.assign_sub(learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8))

    @tf.function
    def train(batches: tf.Tensor, betas: tf.Tensor, weights: tf.Tensor) -> None:
        # every step in one graph: a Python loop of small steps costs ~2 ms a step in calls
        for i in tf.range(iterations):
            step(tf.gather(x_all, batches[i]), tf.gather(y_all, batches[i]), betas[i], weights[i])

    rng = np.random.default_rng(seed)
    count = len(inputs)
    warmup = int(_WARMUP * iterations)
    batches = np.stack(
        [rng.choice(count, size=min(batch_size, count), replace=False) for _ in range(iterations)]
    )
    schedule = [_schedule(i, warmup, iterations, regularization) for i in range(iterations)]
    betas = np.asarray([beta for beta, _ in schedule], np.float32)
    weights = np.asarray([weight for _, weight in schedule], np.float32)
    train(tf.constant(batches), tf.constant(betas), tf.constant(weights))
    learned = np.clip(floor + (v.numpy() >= 0), -limit, limit)
    kernel_learned = (np.where(peak, nearest, learned) * scale).astype(np.float32)
    # 300 steps are few: keep round-to-nearest where the learned rounding did not beat it
    learned_error = float(tf.reduce_mean(tf.square(output(x_all, kernel_learned) - y_all)))
    return kernel_learned if learned_error <= baseline else (nearest * scale).astype(np.float32)


def adaround(
    model: keras.Model,
    data: Any,
    *,
    bits: int = 8,
    per_channel: bool = True,
    iterations: int = 300,
    num_samples: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    layer_bits: dict[str, int] | None = None,
    isolate: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> keras.Model:
    """Round every kernel layer's weights with AdaRound, layer by layer, in graph order.

    Each layer is fitted on the inputs it gets in the model whose earlier layers are already
    rounded (so it also compensates their error), against the float model's outputs. The
    returned model is float, but every kernel lies on its TFLite grid: convert it with the same
    `per_channel` and, for `bits=4`, with `convert(..., optimize=[..., "adaround"],
    int4_weights=True)` or pass the file through `tfcompress.recovery.four_bit_levels`.

    Args:
        model: a functional or Sequential Keras model (fold BatchNorm first).
        data: calibration inputs (numpy array, batch first).
        bits: 8 or 4.
        per_channel: one weight scale per output channel, or per tensor.
        iterations: optimisation steps per layer (0: round to nearest, the baseline).
        num_samples: how many samples of `data` to fit on.
        batch_size: samples per optimisation step.
        seed: the batch sampling seed.
        layer_bits: `{layer name: 4 or 8}` for layers whose width differs from `bits` (mixed
            4/8-bit weights: `convert(..., optimize=[("adaround", {"int4_layers": [...]})],
            int4_weights=True)` packs only those as INT4).
        isolate: run the optimisation in a separate Python process (the model and the data are
            sent there pickled), so that a crash inside TensorFlow raises `IsolatedCrash`
            instead of killing yours. `iterations=0` trains nothing and always runs here.
        timeout: seconds the separate process may run; `None` waits for ever.

    Returns:
        The model with rounded kernels (biases unchanged).

    Raises:
        IsolatedCrash: (`tfcompress.tflite.isolation`) the separate process died inside
            TensorFlow; the message says what to do (`TF_ENABLE_ONEDNN_OPTS=0`, or no AdaRound).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((6, 6, 1))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        >>> rounded = adaround(model, np.random.rand(32, 6, 6, 1), bits=4, iterations=20)
        >>> kernel = rounded.layers[1].get_weights()[0]
        >>> len(np.unique(np.round(kernel / (np.abs(kernel).max(axis=(0, 1, 2)) / 7), 4))) <= 15
        True
    """
    check_model(model, "adaround")
    widths = check_layer_bits(model, layer_bits, bits, "adaround")
    if iterations < 0:
        raise ValueError(f"adaround: iterations must be >= 0; got {iterations!r}.")
    data = as_batches(data, "adaround", model, num_samples)
    if isolate and iterations > 0:
        return run_in_new_process(
            adaround,
            model,
            data,
            bits=bits,
            per_channel=per_channel,
            iterations=iterations,
            num_samples=num_samples,
            batch_size=batch_size,
            seed=seed,
            layer_bits=layer_bits,
            isolate=False,
            what=f"AdaRound on '{model.name}'",
            advice=CRASH_ADVICE,
            timeout=timeout,
        )
    result = clone_with_weights(model)
    layers, _ = kernel_layers(result)
    for layer in layers:
        float_layer = model.get_layer(layer.name)
        inputs = predict(keras.Model(result.inputs[0], layer.input), data)
        targets = predict(keras.Model(model.inputs[0], float_layer.output), data)
        kernel = round_layer(
            layer,
            inputs,
            targets,
            bits=widths[layer.name],
            per_channel=per_channel,
            iterations=iterations,
            batch_size=batch_size,
            seed=seed,
        )
        layer.set_weights([kernel, *layer.get_weights()[1:]])
    return result
