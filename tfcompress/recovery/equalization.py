"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization").

A ReLU is positively homogeneous: `relu(x / s) = relu(x) / s` for `s > 0`. So output channel `c`
of a layer can be divided by `s_c` and input channel `c` of the next layer multiplied by `s_c`
without changing the model. Choosing `s_c = sqrt(r1_c / r2_c)` (the two channels' weight ranges)
gives both the same range `sqrt(r1_c * r2_c)`, which is what a per-tensor weight grid needs: one
channel with a large range no longer leaves the others a handful of levels.

What may sit between the two layers: folded BatchNorm, Dropout, linear activations, ReLU,
PReLU and LeakyReLU (`prelu(s * x) = s * prelu(x)` for `s > 0`, with the same slopes: the
catalog's `recovery="scales"` rows), max/average pooling (all commute with a positive
per-channel scale) and zero padding. Separable convolutions are split into their depthwise and
pointwise parts first (`split_separable`), so both are paired. ReLU6 does
not commute (`min(x / s, 6) != min(x, 6) / s`): with `relu6="skip"` (the default, the float model
is unchanged) such pairs are left alone and listed in the report; with `relu6="replace"` they are
turned into ReLU first, which is what the paper does for MobileNetV2 (it changes the float model:
measure its accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.core.batchnorm import FoldedBatchNormalization, batch_norm_pairs, fold_batch_norms
from tfcompress.core.graph import call_count, check_model, producer_of, rebuild
from tfcompress.core.graph import consumers as graph_consumers
from tfcompress.core.results import Compressed
from tfcompress.recovery.weights import (
    KERNEL_LAYERS,
    SCALE_LAYERS,
    split_separable,
    why_not_quantizable,
)

L = keras.layers
_POOLS = (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
)
_PADS = (L.ZeroPadding1D, L.ZeroPadding2D)
RELU6_CHOICES = ("skip", "replace")


@dataclass
class EqualizationReport:
    """What `equalize` did.

    Attributes:
        pairs: `(first, second)` layer names that were equalized, in graph order.
        skipped: `{"first -> second" or layer name: reason}` for chains left alone.
        absorbed: `{first layer: total bias moved into the next layer}` (high-bias absorption).
        replaced_relu6: layers whose ReLU6 became ReLU (`relu6="replace"`).
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    absorbed: dict[str, float] = field(default_factory=dict)
    replaced_relu6: list[str] = field(default_factory=list)


@dataclass
class _Chain:
    first: str
    second: str
    between: list[str]
    relu6: list[str]  # layers (the first one included) whose ReLU6 is in the way


def _activation_kind(activation: Any) -> str:
    name = getattr(activation, "__name__", str(activation))
    kinds = {"linear": "linear", "relu": "relu", "relu6": "relu6", "leaky_relu": "scales"}
    return kinds.get(name, "other")


def _between_kind(layer: Any) -> str:
    """How a layer between two kernels treats a positive per-channel scale."""
    if isinstance(layer, FoldedBatchNormalization | L.Dropout | L.Identity):
        return "identity"
    if isinstance(layer, SCALE_LAYERS):  # PReLU, LeakyReLU: positively homogeneous
        return "scales"
    if isinstance(layer, L.ReLU):
        if layer.threshold != 0 or layer.negative_slope != 0:
            return "other"
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else "other"
    if isinstance(layer, L.Activation):
        return _activation_kind(layer.activation)
    if isinstance(layer, _POOLS):
        return "pool"
    if isinstance(layer, _PADS):
        return "pad"
    return "other"


def find_chains(model: keras.Model) -> tuple[list[_Chain], dict[str, str]]:
    """Pairs of kernel layers joined by a path that a per-channel scale passes through.

    Returns the chains and `{layer or "first -> second": why not}` for the layers left out.

    Example:
        >>> inputs = keras.Input((6, 6, 1))
        >>> x = keras.layers.Conv2D(4, 3, name="a")(inputs)
        >>> x = keras.layers.MaxPooling2D(name="pool")(keras.layers.ReLU(name="relu")(x))
        >>> chains, _ = find_chains(keras.Model(inputs, keras.layers.Conv2D(2, 1, name="b")(x)))
        >>> [(c.first, c.second, c.between) for c in chains]
        [('a', 'b', ['relu', 'pool'])]
    """
    outputs = {id(producer_of(t)) for t in model.outputs}
    chains, skipped = [], {}
    for first in model.layers:
        if not isinstance(first, KERNEL_LAYERS) or why_not_quantizable(first):
            continue
        if catalog.is_depthwise(first) and first.depth_multiplier != 1:
            skipped[first.name] = "depthwise multiplier > 1"
            continue
        kind = _activation_kind(first.activation)
        if kind == "other":
            continue
        relu6 = [first.name] if kind == "relu6" else []
        between, node, reason = [], first, ""
        while True:
            consumers = graph_consumers(node, unique=False)
            if id(node) in outputs or len(consumers) != 1:
                reason = "output used by several layers" if len(consumers) > 1 else "model output"
                break
            node = consumers[0]
            if isinstance(node, KERNEL_LAYERS):
                break
            kind = _between_kind(node)
            if kind == "other" or call_count(node) != 1:
                reason = f"{type(node).__name__} '{node.name}' in between"
                break
            between.append(node.name)
            relu6 += [node.name] if kind == "relu6" else []
        if reason:
            if len(consumers) == 1 or between:
                skipped[first.name] = reason
            continue
        second = node
        why = why_not_quantizable(second)
        if why or call_count(second) != 1:
            skipped[f"{first.name} -> {second.name}"] = why or "second layer used several times"
            continue
        chains.append(_Chain(first.name, second.name, between, relu6))
    return chains, skipped


def _out_ranges(layer: Any, kernel: np.ndarray) -> np.ndarray:
    if catalog.is_depthwise(layer):  # multiplier 1: channel = input channel
        return np.abs(kernel).max(axis=tuple(range(kernel.ndim - 2)) + (kernel.ndim - 1,))
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _scale_out(layer: Any, kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if catalog.is_depthwise(layer):
        return kernel / scale[:, None]
    return kernel / scale


def _in_ranges(kernel: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(np.abs(kernel), -2, 0)  # input channels are axis -2 for every kind
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def _scale_in(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return kernel * scale[:, None]


def _bias_through(layer: Any, kernel: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """What a constant `shift` per input channel adds to `layer`'s outputs (valid padding)."""
    if catalog.is_depthwise(layer):
        spatial = tuple(range(kernel.ndim - 2))
        return (kernel.sum(axis=spatial) * shift[:, None]).reshape(-1)
    moved = np.moveaxis(kernel, -2, 0)
    return np.tensordot(shift, moved.reshape(moved.shape[0], -1, kernel.shape[-1]).sum(1), 1)


def equalize(
    model: keras.Model,
    *,
    relu6: str = "skip",
    absorb_bias: bool = True,
    iterations: int = 20,
    return_report: bool = False,
) -> keras.Model | Compressed:
    """Cross-layer equalization and high-bias absorption: the same function, flatter weights.

    Separable convolutions are split into their depthwise and 1x1 pointwise parts
    (`split_separable`, the two ops TFLite runs) and BatchNormalization is folded
    (`fold_batch_norms`). Then, for every pair of kernel layers (Conv, DepthwiseConv with
    multiplier 1, Dense) where the first feeds only the second through scale-equivariant layers
    (ReLU, PReLU, LeakyReLU, pooling, ...), output channel `c` of the first is divided by
    `sqrt(r1_c / r2_c)` and input channel `c` of the second multiplied by it, for a few sweeps
    (layers in two pairs settle). High-bias absorption then moves the part of each channel's bias
    that the ReLU never cuts into the next layer's bias: with the folded BatchNorm's statistics,
    `c = max(0, beta - 3 * gamma)` (the paper's data-free bound) is subtracted from the first
    layer's bias and pushed through the second layer's kernel. It is applied only where it is
    exact for every pre-activation above that bound (no zero padding on the way; the second layer
    has valid padding, a 1x1 kernel or is Dense), which narrows the activation range to quantize.

    Args:
        model: a functional or Sequential Keras model.
        relu6: `"skip"` leaves pairs with a ReLU6 between them as they are (exact); `"replace"`
            turns those ReLU6 into ReLU (the paper's choice: slightly changes the float model).
        absorb_bias: apply high-bias absorption (needs the BatchNorm statistics of the model).
        iterations: equalization sweeps over all pairs.
        return_report: return a `Compressed` result instead: `.model` and `.report`, an
            `EqualizationReport` (pairs done, pairs skipped and why); it unpacks as a pair.

    Returns:
        The equalized float model (and the report).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
        >>> flat, report = equalize(model, return_report=True)
        >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
        >>> len(report.pairs), bool(np.allclose(model(x), flat(x), atol=1e-4))
        (1, True)
    """
    check_model(model, "equalize")
    if relu6 not in RELU6_CHOICES:
        raise ValueError(f"equalize: relu6 must be one of {RELU6_CHOICES}; got {relu6!r}.")
    if iterations < 1:
        raise ValueError(f"equalize: iterations must be >= 1; got {iterations!r}.")
    model = split_separable(model)
    statistics = _batch_norm_statistics(model)
    folded = fold_batch_norms(model)
    chains, skipped = find_chains(folded)
    report = EqualizationReport(skipped=dict(skipped))
    usable = []
    for chain in chains:
        if chain.relu6 and relu6 == "skip":
            report.skipped[f"{chain.first} -> {chain.second}"] = (
                f"ReLU6 in between ({', '.join(chain.relu6)}) is not scale-equivariant; "
                "pass relu6='replace' to turn it into ReLU (changes the float model)"
            )
        else:
            usable.append(chain)
    to_relu = {name for chain in usable for name in chain.relu6}
    needs_bias = {name for chain in usable for name in (chain.first, chain.second)}
    working = _prepared(folded, to_relu, needs_bias)
    report.replaced_relu6 = sorted(to_relu)
    weights = {name: working.get_layer(name).get_weights() for name in needs_bias}
    scales = {
        chain.first: np.ones(
            _out_ranges(working.get_layer(chain.first), weights[chain.first][0]).shape
        )
        for chain in usable
    }
    for _ in range(iterations):
        for chain in usable:
            first, second = working.get_layer(chain.first), working.get_layer(chain.second)
            k1, b1 = weights[chain.first]
            k2, b2 = weights[chain.second]
            r1, r2 = _out_ranges(first, k1), _in_ranges(k2)
            scale = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-30)), 1.0)
            weights[chain.first] = [_scale_out(first, k1, scale), b1 / scale]
            weights[chain.second] = [_scale_in(k2, scale), b2]
            scales[chain.first] = scales[chain.first] * scale
    if absorb_bias:
        for chain in usable:
            stats = statistics.get(chain.first)
            if stats is None or not _absorbable_after_replace(chain, working):
                continue
            beta, gamma = stats
            shift = np.maximum(0.0, (beta - 3.0 * np.abs(gamma)) / scales[chain.first])
            k1, b1 = weights[chain.first]
            k2, b2 = weights[chain.second]
            second = working.get_layer(chain.second)
            weights[chain.first] = [k1, b1 - shift]
            weights[chain.second] = [k2, b2 + _bias_through(second, k2, shift)]
            report.absorbed[chain.first] = float(np.abs(shift).sum())
    for name, values in weights.items():
        working.get_layer(name).set_weights([np.asarray(v, np.float32) for v in values])
    report.pairs = [(chain.first, chain.second) for chain in usable]
    return Compressed(working, report) if return_report else working


def _absorbable_after_replace(chain: _Chain, model: keras.Model) -> bool:
    first = model.get_layer(chain.first)
    if _activation_kind(first.activation) not in ("linear", "relu"):
        return False
    kinds = {_between_kind(model.get_layer(name)) for name in chain.between}
    if not kinds <= {"identity", "relu", "pool"}:
        return False
    second = model.get_layer(chain.second)
    return (
        isinstance(second, L.Dense)
        or second.padding == "valid"
        or set(second.kernel.shape[:-2]) <= {1}
    )


def _batch_norm_statistics(model: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{producer: (beta, gamma)}` of each BatchNorm that folds: its output's mean and spread."""
    statistics = {}
    for bn_name, producer in batch_norm_pairs(model).items():
        bn = model.get_layer(bn_name)
        width = bn.moving_mean.shape[0]
        beta = np.zeros(width) if bn.beta is None else keras.ops.convert_to_numpy(bn.beta)
        gamma = np.ones(width) if bn.gamma is None else keras.ops.convert_to_numpy(bn.gamma)
        statistics[producer] = (np.asarray(beta, np.float64), np.asarray(gamma, np.float64))
    return statistics


def _prepared(model: keras.Model, to_relu: set[str], needs_bias: set[str]) -> keras.Model:
    """A copy with biases on the paired layers and the chosen ReLU6 turned into ReLU."""

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in to_relu and layer.name not in needs_bias:
            return None
        config = layer.get_config()
        if layer.name in to_relu:
            if isinstance(layer, L.ReLU):
                return L.ReLU(name=layer.name)
            config["activation"] = "relu"
        if layer.name in needs_bias and isinstance(layer, KERNEL_LAYERS):
            config["use_bias"] = True
        copy = layer.__class__.from_config(config)
        copy.build(tuple(layer.input.shape))
        values = layer.get_weights()
        if isinstance(layer, KERNEL_LAYERS) and not layer.use_bias:
            values = [values[0], np.zeros(copy.get_weights()[1].shape, np.float32)]
        copy.set_weights(values)
        return copy

    return rebuild(model, replace)
