"""Rebuild Keras 2 (`tf_keras`, TF 2.x) models as Keras 3 models with the same weights.

Keras 3 cannot read many `.h5` files written by TF 2.x (a `DepthwiseConv2D` config carries a
`groups` key Keras 3 refuses, for one) and no SavedModel at all. `tf_keras` (the `legacy` extra)
still reads them; `rebuild` then translates the loaded model layer by layer: each layer's config
becomes the Keras 3 layer of the same class, the graph is wired again from the model's config, the
weights are copied, and the rebuilt model's outputs are compared with tf_keras's on a random batch.
A layer that has no Keras 3 counterpart, or computes something else, is named in the error.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LegacyModelError", "compile_as_saved", "has_tf_keras", "load_with_tf_keras", "rebuild"]

LEGACY_EXTRA = "pip install 'tfcompress[legacy]' (it installs tf_keras)"
_MODEL_CLASSES = ("Functional", "Model", "Sequential")
# tf_keras config keys that only chose an implementation (same outputs, same weights)
_IMPLEMENTATION_ONLY = {"fused", "implementation"}
# config keys Keras 3 renamed, by class
_RENAMED = {"LeakyReLU": {"alpha": "negative_slope"}}
# a subclass's inherited setting its own layer never used (SeparableConv2D's kernel_initializer)
_UNUSED_IN_KERAS2 = ("_initializer", "_regularizer", "_constraint")
# tf_keras layers that hold TensorFlow calls (x * 2, tf.reshape): they have no Keras 3 config
_TF_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer")


class LegacyModelError(ValueError):
    """A Keras 2 model that cannot be rebuilt as Keras 3; the message names the layer and the fix.

    Attributes:
        reason: what is wrong, in a few words (the layer named).
        advice: what to do.
        layer: the layer's name, or None when the whole model is concerned.

    Example:
        >>> error = LegacyModelError("layer 'x' (TFOpLambda) has no Keras 3 form", "Rewrite it.", "x")
        >>> error.layer
        'x'
    """

    def __init__(self, reason: str, advice: str, layer: str | None = None) -> None:
        self.reason = reason
        self.advice = advice
        self.layer = layer
        super().__init__(f"{reason}. {advice}")


def has_tf_keras() -> bool:
    """Whether `tf_keras` (Keras 2, the `legacy` extra) is installed; it is not imported.

    Example:
        >>> isinstance(has_tf_keras(), bool)
        True
    """
    import importlib.util

    return importlib.util.find_spec("tf_keras") is not None


def load_with_tf_keras(path: str | os.PathLike) -> Any:
    """The model in a Keras 2 `.h5` file or SavedModel directory, loaded by `tf_keras` (uncompiled).

    Raises:
        LegacyModelError: tf_keras is not installed.

    Example:
        >>> import tempfile, tf_keras
        >>> path = tempfile.mkdtemp() + "/old.h5"
        >>> tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]).save(path)
        >>> type(load_with_tf_keras(path)).__module__.startswith("tf_keras")
        True
    """
    if not has_tf_keras():
        raise LegacyModelError(
            "Keras 3 cannot read this Keras 2 / TF 2.x model, and tf_keras, which can, is not "
            "installed",
            f"Install it: {LEGACY_EXTRA}; then load the file again.",
        )
    import tf_keras

    return tf_keras.models.load_model(str(path), compile=False)


def rebuild(
    legacy_model: Any,
    *,
    custom_objects: dict[str, Any] | None = None,
    safe_mode: bool = True,
    check: bool = True,
) -> Any:
    """A Keras 3 model with the layers, graph and weights of a `tf_keras` model.

    Sequential and functional models (nested ones included) are rebuilt layer by layer; each
    layer's config is read by the Keras 3 class of the same name (or `custom_objects`). With
    `check`, both models run on one random batch and must give the same outputs.

    Args:
        legacy_model: a `tf_keras` model (loaded from a Keras 2 file, for instance).
        custom_objects: Keras 3 classes for the custom layers, by class name.
        safe_mode: refuse to carry over `Lambda` layers (Python code).
        check: compare the outputs of both models on a random batch.

    Returns:
        The Keras 3 model (uncompiled), named as the original.

    Raises:
        LegacyModelError: a layer has no Keras 3 counterpart, its weights do not fit, or the
            rebuilt model computes something else; the message names the first such layer.

    Example:
        >>> import tf_keras
        >>> old = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
        >>> new = rebuild(old)
        >>> type(new).__module__.startswith("keras"), tuple(new.layers[0].kernel.shape)
        (True, (4, 2))
    """
    builder = _Builder(custom_objects or {}, safe_mode)
    model = builder.model(legacy_model)
    if check:
        check_same_outputs(legacy_model, model)
    return model


def compile_as_saved(model: Any, training_config: dict[str, Any]) -> bool:
    """Compile a rebuilt model with the loss, metrics and optimizer a Keras 2 `.h5` file names.

    Only what Keras 3 knows by name is taken (built-in losses, metrics and optimizers, with the
    optimizer's settings Keras 3 has); anything else leaves the model uncompiled.

    Args:
        model: the Keras 3 model (from `rebuild`).
        training_config: the file's `training_config` (the JSON the `.h5` file holds).

    Returns:
        Whether the model was compiled.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> compile_as_saved(model, {"loss": "mse", "metrics": [["mae"]],
        ...                          "optimizer_config": {"class_name": "Adam",
        ...                                               "config": {"learning_rate": 0.01}}})
        True
        >>> round(float(model.optimizer.learning_rate), 4)
        0.01
    """
    import keras

    try:
        loss = training_config.get("loss")
        metrics = _metric_names(training_config.get("metrics"))
        optimizer_config = training_config.get("optimizer_config") or {}
        cls = getattr(keras.optimizers, str(optimizer_config.get("class_name", "")).split(">")[-1])
        accepted = {  # every keyword any class of the optimizer names
            parameter
            for klass in cls.__mro__
            if "__init__" in vars(klass)
            for parameter in inspect.signature(klass.__init__).parameters
        }
        settings = {
            key: value
            for key, value in (optimizer_config.get("config") or {}).items()
            if key in accepted and key != "name"
        }
        if isinstance(loss, str):
            keras.losses.get(loss)  # an unknown name fails here, not at the first fit
        model.compile(optimizer=cls(**settings), loss=loss, metrics=metrics)
    except Exception:  # noqa: BLE001 - a training setup Keras 3 cannot take: left uncompiled
        return False
    return True


def _metric_names(metrics: Any) -> Any:
    """Keras 2 metric configs ({"class_name": "MeanMetricWrapper", "config": {"name": ...}}) as
    the names Keras 3 takes, in the same structure (one list, one list per output, a dict)."""
    if isinstance(metrics, dict) and "config" in metrics:
        return metrics["config"].get("name")
    if isinstance(metrics, dict):
        return {key: _metric_names(value) for key, value in metrics.items()}
    if isinstance(metrics, list):
        return [_metric_names(value) for value in metrics]
    return metrics


class _Builder:
    """Translates layers and wires them as in the tf_keras model's config."""

    def __init__(self, custom_objects: dict[str, Any], safe_mode: bool) -> None:
        import keras

        self.keras = keras
        self.custom_objects = custom_objects
        self.safe_mode = safe_mode

    def model(self, legacy: Any) -> Any:
        import tf_keras

        config = legacy.get_config()
        if isinstance(legacy, tf_keras.Sequential) or "input_layers" not in config:
            return self.sequential(legacy)
        return self.functional(legacy, config)

    def sequential(self, legacy: Any) -> Any:
        keras = self.keras
        shape = _batch_shape(legacy.input_shape, legacy.name)
        dtype = _dtype_name(getattr(legacy.inputs[0], "dtype", "float32"))
        layers = [self.layer(layer) for layer in legacy.layers]
        model = keras.Sequential(
            [keras.Input(batch_shape=shape, dtype=dtype), *layers], name=keras3_name(legacy.name)
        )
        for old, new in zip(legacy.layers, layers, strict=True):
            self.copy_weights(old, new)
        return model

    def functional(self, legacy: Any, config: dict[str, Any]) -> Any:
        keras = self.keras
        tensors: dict[tuple[str, int], list[Any]] = {}
        pending: list[tuple[dict[str, Any], Any, Any, int]] = []
        built: list[tuple[Any, Any]] = []
        offsets = _node_offsets(config)
        for entry in config["layers"]:
            old = legacy.get_layer(entry["name"])
            if entry["class_name"] == "InputLayer":
                layer_config = entry["config"]
                shape = layer_config.get("batch_input_shape") or layer_config.get("batch_shape")
                tensors[(entry["name"], 0)] = [
                    keras.Input(
                        batch_shape=tuple(shape),
                        dtype=_dtype_name(layer_config.get("dtype", "float32")),
                        name=keras3_name(entry["name"]),
                    )
                ]
                continue
            # a recorded TensorFlow call becomes a layer once its node's arguments are known
            recorded = entry["class_name"] in ("TFOpLambda", "TensorFlowOpLayer")
            new = None if recorded else self.layer(old, entry)
            if new is not None:
                built.append((old, new))
            for index, node in enumerate(entry["inbound_nodes"]):
                pending.append((entry, new, node, index + offsets.get(entry["name"], 0)))
        while pending:  # a shared layer's later call may need a layer listed after it
            waiting = []
            for entry, new, node, index in pending:
                if all((ref[0], ref[1]) in tensors for ref in _tensor_refs(node)):
                    layer = new or self.tf_op(entry, node)
                    tensors[(entry["name"], index)] = self.call(entry, layer, node, tensors)
                else:
                    waiting.append((entry, new, node, index))
            if len(waiting) == len(pending):
                raise LegacyModelError(
                    f"the graph of '{legacy.name}' cannot be wired again (layer "
                    f"'{waiting[0][0]['name']}' waits for inputs that never come)",
                    "Save the model from tf_keras as a simpler functional model.",
                    waiting[0][0]["name"],
                )
            pending = waiting
        for old, new in built:
            self.copy_weights(old, new)
        inputs = [tensors[(name, index)][t] for name, index, t in config["input_layers"]]
        outputs = [tensors[(name, index)][t] for name, index, t in config["output_layers"]]
        single_in = not isinstance(legacy.input, list | tuple | dict)
        single_out = not isinstance(legacy.output, list | tuple | dict)
        return keras.Model(
            inputs[0] if single_in and len(inputs) == 1 else inputs,
            outputs[0] if single_out and len(outputs) == 1 else outputs,
            name=keras3_name(legacy.name),
        )

    def call(self, entry: dict, layer: Any, node: Any, tensors: dict) -> list[Any]:
        if entry["class_name"] == "TFOpLambda":  # its tensors, wherever the call had them
            args = [tensors[(ref[0], ref[1])][ref[2]] for ref in _tensor_refs(node)]
            kwargs = {}
        else:
            refs = _refs(node)
            args = [tensors[(ref[0], ref[1])][ref[2]] for ref in refs]
            kwargs = dict(refs[0][3]) if refs and len(refs[0]) > 3 and refs[0][3] else {}
            kwargs = {key: value for key, value in kwargs.items() if not _is_tensor_ref(value)}
        try:
            outputs = layer(args[0] if len(args) == 1 else args, **kwargs)
        except Exception as error:  # noqa: BLE001 - reported with the layer named
            raise LegacyModelError(
                f"layer '{entry['name']}' ({entry['class_name']}) fails when called in Keras 3 "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})",
                _REWRITE,
                entry["name"],
            ) from error
        return list(self.keras.tree.flatten(outputs))

    def tf_op(self, entry: dict[str, Any], node: Any) -> Any:
        """The Keras 3 layer computing a recorded TensorFlow call: `x + 3.0` is a Rescaling,
        `x * y` a Multiply, `tf.nn.relu6(x)` a ReLU; anything else is refused by name."""
        layers = self.keras.layers
        name, class_name = entry["name"], entry["class_name"]
        if class_name == "TensorFlowOpLayer":  # TF 2.3 and earlier: a NodeDef and constants
            call = _node_def_call(entry["config"], len(_refs(node)))
        else:
            call = _op_lambda_call(entry["config"], node)
        function, scalar, constant_first, tensors = call
        layer_name = keras3_name(name)
        if function in _TF_UNARY and tensors == 1 and scalar is None:
            kind, arguments = _TF_UNARY[function]
            return getattr(layers, kind)(*arguments, name=layer_name)
        if function in _TF_BINARY and tensors == 2 and _TF_BINARY[function] is not None:
            return getattr(layers, _TF_BINARY[function])(name=layer_name)
        if function in _TF_BINARY and tensors == 1 and scalar is not None:
            scale_offset = _rescaling(function, scalar, constant_first)
            if scale_offset is not None:
                return layers.Rescaling(*scale_offset, name=layer_name)
        raise LegacyModelError(
            f"layer '{name}' ({class_name}) is the TensorFlow call {function} recorded by Keras 2, "
            "which has no Keras 3 layer here (elementwise add, subtract, multiply and divide, "
            "relu, relu6, sigmoid, tanh and silu have)",
            _REWRITE,
            name,
        )

    def layer(self, old: Any, entry: dict[str, Any] | None = None) -> Any:
        keras = self.keras
        class_name = entry["class_name"] if entry else type(old).__name__
        name = old.name
        if class_name in _MODEL_CLASSES or (
            hasattr(old, "layers") and class_name not in self.custom_objects
        ):
            return self.model(old)
        if class_name in _TF_OP_LAYERS:
            raise LegacyModelError(
                f"layer '{name}' ({class_name}) is a TensorFlow call recorded by Keras 2 "
                f"({old.get_config().get('function', '?')}), which Keras 3 has no layer for",
                _REWRITE,
                name,
            )
        if class_name == "Lambda":
            if self.safe_mode:
                raise LegacyModelError(
                    f"layer '{name}' is a Lambda layer (Python code), which safe mode refuses to "
                    "run",
                    "The file is intact. If you trust where it came from, load it with "
                    "safe_mode=False (command line: --unsafe).",
                    name,
                )
            return keras.layers.Lambda(
                old.function, arguments=dict(old.arguments), name=keras3_name(name)
            )
        cls = self.custom_objects.get(class_name) or getattr(keras.layers, class_name, None)
        if cls is None:
            raise LegacyModelError(
                f"layer '{name}' is a {class_name}, which Keras 3 does not have",
                "Pass the Keras 3 class as custom_objects={'" + class_name + "': Class} "
                "(command line: --custom-objects MODULE), or " + _REWRITE[0].lower() + _REWRITE[1:],
                name,
            )
        config = _translate_config(old.get_config(), cls, name)
        config["name"] = keras3_name(name)
        try:
            return cls.from_config(config)
        except Exception as error:  # noqa: BLE001 - reported with the layer named
            raise LegacyModelError(
                f"layer '{name}' ({class_name}) has a config Keras 3 does not accept "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})",
                _REWRITE,
                name,
            ) from error

    def copy_weights(self, old: Any, new: Any) -> None:
        if hasattr(old, "layers") and hasattr(new, "layers"):
            return  # a nested model: its layers were copied when it was rebuilt
        values = old.get_weights()
        shapes = [tuple(w.shape) for w in new.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise LegacyModelError(
                f"layer '{old.name}' ({type(old).__name__}) holds weights of shapes "
                f"{[tuple(v.shape) for v in values]} in Keras 2 but {shapes} in Keras 3",
                _REWRITE,
                old.name,
            )
        new.set_weights(values)


_REWRITE = (
    "Rebuild the model in Keras 3 from your training code and load the weights into it "
    "(model.load_weights('file.h5') reads a Keras 2 .h5 file by layer name), or convert the "
    "Keras 2 model as it is: tfcompress.convert(tf_keras.models.load_model('file.h5'), ...)"
)


def keras3_name(name: str) -> str:
    """The layer's name in Keras 3, which refuses '/' in names ('conv1/bn' -> 'conv1_bn')."""
    return name.replace("/", "_")


def _node_offsets(config: dict[str, Any]) -> dict[str, int]:
    """1 for nested models whose config counts their own input node first (tf_keras does so
    for a nested model built on its own input), else nothing: read from the indices used."""
    calls = {entry["name"]: len(entry["inbound_nodes"]) for entry in config["layers"]}
    used: dict[str, int] = {}
    refs = [
        ref for entry in config["layers"] for node in entry["inbound_nodes"] for ref in _refs(node)
    ]
    for ref in [*refs, *config["output_layers"]]:
        used[ref[0]] = max(used.get(ref[0], 0), ref[1])
    return {
        entry["name"]: 1
        for entry in config["layers"]
        if entry["class_name"] in _MODEL_CLASSES
        and used.get(entry["name"], 0) >= calls[entry["name"]]
    }


_CONSTANT = "_CONSTANT_VALUE"  # tf_keras's stand-in for a constant first argument
# recorded TensorFlow calls of one tensor, as (Keras 3 layer class, its arguments)
_TF_UNARY = {
    "nn.relu": ("ReLU", ()),
    "nn.relu6": ("ReLU", (6.0,)),
    "math.sigmoid": ("Activation", ("sigmoid",)),
    "nn.sigmoid": ("Activation", ("sigmoid",)),
    "math.tanh": ("Activation", ("tanh",)),
    "nn.tanh": ("Activation", ("tanh",)),
    "nn.silu": ("Activation", ("silu",)),
    "nn.swish": ("Activation", ("silu",)),
}
# recorded TensorFlow calls of two tensors, as the Keras 3 merging layer
_TF_BINARY = {
    "__operators__.add": "Add",
    "math.add": "Add",
    "math.subtract": "Subtract",
    "math.multiply": "Multiply",
    "math.truediv": None,
    "math.divide": None,
}


# a TF 2.3 TensorFlowOpLayer's NodeDef op, as the TFOpLambda function of the same meaning
_NODE_DEF_OPS = {
    "AddV2": "math.add",
    "Add": "math.add",
    "Sub": "math.subtract",
    "Mul": "math.multiply",
    "RealDiv": "math.truediv",
    "Relu": "nn.relu",
    "Relu6": "nn.relu6",
    "Sigmoid": "math.sigmoid",
    "Tanh": "math.tanh",
}
_UNREAD = "?"  # an argument this translation does not read: the call is refused


def _scalar(value: Any) -> float | None:
    """A Python or one-element constant as a float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | list | np.ndarray):
        return None
    array = np.asarray(value, dtype="float64")
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _op_lambda_call(config: dict[str, Any], node: Any) -> tuple[str, float | None, bool, int]:
    """(function, scalar argument, whether the scalar comes first, tensor inputs) of a
    TFOpLambda node, or a function of "?" when it has arguments this does not read."""
    function = config.get("function", _UNREAD)
    refs = _refs(node)
    if len(refs) != 1:
        return _UNREAD, None, False, 0
    first = refs[0]
    kwargs = dict(first[3]) if len(first) > 3 and first[3] else {}
    kwargs.pop("name", None)
    other = kwargs.pop("y", None)
    if kwargs:
        return f"{function} (with {', '.join(kwargs)})", None, False, 0
    constant_first = first[0] == _CONSTANT
    if other is None:
        return function, None, False, 0 if constant_first else 1
    if _is_tensor_ref(other):
        if constant_first:
            return function, _scalar(first[2]), True, 1
        return function, None, False, 2
    return function, _scalar(other), False, 1


def _node_def_call(config: dict[str, Any], tensors: int) -> tuple[str, float | None, bool, int]:
    """The same for a TensorFlowOpLayer: its op, and its constant where it has one."""
    op = config.get("node_def", {}).get("op", _UNREAD)
    function = _NODE_DEF_OPS.get(op, op)
    constants = {int(index): value for index, value in (config.get("constants") or {}).items()}
    if not constants:
        return function, None, False, tensors
    if len(constants) == 1 and tensors == 1:
        ((index, value),) = constants.items()
        return function, _scalar(value), index == 0, 1
    return function, None, False, 0


def _rescaling(function: str, value: float, constant_first: bool) -> tuple[float, float] | None:
    """(scale, offset) of the Rescaling layer computing `x OP value` (or `value OP x`)."""
    if function in ("__operators__.add", "math.add"):
        return 1.0, value
    if function == "math.multiply":
        return value, 0.0
    if function == "math.subtract":
        return (-1.0, value) if constant_first else (1.0, -value)
    if function in ("math.truediv", "math.divide") and not constant_first and value != 0:
        return 1.0 / value, 0.0
    return None


def _tensor_refs(node: Any) -> list[list[Any]]:
    """The tensors a node reads: its references, then tensors passed as keyword arguments."""
    found = []
    for ref in _refs(node):
        if ref[0] != _CONSTANT:
            found.append(ref)
        for value in (ref[3] if len(ref) > 3 and isinstance(ref[3], dict) else {}).values():
            if _is_tensor_ref(value):
                found.append(value)
    return found


def _refs(node: Any) -> list[list[Any]]:
    """The [layer name, node index, tensor index, kwargs] lists of one inbound node."""
    if isinstance(node, dict):  # newer Keras 2 configs: {"args": [...], "kwargs": {...}}
        raise LegacyModelError(
            "the model's config uses a node format this translation does not read",
            _REWRITE,
        )
    if node and isinstance(node[0], str):  # a single reference written flat
        return [node]
    return list(node)


def _is_tensor_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def _batch_shape(shape: Any, name: str) -> tuple:
    if isinstance(shape, list):
        raise LegacyModelError(f"the Sequential model '{name}' has several inputs", _REWRITE, None)
    if shape is None:
        raise LegacyModelError(
            f"the Sequential model '{name}' was never built (its input shape is unknown)",
            "Build it (model.build(input_shape)) in tf_keras and save it again.",
        )
    return tuple(shape)


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, dict):  # a serialized policy: {"class_name": "Policy", "config": {...}}
        return dtype.get("config", {}).get("name", "float32")
    return getattr(dtype, "name", None) or str(dtype)


def _accepted_keys(cls: type) -> set[str] | None:
    """The keyword arguments `cls(...)` takes, or None when it takes any (**kwargs to a custom base)."""
    import keras

    keys: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        keys |= {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return keys
        if klass is keras.layers.Layer:
            return keys | {"input_shape", "input_dim", "batch_size", "batch_shape"}
    return None


def _translate_config(config: dict[str, Any], cls: type, name: str) -> dict[str, Any]:
    """A tf_keras layer config as the Keras 3 class reads it; unknown keys only where harmless."""
    import keras

    config = dict(config)
    config.pop("batch_input_shape", None)  # the input is rebuilt as keras.Input
    if "dtype" in config:
        config["dtype"] = _dtype_name(config["dtype"])
    if issubclass(cls, keras.layers.BatchNormalization) and isinstance(config.get("axis"), list):
        if len(config["axis"]) != 1:
            raise LegacyModelError(
                f"layer '{name}' normalizes over the axes {config['axis']}; Keras 3's "
                "BatchNormalization takes one axis",
                _REWRITE,
                name,
            )
        config["axis"] = config["axis"][0]
    for old_key, new_key in _RENAMED.get(cls.__name__, {}).items():
        if old_key in config:
            config[new_key] = config.pop(old_key)
    accepted = _accepted_keys(cls)
    if accepted is None:
        return config
    defaults = _legacy_defaults(cls.__name__)
    for key in sorted(set(config) - accepted):
        value = config[key]
        harmless = (
            key in _IMPLEMENTATION_ONLY
            or key.endswith(_UNUSED_IN_KERAS2)
            or value in (None, False)
            or (key in defaults and defaults[key] == value)
        )
        if not harmless:
            raise LegacyModelError(
                f"layer '{name}' ({cls.__name__}) sets {key}={value!r}, which Keras 3's "
                f"{cls.__name__} does not have",
                _REWRITE,
                name,
            )
        del config[key]
    return config


def _legacy_defaults(class_name: str) -> dict[str, Any]:
    """The defaults of tf_keras's class of that name (a key left at its default changes nothing)."""
    import tf_keras

    cls = getattr(tf_keras.layers, class_name, None)
    if cls is None:
        return {}
    defaults = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.default is not p.empty:
                    defaults.setdefault(p.name, p.default)
    return defaults


def random_batch(model: Any, samples: int = 4, seed: int = 0, size: int = 32) -> list[np.ndarray]:
    """One random batch per input of `model` (unknown sizes other than the batch set to `size`)."""
    rng = np.random.default_rng(seed)
    batch = []
    for tensor in model.inputs:
        shape = [samples] + [dim or size for dim in tuple(tensor.shape)[1:]]
        dtype = _dtype_name(tensor.dtype)
        if "int" in dtype:
            batch.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            batch.append(rng.normal(size=shape).astype(dtype))
    return batch


def check_same_outputs(legacy_model: Any, model: Any, rtol: float = 1e-4) -> None:
    """Both models give the same outputs on a random batch, or a `LegacyModelError` naming the
    first layer whose outputs differ."""
    for size in (32, 224):  # a size the model accepts where its inputs leave it open
        batch = random_batch(legacy_model, size=size)
        feed = batch[0] if len(batch) == 1 else batch
        try:
            expected = _flat(legacy_model(feed, training=False))
            break
        except Exception as error:  # noqa: BLE001 - tried again with larger inputs, then named
            failure = error
    else:
        raise LegacyModelError(
            f"the Keras 2 model does not run on a random batch to check the rebuild "
            f"({type(failure).__name__}: {str(failure).splitlines()[0][:200]})",
            "Give its inputs a fixed shape in tf_keras and save it again, or call "
            "tfcompress.legacy.rebuild(model, check=False) and check it yourself.",
        )
    try:
        got = _flat(model(feed, training=False))
    except Exception as error:  # noqa: BLE001 - reported as a rebuild that computes otherwise
        raise LegacyModelError(
            "the model rebuilt in Keras 3 fails on a batch the Keras 2 model runs "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})",
            _REWRITE,
        ) from error
    worst = _worst_difference(expected, got, rtol)
    if worst is None:
        return
    layer = _first_differing_layer(legacy_model, model, feed)
    where = f"layer '{layer}' is the first whose outputs differ; " if layer else ""
    raise LegacyModelError(
        f"the model rebuilt in Keras 3 computes other outputs than the Keras 2 file ({where}"
        f"largest difference {worst:.3g})",
        _REWRITE,
        layer,
    )


def _flat(outputs: Any) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


def _worst_difference(
    expected: Iterable[np.ndarray], got: Iterable[np.ndarray], rtol: float = 1e-4
) -> float | None:
    """The largest difference when some output differs beyond float tolerance, else None."""
    expected, got = list(expected), list(got)
    if len(expected) != len(got) or any(
        a.shape != b.shape for a, b in zip(expected, got, strict=True)
    ):
        return float("inf")
    worst = 0.0
    differs = False
    for a, b in zip(expected, got, strict=True):
        scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
        difference = float(np.max(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, difference)
        differs = differs or difference > rtol * scale + 1e-5
    return worst if differs else None


def _first_differing_layer(legacy_model: Any, model: Any, feed: Any) -> str | None:
    """The first top-level layer (in the model's order) whose output differs; None if unknown."""
    import keras
    import tf_keras

    try:
        names = [
            layer.name
            for layer in legacy_model.layers
            if not isinstance(layer, tf_keras.layers.InputLayer) and len(layer.inbound_nodes) == 1
        ]
        old = tf_keras.Model(legacy_model.input, [legacy_model.get_layer(n).output for n in names])
        new = keras.Model(model.input, [model.get_layer(keras3_name(n)).output for n in names])
        for name, a, b in zip(names, _flat(old(feed)), _flat(new(feed)), strict=True):
            if _worst_difference([a], [b]) is not None:
                return name
    except Exception:  # noqa: BLE001 - only a better message is lost
        return None
    return None


def is_savedmodel_dir(path: Path) -> bool:
    """Whether `path` is a SavedModel directory (it holds saved_model.pb)."""
    return path.is_dir() and (path / "saved_model.pb").is_file()
