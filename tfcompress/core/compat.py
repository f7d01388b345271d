"""Every Keras / TensorFlow / LiteRT version switch lives here, and nowhere else.

TensorFlow and Keras are imported on first use, not when this module loads: the light tools
(`inspect`, `bench`, `evaluate`) only need LiteRT's interpreter and flatbuffer schema.
"""

from __future__ import annotations

import os
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


def is_tf_keras_model(model: Any) -> bool:
    """True for a legacy Keras 2 (`tf_keras`) model, without importing tf_keras if it is absent."""
    module = type(model).__module__
    if module.startswith("tf_keras") or module.startswith("keras.src.engine"):
        return True
    try:
        import tf_keras
    except ImportError:
        return False
    return isinstance(model, tf_keras.Model)


def is_keras3_model(model: Any) -> bool:
    return isinstance(model, _keras().Model)


def litert_interpreter_class() -> type:
    """The LiteRT interpreter; `tf.lite.Interpreter` is deprecated and only a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a hard dependency
        return _tf().lite.Interpreter


def litert_op_resolver(builtin_only: bool) -> Any:
    """OpResolverType for the LiteRT interpreter: XNNPACK (default) or plain builtin kernels."""
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:  # pragma: no cover
        from tensorflow.lite.python.interpreter import OpResolverType
    if builtin_only:
        return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return OpResolverType.AUTO


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
