"""Turn what the user hands `convert` (a model object or a file) into one traceable function."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfcompress.core import compat
from tfcompress.core.graph import inbound_nodes
from tfcompress.tflite.errors import ConversionError

ModelSource = Any  # keras.Model | tf_keras.Model | str | os.PathLike


@dataclass
class TraceableModel:
    """A callable on a list of input tensors, the specs of those inputs, and what owns its variables."""

    name: str
    fn: Callable[..., Any]
    input_specs: list[tf.TensorSpec]
    owner: Any
    _concrete: Any = field(default=None, repr=False, compare=False)

    def with_batch_size(self, batch_size: int | None) -> TraceableModel:
        specs = [
            tf.TensorSpec([batch_size, *spec.shape[1:]], spec.dtype, spec.name)
            for spec in self.input_specs
        ]
        return TraceableModel(self.name, self.fn, specs, self.owner)

    def concrete_function(self) -> Any:
        """The traced graph of `fn` on `input_specs` (traced once, shared by every caller)."""
        if self._concrete is None:
            self._concrete = self._trace()
        return self._concrete

    def _trace(self) -> Any:
        fn = self.fn

        @tf.function(input_signature=self.input_specs, autograph=False)
        def serving(*inputs: tf.Tensor) -> Any:
            return fn(list(inputs))

        return serving.get_concrete_function()


def load_source(
    source: ModelSource,
    input_signature: Sequence[tf.TensorSpec] | None = None,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
) -> TraceableModel:
    """Resolve a Keras 3 model, a `tf_keras` model, a `.keras`/`.h5` file or a SavedModel directory."""
    if isinstance(source, str | os.PathLike):
        return _load_path(Path(source), input_signature, safe_mode, custom_objects)
    if compat.is_keras3_model(source) or compat.is_tf_keras(source):
        return _from_keras_model(source, input_signature)
    raise ConversionError(
        f"convert() got a {type(source).__name__}; pass a Keras model, a tf_keras model, a path to a "
        "'.keras' file or a SavedModel directory."
    )


def _from_keras_model(
    model: Any, input_signature: Sequence[tf.TensorSpec] | None
) -> TraceableModel:
    specs = list(input_signature) if input_signature else _keras_input_specs(model)

    def call(inputs: list[tf.Tensor]) -> Any:
        return model(inputs[0] if len(inputs) == 1 else inputs, training=False)

    return TraceableModel(model.name, call, specs, model)


def _keras_input_specs(model: Any) -> list[tf.TensorSpec]:
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        built = _built_input_specs(model)
        if built:
            return built
        raise ConversionError(
            f"Model '{model.name}' ({type(model).__name__}) has no input signature: it is a subclassed "
            "model that was never called, or an unbuilt one. Call it once on a batch (model(x[:1])), "
            "or pass input_signature=[tf.TensorSpec((None, H, W, C), tf.float32)] to convert()."
        )
    specs = []
    for tensor in inputs:
        dtype = tf.as_dtype(getattr(tensor.dtype, "name", tensor.dtype))
        name = getattr(tensor, "name", None)
        name = name.split(":")[0] if isinstance(name, str) else None
        specs.append(tf.TensorSpec(tuple(tensor.shape), dtype, name))
    return specs


def _built_input_specs(model: Any) -> list[tf.TensorSpec]:
    """The float32 input specs of a subclassed model from the shape Keras recorded when it was
    built (one input; several when its call takes them as a list); [] when none was recorded."""
    config = model.get_build_config() if getattr(model, "built", False) else None
    shapes = (config or {}).get("input_shape")
    if shapes is None:
        return []
    if isinstance(shapes, list | tuple) and shapes and isinstance(shapes[0], list | tuple):
        shapes = list(shapes)
    else:
        shapes = [shapes]
    return [tf.TensorSpec((None, *tuple(shape)[1:]), tf.float32) for shape in shapes]


def with_token_ids_as_int32(source: TraceableModel) -> TraceableModel:
    """`source`, with each float input that only `Embedding` layers read traced as int32.

    `keras.Input` is float32 unless told otherwise, and an Embedding casts its ids itself. Traced
    as float, an integer file would quantize the ids like any activation (an int8 step of 1.17
    for a vocabulary of 300) and read the wrong rows; as int32 they reach the lookup exactly, as
    in TFLite's own text models. `convert` applies it in the calibrated modes (int8, int16x8,
    edgetpu); float files keep the declared dtype.

    Example:
        >>> import keras
        >>> ids = keras.Input((6,))
        >>> model = keras.Model(ids, keras.layers.Embedding(9, 2)(ids))
        >>> [spec.dtype.name for spec in with_token_ids_as_int32(load_source(model)).input_specs]
        ['int32']
    """
    import keras

    model = source.owner
    if not compat.is_keras3_model(model) or not getattr(model, "inputs", None):
        return source  # a subclassed model: its inputs are what it was built with
    readers: dict[int, list[Any]] = {id(tensor): [] for tensor in model.inputs}
    for layer in model.layers:
        # every call of the layer in the model (a shared Embedding reads several inputs)
        for node in inbound_nodes(layer):
            for tensor in node.input_tensors:
                if id(tensor) in readers:
                    readers[id(tensor)].append(layer)
    specs = list(source.input_specs)
    for index, tensor in enumerate(model.inputs):
        layers = readers[id(tensor)]
        if (
            specs[index].dtype.is_floating
            and layers
            and all(isinstance(layer, keras.layers.Embedding) for layer in layers)
        ):
            specs[index] = tf.TensorSpec(specs[index].shape, tf.int32, specs[index].name)
    return TraceableModel(source.name, source.fn, specs, source.owner)


def _load_path(
    path: Path,
    input_signature: Sequence[tf.TensorSpec] | None,
    safe_mode: bool,
    custom_objects: dict | None,
) -> TraceableModel:
    if not path.exists():
        raise FileNotFoundError(f"Model file '{path}' does not exist: check the path.")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ConversionError(
                f"'{path}' is a directory but not a SavedModel (no saved_model.pb inside). Pass a "
                "SavedModel directory or a '.keras' file."
            )
        return _load_saved_model(path, input_signature)
    if path.suffix == ".tflite":
        raise ConversionError(
            f"'{path}' is already a TFLite flatbuffer; convert the Keras model instead."
        )
    if path.suffix not in (".keras", ".h5"):
        raise ConversionError(
            f"Cannot tell what '{path}' is from its extension '{path.suffix}': pass a '.keras' file, "
            "an '.h5' file or a SavedModel directory."
        )
    if not os.access(path, os.R_OK):
        raise PermissionError(f"Model file '{path}' is not readable: check its permissions.")
    model = _load_keras_file(path, safe_mode, custom_objects)
    return _from_keras_model(model, input_signature)


def _load_keras_file(path: Path, safe_mode: bool, custom_objects: dict | None) -> Any:
    try:
        return compat.load_keras_file(str(path), safe_mode, custom_objects)
    except (TypeError, ValueError) as error:
        text = str(error)
        if "safe_mode" in text or "lambda" in text.lower():
            hint = (
                "It contains a Lambda layer or other Python code, which safe mode refuses to run. "
                "If you trust the file, pass safe_mode=False (CLI: --unsafe)."
            )
        elif "Could not locate" in text or "Unknown" in text or "custom_objects" in text:
            hint = (
                "It uses a custom layer or object that is not registered. Import the module that "
                "defines it (decorated with @keras.saving.register_keras_serializable) or pass "
                "custom_objects={'Name': Class}."
            )
        else:
            hint = "The file may be corrupted or written by an incompatible Keras version."
        raise ConversionError(
            f"Could not load '{path}': {hint}\nKeras said: {text[:600]}"
        ) from error
    except OSError as error:
        raise ConversionError(
            f"Could not read '{path}' as a Keras file ({error}). Is it truncated or not a .keras file?"
        ) from error


def _load_saved_model(
    path: Path, input_signature: Sequence[tf.TensorSpec] | None
) -> TraceableModel:
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TF raises many types for a broken SavedModel
        raise ConversionError(f"Could not load the SavedModel at '{path}': {error}") from error
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise ConversionError(
            f"The SavedModel at '{path}' has no 'serving_default' signature; export it with one "
            "(model.export(path) in Keras 3)."
        )
    signature = signatures["serving_default"]
    named_specs = signature.structured_input_signature[1]
    names = sorted(named_specs)
    specs = list(input_signature) if input_signature else [named_specs[n] for n in names]
    output_names = sorted(signature.structured_outputs)

    def call(inputs: list[tf.Tensor]) -> Any:
        outputs = signature(**dict(zip(names, inputs, strict=True)))
        values = [outputs[name] for name in output_names]
        return values[0] if len(values) == 1 else values

    return TraceableModel(path.name, call, specs, loaded)
