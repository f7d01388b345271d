"""Every Keras / TensorFlow / LiteRT version switch lives here, and nowhere else.

TensorFlow and Keras are imported on first use, not when this module loads: the light tools
(`inspect`, `bench`, `evaluate`) only need LiteRT's interpreter and flatbuffer schema.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _keras() -> Any:
    import keras

    return keras


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def __getattr__(name: str) -> Any:
    # KERAS_VERSION / TF_VERSION import their framework only when someone reads them
    if name == "KERAS_VERSION":
        return _major_minor(_keras().__version__)
    if name == "TF_VERSION":
        return _major_minor(_tf().__version__)
    raise AttributeError(f"module 'tfcompress.core.compat' has no attribute '{name}'")


def is_tf_keras(obj: Any) -> bool:
    """True for a legacy Keras 2 (`tf_keras`) layer or model; never imports tf_keras.

    A tf_keras object exists only once tf_keras is imported, so its classes are looked up in
    `sys.modules`; Keras 3 objects are known without it.
    """
    if isinstance(obj, _keras().layers.Layer):
        return False
    if type(obj).__module__.startswith(("tf_keras", "keras.src.engine", "keras.engine")):
        return True
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(obj, tf_keras.layers.Layer)


def is_keras3_model(model: Any) -> bool:
    return isinstance(model, _keras().Model)


def litert_interpreter_class() -> type:
    """The LiteRT interpreter; `tf.lite.Interpreter` is deprecated and only a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a hard dependency
        return _tf().lite.Interpreter


def litert_op_resolver(builtin_only: bool, reference: bool = False) -> Any:
    """OpResolverType for the LiteRT interpreter: XNNPACK (default), the builtin (optimized)
    kernels, or the reference kernels (`reference`: plain C++, what TFLM's kernels follow)."""
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:  # pragma: no cover
        from tensorflow.lite.python.interpreter import OpResolverType
    if reference:
        return OpResolverType.BUILTIN_REF
    if builtin_only:
        return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return OpResolverType.AUTO


def litert_op_names(interpreter: Any) -> list[str]:
    """The ops of an allocated LiteRT interpreter's plan, in order; `"DELEGATE"` for a node a
    delegate (XNNPACK) took (LiteRT's private `_get_ops_details`)."""
    return [str(op["op_name"]) for op in interpreter._get_ops_details()]


def tflite_schema() -> Any:
    """The flatbuffer schema module of the TFLite format (object API)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def disable_per_channel_dense(converter: Any) -> None:
    """Ask the TFLite converter for per-tensor FULLY_CONNECTED weights (needed by the Edge TPU)."""
    attribute = "_experimental_disable_per_channel_quantization_for_dense_layers"
    if hasattr(converter, attribute):
        setattr(converter, attribute, True)


def disable_per_channel_weights(converter: Any) -> None:
    """Ask the TFLite converter for per-tensor weight scales everywhere (keeps clustered values shared)."""
    converter._experimental_disable_per_channel = True


def load_keras_file(path: str, safe_mode: bool, custom_objects: dict | None) -> Any:
    """Load a `.keras` / `.h5` file with Keras 3."""
    return _keras().saving.load_model(
        path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
    )


def keras_distillation_module() -> Any:
    """`keras.distillation` when this Keras ships it (3.15 does), else None."""
    return getattr(_keras(), "distillation", None)


def per_channel_flags(converter: Any) -> tuple[bool, bool]:
    """(per-channel weights, per-channel FULLY_CONNECTED weights) as the converter is set up."""
    dense = "_experimental_disable_per_channel_quantization_for_dense_layers"
    return (
        not getattr(converter, "_experimental_disable_per_channel", False),
        not getattr(converter, dense, False),
    )


def calibrate_only(converter: Any) -> None:
    """Ask the TFLite converter for the calibrated float file, without quantizing it."""
    converter._experimental_calibrate_only = True


def tfmot_wrapper_names(model: Any) -> list[str]:
    """Names of the layers (nested models included) that are tfmot's pruning or clustering wrappers.

    tfmot's classes are recognised by their module, so tfmot itself need not be imported; its
    quantization wrappers are not listed (a tfmot QAT model converts as it is).
    """
    found = []
    for layer in getattr(model, "layers", []):
        module = type(layer).__module__
        if module.startswith("tensorflow_model_optimization") and (
            ".sparsity." in module or ".clustering." in module
        ):
            found.append(layer.name)
        elif hasattr(layer, "layers"):
            found.extend(tfmot_wrapper_names(layer))
    return found


def nested_layers(model: Any) -> list[Any]:
    """Every layer inside `model`, nested models' and wrappers' layers included (not `model`)."""
    return list(model._flatten_layers(include_self=False))


@contextlib.contextmanager
def tracking_unlocked(layer: Any) -> Iterator[None]:
    """Let a built layer take new state (Keras locks a layer's tracker once it is built)."""
    layer._tracker.unlock()
    try:
        yield
    finally:
        layer._tracker.lock()


def convnext_layer_scale_class() -> type | None:
    """`LayerScale` of Keras's ConvNeXt application (not exported by Keras); None if it moved."""
    try:
        from keras.src.applications.convnext import LayerScale
    except ImportError:  # pragma: no cover - moved in another Keras version
        return None
    return LayerScale


def mlir_quantize(calibrated: bytes, **options: Any) -> bytes:
    """TF's MLIR quantizer on a calibrated flatbuffer (what `TFLiteConverter` runs after calibrating).

    `options` are its keywords: `disable_per_channel`, `fully_quantize`, `input_data_type`,
    `output_data_type`, `denylisted_nodes`, `disable_per_channel_for_dense_layers`.
    """
    from tensorflow.lite.python import convert as tf_convert

    return tf_convert.mlir_quantize(calibrated, **options)


def copy_lambda(layer: Any) -> Any:
    """A new `Lambda` layer calling the same Python function as `layer`, without serializing it.

    Rebuilding a model from layer configs would deserialize a Lambda's function, which Keras's
    safe mode refuses (rightly, for files); the function is already in memory here.
    """
    keras = _keras()
    return keras.layers.Lambda(
        layer.function,
        output_shape=layer._output_shape,
        mask=layer.mask,
        arguments=dict(layer.arguments),
        name=layer.name,
        dtype=layer.dtype_policy,
    )


def is_library_layer(layer: Any) -> bool:
    """True for a layer whose class Keras or tfcompress defines (not one of the user's own).

    Tracing a subclassed model runs the `call` of the user's composite layers only; a library
    layer holding sublayers (MultiHeadAttention, Bidirectional, a training wrapper) stays whole.
    """
    return type(layer).__module__.split(".")[0] in ("keras", "tfcompress")
