"""The one model of a Keras graph: its nodes, producers and consumers, walks, and rebuild.

This module is the only code that reads Keras's graph internals (`_inbound_nodes`,
`_outbound_nodes`, `_keras_history`, `_nodes_by_depth`, a Sequential model's `_functional`);
every technique asks it instead. `tests/core/test_graph.py` pins the Keras behaviour relied on.
"""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog, compat


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
    """For each input of `model`: whether it reaches only `Rescaling` layers (it scales it itself).

    Layers that keep the values' scale on the way (random augmentation, which is the identity at
    inference, reshapes, crops: the catalog's pass-through role; a QAT model's fake quant, whose
    class says `keeps_value_scale`) may come first.
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

    def rescaled(tensor: Any) -> bool:
        found = readers[id(tensor)]
        return bool(found) and all(
            isinstance(layer, keras.layers.Rescaling)
            or (
                layer is not None
                and (
                    (catalog.info(layer) or _NO_ROW).quantize == catalog.PASSTHROUGH
                    or getattr(layer, "keeps_value_scale", False)
                )
                and all(rescaled(out) for out in node.output_tensors)
            )
            for layer, node in found
        )

    return [rescaled(tensor) for tensor in graph.inputs]


_NO_ROW = catalog.LayerInfo()


# -- subclassed models: their call() traced into a functional graph ----------------------------


def own_weights(layer: keras.layers.Layer) -> list[Any]:
    """The variables `layer` holds itself, not through one of its sublayers."""
    inner = {id(v) for sub in compat.nested_layers(layer) for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def is_composite(layer: Any) -> bool:
    """A user's layer or subclassed model made of other layers only (no weights of its own).

    Tracing runs its `call` on symbolic tensors, so each layer it calls becomes a node of the
    graph. Keras's and tfcompress's own layers, functional models and layers the catalog knows
    stay whole.

    Example:
        >>> import keras
        >>> # Keras's own layers of layers stay whole; a user's residual block would not
        >>> is_composite(keras.layers.MultiHeadAttention(2, 2)), is_composite(keras.layers.Dense(2))
        (False, False)
    """
    if not isinstance(layer, keras.layers.Layer) or is_graph_model(layer):
        return False
    if compat.is_library_layer(layer) or catalog.info(layer) is not None:
        return False
    return bool(compat.nested_layers(layer)) and not own_weights(layer)


def needs_tracing(model: Any, keep: Callable[[Any], bool] = lambda layer: False) -> bool:
    """Whether `model` is subclassed, or a graph holding a subclassed model (not one `keep`
    keeps whole): `traced_model` then gives the graph of layers the techniques rewrite.

    Example:
        >>> import keras
        >>> needs_tracing(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
        False
    """
    if not isinstance(model, keras.Model):
        return False
    if not is_graph_model(model):
        return True
    return any(
        isinstance(layer, keras.Model) and not is_graph_model(layer) and not keep(layer)
        for layer in compat.nested_layers(model)
    )


def traced_model(
    model: keras.Model, what: str, keep: Callable[[Any], bool] = lambda layer: False
) -> keras.Model:
    """A functional model computing what `model` computes, with one node per layer call.

    The model's `call` runs once on `keras.Input`s (the shapes it was built with, any batch
    size); the `call` of every composite layer (`is_composite`), nested subclassed model and
    nested functional model inside it runs too, so their layers become nodes instead of one
    opaque node. Layers for which `keep(layer)` is true stay whole, and so does a composite
    layer whose own `call` cannot be recorded (it calls a layer on values that do not come from
    its inputs, e.g. position embeddings of `ops.arange`). The traced model holds copies of
    `model`'s layers with the same weights (and the `_tfcompress_*` marks techniques put on
    layers); `model` and its layers are left as they were. Its outputs are checked against
    `model`'s on one random batch.

    It works where `call` is what the functional API can record: layers and `keras.ops` between
    them, Python loops over lists of layers, no `if` on tensor values, no `tf.*` functions.
    A `training` argument is left at None, so layers such as Dropout follow `fit` and
    `predict`; a Python branch on `training` is traced as at inference.

    Raises:
        ValueError: `model` is unbuilt, holds weights of its own outside its layers, or its
            `call` cannot be recorded; the message names the model and the fix.

    Example:
        >>> import keras, numpy as np
        >>> class Net(keras.Model):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden = [keras.layers.Dense(4), keras.layers.Dense(4)]
        ...         self.head = keras.layers.Dense(2)
        ...     def call(self, x):
        ...         for layer in self.hidden:
        ...             x = keras.ops.relu(layer(x))
        ...         return self.head(x)
        >>> net = Net()
        >>> x = np.ones((3, 5), "float32")
        >>> _ = net(x)
        >>> traced = traced_model(net, "example")
        >>> [type(layer).__name__ for layer in traced.layers]
        ['InputLayer', 'Dense', 'Dense', 'Dense']
        >>> bool(np.allclose(traced(x), net(x)))
        True
    """
    owned = own_weights(model)
    if owned:
        raise ValueError(
            f"{what}: model '{model.name}' ({type(model).__name__}) holds weights of its own "
            f"({', '.join(v.path for v in owned[:4])}) besides those of its layers; tfcompress "
            "traces call() into a graph of layers and cannot carry them. Create them in a layer "
            "of their own (a keras.layers.Layer with add_weight) and call that layer."
        )
    kept: set[int] = set()
    marks = _node_marks(model)
    while True:
        traced = _trace(model, what, lambda layer: id(layer) in kept or keep(layer))
        used = {id(v) for v in traced.weights}
        # a composite whose call used a layer on constants lost that layer: keep it whole
        lossy = [
            layer
            for layer in compat.nested_layers(model)
            if id(layer) not in kept
            and is_composite(layer)
            and not keep(layer)
            and any(id(v) not in used for v in layer.weights)
        ]
        if not lossy:
            break
        _forget_nodes_since(marks)
        kept.update(id(layer) for layer in lossy)
    unused = [v.path for v in model.weights if id(v) not in used]
    if unused:
        warnings.warn(
            f"{what}: model '{model.name}' holds weights its call() does not compute from its "
            f"inputs ({', '.join(unused[:4])}{', ...' if len(unused) > 4 else ''}); they are "
            "left out of the traced graph (a layer call() never makes is not needed).",
            stacklevel=3,
        )
    _check_same_outputs(model, traced, what)
    _warn_if_training_branches(model, traced, what, lambda layer: id(layer) in kept or keep(layer))
    # layers of its own: the user's layers keep no node of the trace, and a layer also called
    # in another graph (the functional model around a subclassed one) is called once here, so
    # call counts (BatchNorm folding) hold
    traced = keras.models.clone_model(traced, clone_function=_copy_with_marks)
    _forget_nodes_since(marks)
    return traced


def _node_marks(model: keras.Model) -> list[tuple[Any, int, int]]:
    """How many graph nodes each layer of `model` has now (to forget those a trace adds)."""
    return [
        (layer, len(layer._inbound_nodes), len(layer._outbound_nodes))
        for layer in compat.nested_layers(model)
    ]


def _forget_nodes_since(marks: list[tuple[Any, int, int]]) -> None:
    """Drop the nodes a discarded trace added to the user's layers."""
    for layer, inbound, outbound in marks:
        del layer._inbound_nodes[inbound:]
        del layer._outbound_nodes[outbound:]


def _copy_with_marks(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh copy of `layer` keeping the marks techniques put on it (`_tfcompress_*`
    attributes: quantization annotations); `layer` itself where it cannot be copied."""
    try:
        copy = fresh_copy(layer)
    except Exception:  # noqa: BLE001 - a custom layer without a working get_config
        return layer
    for name, value in vars(layer).items():
        if name.startswith("_tfcompress_"):
            setattr(copy, name, value)
    return copy


def _warn_if_training_branches(
    model: keras.Model, traced: keras.Model, what: str, keep: Callable[[Any], bool]
) -> None:
    """Warn when `call(training=True)` records other operations than the traced graph holds."""
    if is_graph_model(model) or "training" not in inspect.signature(type(model).call).parameters:
        return
    marks = _node_marks(model)
    try:
        training = _trace(model, what, keep, training=True)
    except ValueError:
        return
    finally:
        _forget_nodes_since(marks)

    def operations(graph: keras.Model) -> list[str]:
        # the same layers, and keras.ops made anew by each trace: the same kinds of them
        return sorted(
            str(id(op)) if isinstance(op, keras.layers.Layer) else type(op).__name__
            for op in graph.operations
            if not isinstance(op, keras.layers.InputLayer)
        )

    if operations(training) != operations(traced):
        warnings.warn(
            f"{what}: the call() of model '{model.name}' takes another path with training=True "
            "(a Python `if training:`); the traced graph follows the inference path in fit too. "
            "Use layers that take `training` themselves (Dropout, BatchNormalization) instead.",
            stacklevel=3,
        )


def _trace(
    model: keras.Model,
    what: str,
    keep: Callable[[Any], bool],
    training: bool | None = None,
) -> keras.Model:
    """One run of `model`'s call on `keras.Input`s, its composite layers called through."""
    args = _symbolic_inputs(model, what)
    inline = {
        id(layer): layer
        for layer in compat.nested_layers(model)
        if (is_composite(layer) or isinstance(layer, keras.Model)) and not keep(layer)
    }
    source = functional_graph(model) if is_graph_model(model) else model
    classes = {key: type(layer) for key, layer in inline.items()}
    try:
        for key, layer in inline.items():
            object.__setattr__(layer, "__class__", _call_through(classes[key]))
        given = {} if training is None else {"training": training}
        outputs = type(source).call(source, *args, **_training_left_open(type(source), given))
    except Exception as error:
        raise ValueError(
            f"{what}: the call() of model '{model.name}' ({type(model).__name__}) cannot be "
            f"traced into a graph of its layers ({type(error).__name__}: {_first_line(error)}). "
            "It runs once on keras.Input tensors: use keras.ops (not tf.* functions) between "
            "layers and no Python `if` on tensor values, or build the model with the "
            "functional API."
        ) from error
    finally:
        for key, layer in inline.items():
            object.__setattr__(layer, "__class__", classes[key])
    if not all(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(outputs)):
        raise ValueError(
            f"{what}: the call() of model '{model.name}' returned values that are not computed "
            "from its inputs; return only tensors made by its layers and keras.ops."
        )
    return keras.Model(args[0] if len(args) == 1 else list(args), outputs, name=model.name)


def _check_same_outputs(model: keras.Model, traced: keras.Model, what: str) -> None:
    """Refuse a traced graph whose outputs differ from `model`'s on one random batch."""
    rng = np.random.default_rng(0)
    batch = keras.tree.map_structure(
        lambda t: rng.uniform(-1, 1, [2 if d is None else d for d in t.shape]).astype(t.dtype),
        traced.input,
    )
    several = "shapes_dict" in (model.get_build_config() or {})  # call(self, a, b, ...)
    try:
        expected = model(*batch, training=False) if several else model(batch, training=False)
        expected = keras.tree.flatten(expected)
    except Exception:  # noqa: BLE001 - the model itself cannot run this batch: nothing to compare
        return
    found = keras.tree.flatten(traced(batch, training=False))
    same = len(found) == len(expected) and all(
        np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-4)
        for a, b in zip(found, expected, strict=True)
    )
    if not same:
        raise ValueError(
            f"{what}: the graph traced from the call() of model '{model.name}' computes other "
            "outputs than the model (a Python branch on a tensor's value, or on something "
            "other than `training`?). Build the model with the functional API."
        )


def _symbolic_inputs(model: keras.Model, what: str) -> list[Any]:
    """`keras.Input`s shaped as `model`'s inputs, one entry per positional argument of `call`."""
    if is_graph_model(model):
        graph = functional_graph(model)
        return [
            keras.tree.map_structure(
                lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
                graph.input,
            )
        ]
    config = model.get_build_config() if model.built else None
    if not config and model.built:  # its first call could not be traced to build it
        raise ValueError(
            f"{what}: Keras recorded no input shape for the subclassed model '{model.name}' "
            f"({type(model).__name__}). Call model.build(input_shape) once, e.g. "
            "model.build((None, 28, 28, 1)) with your input's shape."
        )
    if not config:
        raise ValueError(
            f"{what}: the subclassed model '{model.name}' ({type(model).__name__}) is not built, "
            "so its input shape is unknown. Call it once on a batch (model(x[:1])) or call "
            "model.build((None, ...)) first."
        )

    def symbolic(shape: Any) -> Any:
        return keras.Input(batch_shape=(None, *tuple(shape)[1:]))

    required = [
        name
        for name, parameter in inspect.signature(type(model).call).parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ][1:]  # self
    if "input_shape" in config and len(required) > 1:
        raise ValueError(
            f"{what}: the call() of model '{model.name}' takes {len(required)} inputs "
            f"({', '.join(required)}), and Keras recorded the shape of the first only. Take them "
            "as one argument (a list or dict of tensors), or build the model with the functional "
            "API."
        )
    if "input_shape" in config:
        return [keras.tree.map_shape_structure(symbolic, config["input_shape"])]
    return [keras.tree.map_shape_structure(symbolic, s) for s in config["shapes_dict"].values()]


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


_CALL_THROUGH: dict[type, type] = {}


def _call_through(klass: type) -> type:
    """A subclass of `klass` whose instances, when called, run `call` directly: on symbolic
    tensors the layers inside it then record their own nodes instead of one for the whole."""
    if klass not in _CALL_THROUGH:

        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            return klass.call(self, *args, **_training_left_open(klass, kwargs))

        namespace = {"__call__": __call__, "__module__": klass.__module__}
        _CALL_THROUGH[klass] = type(klass.__name__, (klass,), namespace)
    return _CALL_THROUGH[klass]


def _training_left_open(klass: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with `training=None` where `call` takes `training` and the caller gave none.

    A default of `training=False` handed on to BatchNormalization would be recorded in the
    graph and keep it in inference mode during `fit`; None lets `fit` and `predict` decide. A
    value the caller passes (a frozen backbone's `training=False`) is kept.
    """
    if "training" in kwargs or "training" not in inspect.signature(klass.call).parameters:
        return kwargs
    return {**kwargs, "training": None}
