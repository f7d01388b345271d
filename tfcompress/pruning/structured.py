"""Structured pruning: remove whole filters/neurons and return a smaller dense Keras model.

Channels are grouped by what must stay aligned: a Conv/Dense layer's output channels, followed
through channel-wise layers (BatchNormalization, activations, pooling, Dropout, depthwise convs
with depth_multiplier 1) to the layers that consume them, and merged across residual adds. Each
group keeps its channels with the largest summed L1 norm over its producing kernels. Groups that
reach a model output or a layer that mixes channel positions (Flatten, Reshape, Concatenate, ...)
are left whole.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.core.graph import functional_graph, nodes_inputs_first

_PRODUCERS = catalog.classes(lambda row: row.channels == "producer")
_CHANNELWISE = catalog.classes(lambda row: row.channels == "channelwise")
_MERGES = catalog.classes(lambda row: row.channels == "merge")


def _is_producer(layer: Any) -> bool:
    return isinstance(layer, _PRODUCERS) and getattr(layer, "groups", 1) == 1


# Keras ops applied to a KerasTensor (`x + 3.0`, `x * (1 / 6)`, `ops.relu(x)`) keep channels
# apart when their other operands are scalars; several tensors of one width merge like `Add`.
_ELEMENTWISE_OPS = frozenset(
    {
        "Add",
        "Subtract",
        "Multiply",
        "Divide",
        "TrueDivide",
        "Maximum",
        "Minimum",
        "Relu",
        "Relu6",
        "Sigmoid",
        "HardSigmoid",
        "Silu",
        "HardSilu",
        "Gelu",
        "Elu",
        "LeakyRelu",
        "Tanh",
        "Abs",
        "Square",
        "Negative",
        "Clip",
    }
)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float) or (isinstance(value, np.ndarray) and value.size == 1)


def _elementwise_op(node: Any) -> bool:
    """True for a Keras op node (not a layer) that acts on each channel alone."""
    operation = node.operation
    if isinstance(operation, keras.layers.Layer):
        return False
    if type(operation).__name__ not in _ELEMENTWISE_OPS:
        return False
    if not type(operation).__module__.startswith("keras."):
        return False
    others = [
        a
        for a in keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
        if not isinstance(a, keras.KerasTensor) and a is not None
    ]
    widths = {t.shape[-1] for t in node.input_tensors}
    return all(_is_scalar(a) for a in others) and len(widths) == 1


def _keeps_channel_axis(layer: Any) -> bool:
    """A Reshape that keeps the last axis (e.g. (N, C) -> (N, 1, 1, C)) keeps channel positions."""
    return (
        isinstance(layer, keras.layers.Reshape)
        and layer.input.shape[-1] is not None
        and layer.input.shape[-1] == layer.output.shape[-1]
    )


def _graph_of(model: keras.Model) -> Any:
    """The functional graph of `model`, or an error saying how to give it one."""
    graph = functional_graph(model)
    if graph is None:
        raise ValueError(
            f"Model '{model.name}' has no layer graph to prune by channel: build it first (give "
            "the Sequential model a keras.Input) or use a functional model."
        )
    return graph


def _is_channelwise(layer: Any) -> bool:
    if _keeps_channel_axis(layer):
        return True
    if catalog.is_depthwise(layer):
        return layer.depth_multiplier == 1
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis in (-1, [-1]) or layer.axis == len(layer.input.shape) - 1
    return isinstance(layer, _CHANNELWISE)


class _ChannelGroups:
    """Union-find over channel groups, with the tensors and layers attached to each group."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.fixed: set[int] = set()
        self.producers: dict[int, list[keras.layers.Layer]] = {}
        self.reasons: dict[int, list[str]] = {}  # root of a fixed group -> why it stays whole

    def new(self, producer: keras.layers.Layer) -> int:
        self.parent.append(len(self.parent))
        group = len(self.parent) - 1
        self.producers[group] = [producer]
        return group

    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def union(self, groups: list[int | None], layer: Any = None) -> int | None:
        if any(group is None for group in groups):
            why = f"merged by '{getattr(layer, 'name', layer)}' with an unprunable tensor"
            for group in groups:
                self.fix(group, why)
            return None
        roots = [self.find(group) for group in groups]
        root = roots[0]
        for other in roots[1:]:
            if other != root:
                self.parent[other] = root
                self.producers[root] += self.producers.pop(other)
                if other in self.fixed:
                    self.fixed.add(root)
                self.reasons.setdefault(root, []).extend(self.reasons.pop(other, []))
        return root

    def fix(self, group: int | None, reason: str = "") -> None:
        if group is not None:
            root = self.find(group)
            self.fixed.add(root)
            if reason:
                self.reasons.setdefault(root, []).append(reason)

    def left_whole(self) -> dict[str, str]:
        """`{producer layer names: why}` for each channel group that cannot be pruned."""
        out = {}
        for root, producers in self.producers.items():
            if self.find(root) == root and root in self.fixed:
                names = ", ".join(layer.name for layer in producers)
                out[names] = "; ".join(dict.fromkeys(self.reasons.get(root, []))) or "fixed"
        return out


def _trace(model: keras.Model) -> tuple[_ChannelGroups, dict[int, int | None]]:
    """Assign a channel group to every tensor of the model (None: cannot be pruned)."""
    groups = _ChannelGroups()
    of_tensor: dict[int, int | None] = {}
    uses: dict[int, int] = {}
    graph = _graph_of(model)
    for node in nodes_inputs_first(graph):
        uses[id(node.operation)] = uses.get(id(node.operation), 0) + 1
    for node in nodes_inputs_first(graph):
        layer = node.operation
        inputs = [of_tensor.get(id(t)) for t in node.input_tensors]
        if node.is_input:
            output = None
        elif uses[id(layer)] > 1:  # a shared layer must keep one shape
            for group in inputs:
                groups.fix(group, f"read by the shared layer '{layer.name}'")
            output = None
        elif _is_producer(layer):
            output = groups.new(layer)
        elif _is_channelwise(layer) and len(inputs) == 1:
            output = inputs[0]
        elif isinstance(layer, _MERGES) or (_elementwise_op(node) and len(inputs) > 1):
            output = groups.union(inputs, layer)
        elif _elementwise_op(node):
            output = inputs[0]
        else:
            why = f"read by {type(layer).__name__} '{layer.name}', which mixes channel positions"
            for group in inputs:
                groups.fix(group, why)
            output = None
        for tensor in node.outputs:
            of_tensor[id(tensor)] = output
    for tensor in model.outputs:
        groups.fix(of_tensor.get(id(tensor)), "reaches a model output")
    return groups, of_tensor


def _channel_scores(producers: list[keras.layers.Layer]) -> np.ndarray:
    total = 0.0
    for layer in producers:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
        total = total + norms / (norms.mean() + 1e-12)  # comparable across layers
    return np.asarray(total)


def _keep_indices(groups: _ChannelGroups, fraction: float) -> dict[int, np.ndarray]:
    keep = {}
    for root, producers in groups.producers.items():
        if groups.find(root) != root or root in groups.fixed:
            continue
        scores = _channel_scores(producers)
        count = max(1, int(round(scores.size * (1.0 - fraction))))
        keep[root] = np.sort(np.argsort(-scores, kind="stable")[:count])
    return keep


def apply_keep(
    model: keras.Model,
    groups: _ChannelGroups,
    of_tensor: dict[int, int | None],
    keep: dict[int, np.ndarray],
) -> keras.Model:
    """The model with, for each group root in `keep`, only the channels listed there."""

    def kept(tensor: Any) -> np.ndarray | None:
        group = of_tensor.get(id(tensor))
        return None if group is None else keep.get(groups.find(group))

    def clone(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            return layer
        config = layer.get_config()
        if _is_producer(layer):
            out = kept(layer.output)
            if out is not None:
                config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = out.size
        elif _keeps_channel_axis(layer) and kept(layer.input) is not None:
            config["target_shape"] = (*tuple(config["target_shape"])[:-1], kept(layer.input).size)
        return layer.__class__.from_config(config)

    small = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, small.layers, strict=True):
        if old.weights:
            new.set_weights(_sliced_weights(old, kept(old.input), kept(old.output)))
    return small


def _take(array: np.ndarray, indices: np.ndarray | None, axis: int) -> np.ndarray:
    return array if indices is None else np.take(array, indices, axis=axis)


def _sliced_weights(
    layer: keras.layers.Layer, inputs: np.ndarray | None, outputs: np.ndarray | None
) -> list[np.ndarray]:
    weights = layer.get_weights()
    if _is_producer(layer):
        kernel = _take(_take(weights[0], inputs, -2), outputs, -1)
        return [kernel, *(_take(w, outputs, 0) for w in weights[1:])]
    if catalog.is_depthwise(layer):
        return [_take(weights[0], inputs, -2), *(_take(w, outputs, 0) for w in weights[1:])]
    if isinstance(layer, keras.layers.BatchNormalization | keras.layers.PReLU):
        return [_take(w, inputs, -1) for w in weights]
    return weights


def count_flops(model: keras.Model) -> int:
    """Floating-point operations (2 x multiply-accumulates) of one sample through the Conv,
    Dense and depthwise layers of `model`.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> count_flops(build_digits_cnn(width=32)) > 0
        True
    """
    macs = 0
    for layer in model.layers:
        if catalog.is_depthwise(layer):
            kernel = layer.kernel.shape
            macs += int(np.prod(layer.output.shape[1:])) * int(np.prod(kernel[:-2]))
        elif isinstance(layer, _PRODUCERS):
            kernel = layer.kernel.shape
            per_output = int(np.prod(kernel[:-1])) // getattr(layer, "groups", 1)
            macs += int(np.prod(layer.output.shape[1:])) * per_output
    return 2 * macs
