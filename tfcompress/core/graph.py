"""The one model of a Keras graph: its nodes, producers and consumers, walks, and rebuild.

This module is the only code that reads Keras's graph internals (`_inbound_nodes`,
`_outbound_nodes`, `_keras_history`, `_nodes_by_depth`, a Sequential model's `_functional`);
every technique asks it instead. `tests/core/test_graph.py` pins the Keras behaviour relied on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import keras

from tfcompress.core import compat

# Kernel layouts, for code that scales or groups a kernel by output channel: depthwise kernels are
# (..., in, multiplier) and transposed ones (..., out, in); every other kernel ends in `out`.
DEPTHWISE = keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D
TRANSPOSED = (
    keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose | keras.layers.Conv3DTranspose
)


def functional_graph(model: Any) -> Any | None:
    """The functional graph of `model` (a Sequential model keeps one inside); None when unbuilt.

    Example:
        >>> import keras
        >>> seq = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> functional_graph(seq) is not None, functional_graph(keras.Sequential()) is None
        (True, True)
    """
    if hasattr(model, "_nodes_by_depth"):
        return model
    return getattr(model, "_functional", None)


def is_graph_model(model: Any) -> bool:
    """Whether `model` is functional or Sequential (a graph that can be walked and rebuilt)."""
    return isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")


def nodes_inputs_first(graph: Any) -> Iterator[Any]:
    """Every node of a functional `graph`, from the inputs to the outputs (input nodes included)."""
    by_depth = graph._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        yield from by_depth[depth]


def inbound_nodes(layer: Any) -> list[Any]:
    """The calls of `layer` in the graphs it belongs to (one node per call)."""
    return list(getattr(layer, "_inbound_nodes", []))


def outbound_nodes(layer: Any) -> list[Any]:
    """The calls of other layers that read an output of `layer`."""
    return list(getattr(layer, "_outbound_nodes", []))


def producer_of(tensor: Any) -> Any | None:
    """The layer (or operation) whose call made the symbolic `tensor`; None for other tensors."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def producers(layer: Any) -> list[Any]:
    """The layers whose outputs `layer` reads, over all its calls, each once, in call order."""
    found: list[Any] = []
    for node in inbound_nodes(layer):
        for tensor in node.input_tensors:
            operation = producer_of(tensor)
            if operation not in found:
                found.append(operation)
    return found


def consumers(layer: Any, unique: bool = True) -> list[Any]:
    """The layers that read an output of `layer` (each once; `unique=False`: once per call)."""
    found: list[Any] = []
    for node in outbound_nodes(layer):
        if not unique or node.operation not in found:
            found.append(node.operation)
    return found


def sole_producer(layer: Any) -> Any | None:
    """The layer feeding `layer` when `layer` is called once on one tensor; else None."""
    nodes = inbound_nodes(layer)
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return producer_of(nodes[0].input_tensors[0])


def call_count(layer: Any) -> int:
    """How many times `layer` is called in the graphs it belongs to (a shared layer: more than 1)."""
    return len(inbound_nodes(layer))


def tensor_readers(graph: Any) -> defaultdict[int, list[tuple[Any, Any]]]:
    """`id(tensor) -> [(layer, node), ...]` of every call reading it; a model output adds (None, None).

    Tensors that nothing reads map to an empty list.
    """
    readers: defaultdict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.operation is None or node.is_input:
                continue
            for tensor in node.input_tensors:
                readers[id(tensor)].append((node.operation, node))
    for tensor in graph.outputs:
        readers[id(tensor)].append((None, None))
    return readers


def check_model(model: Any, what: str, alternative: str = "") -> None:
    """Refuse anything but a built functional/Sequential model, saying what to do instead."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model or a layer; got {type(model).__name__}.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"{what}: model '{model.name}' is unbuilt or subclassed. Build it as a functional or "
            f"Sequential model with keras.Input so its layers can be rewritten{alternative}."
        )


def fresh_copy(
    layer: keras.layers.Layer, input_shape: tuple | None = None, as_class: type | None = None
) -> keras.layers.Layer:
    """A new layer of the same config (and class, or `as_class`), built, with the same weights."""
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a stateless op used as a layer (`x + 1.0`): nothing to copy
    if type(layer) is keras.layers.Lambda and as_class is None:
        return compat.copy_lambda(layer)  # its function is in memory: nothing to deserialize
    copy = (as_class or layer.__class__).from_config(layer.get_config())
    if input_shape is not None:
        copy.build(input_shape)
        copy.set_weights(layer.get_weights())
        return copy
    return built_like(copy, layer)


def built_like(new: keras.layers.Layer, layer: keras.layers.Layer) -> keras.layers.Layer:
    """`new` built as `layer` was and holding its weights (when `layer` is built); returns `new`."""
    build_config = layer.get_build_config()
    if build_config is not None:
        new.build_from_config(build_config)
        if len(new.weights) < len(layer.weights):
            _build_sublayers(new, layer)
    new.set_weights(layer.get_weights())
    return new


def _build_sublayers(new: keras.layers.Layer, layer: keras.layers.Layer) -> None:
    """Run `new.call` symbolically on `layer`'s inputs, so sublayers made in `__init__` build.

    A custom layer without a `build` of its own builds its sublayers on its first call (keras.io's
    `TokenAndPositionEmbedding`); the symbolic run adds no node to `new`'s graph.
    """
    nodes = inbound_nodes(layer)
    if len(nodes) != 1:
        return
    specs = keras.tree.map_structure(
        lambda tensor: keras.KerasTensor(tensor.shape, dtype=tensor.dtype),
        nodes[0].arguments.args,
    )
    new.compute_output_spec(*specs, **nodes[0].arguments.kwargs)


def rebuild(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    fresh_masks: bool = False,
) -> keras.Model:
    """Clone `model`; `replace(layer)` returns the new layer, or None to keep a fresh copy.

    `fresh_masks=True` makes each layer read the mask attached to its new input. A functional
    model records the mask a layer received as an argument of its call, computed by ops outside
    the layer that masks (Keras's NOT_EQUAL and ANY for `Masking`); a plain clone replays them, so
    a mask computed differently by a replacement (`IntegerMasking`'s 0/1 mask) would never reach
    the layers after it.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        replaced = replace(layer)
        return fresh_copy(layer) if replaced is None else replaced

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("mask", None)
        return layer(*args, **kwargs)

    if fresh_masks:
        return keras.models.clone_model(model, clone_function=clone, call_function=call)
    return keras.models.clone_model(model, clone_function=clone)


def clone_with_weights(model: keras.Model) -> keras.Model:
    """An independent copy of `model` with the same weight values (the original stays untouched)."""
    copy = keras.models.clone_model(model, clone_function=_config_copy)
    copy.set_weights(model.get_weights())
    return copy


def _config_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """What `clone_model` does by default, but a Lambda keeps its function (no deserializing)."""
    if type(layer) is keras.layers.Lambda:
        return compat.copy_lambda(layer)
    return layer.__class__.from_config(layer.get_config())


def selected_layers(model: keras.Model, layers: Any, what: str) -> set[str] | None:
    """The names in `layers` (None: every layer), after checking that `model` has each of them."""
    if layers is None:
        return None
    names = set(layers)
    unknown = sorted(names - {layer.name for layer in model.layers})
    if unknown:
        raise ValueError(f"{what}: no layer named {unknown} in model '{model.name}'.")
    return names


def inputs_rescaled(model: Any) -> list[bool]:
    """For each input of `model`: whether only `Rescaling` layers read it (it scales it itself).

    Such a model takes raw integer images as `model.predict` does (cast to float, then scaled by
    the model), so calibration data may be uint8 too.

    Example:
        >>> import keras
        >>> inputs = keras.Input((2,))
        >>> scaled = keras.Model(inputs, keras.layers.Rescaling(1 / 255)(inputs))
        >>> inputs_rescaled(scaled), inputs_rescaled(keras.Model(inputs, inputs * 2.0))
        ([True], [False])
    """
    graph = functional_graph(model)
    if graph is None:
        return []
    readers = tensor_readers(graph)
    return [
        bool(readers[id(tensor)])
        and all(isinstance(layer, keras.layers.Rescaling) for layer, _ in readers[id(tensor)])
        for tensor in graph.inputs
    ]
