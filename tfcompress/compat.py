"""Every Keras / TensorFlow / LiteRT version switch lives here, and nowhere else."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

KERAS_VERSION: tuple[int, ...] = tuple(int(p) for p in keras.__version__.split(".")[:2])
TF_VERSION: tuple[int, ...] = tuple(int(p) for p in tf.__version__.split(".")[:2])


def is_tf_keras_model(model: Any) -> bool:
    """True for a legacy Keras 2 (`tf_keras`) model, without importing tf_keras if it is absent."""
    module = type(model).__module__
    if module.startswith("tf_keras") or module.startswith("keras.src.engine"):
        return True
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        return False
    import tf_keras

    return isinstance(model, tf_keras.Model)


def is_keras3_model(model: Any) -> bool:
    return isinstance(model, keras.Model)


def litert_interpreter_class() -> type:
    """The LiteRT interpreter; `tf.lite.Interpreter` is deprecated and only a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a hard dependency
        return tf.lite.Interpreter


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
    return keras.saving.load_model(
        path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
    )


def keras_distillation_module() -> Any:
    """`keras.distillation` when this Keras ships it (3.15 does), else None."""
    return getattr(keras, "distillation", None)
