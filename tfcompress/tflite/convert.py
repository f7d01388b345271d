"""Plain conversion: a traceable Keras model -> TFLite flatbuffer bytes, in every mode.

This is the lowest conversion layer: it knows TF's converter (its configuration per mode, the
calibration samples, crash isolation, its errors) and nothing of the compression techniques.
`tfcompress.convert` prepares the model (strips training layers, rewrites it integer-friendly)
and hands it here; the debugger asks for the calibrated file only (`calibrate_source`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import tensorflow as tf

from tfcompress.core import compat
from tfcompress.core.graph import inputs_rescaled
from tfcompress.tflite.calibration import as_dataset_fn, collect_samples, synthetic_samples
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.isolation import DEFAULT_TIMEOUT_S, convert_isolated
from tfcompress.tflite.source import TraceableModel

MODES = ("float32", "dynamic", "float16", "int8", "int16x8", "edgetpu")
CALIBRATED_MODES = ("int8", "int16x8", "edgetpu")
_FAKE_QUANT_OPS = {
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
    "FakeQuantWithMinMaxArgs",
}
_log = logging.getLogger("tfcompress")


def plain_converter(
    source: TraceableModel,
    mode: str,
    representative_data: Any = None,
    *,
    num_samples: int = 200,
    per_channel: bool = True,
    sparsity: bool = False,
    progress: bool = False,
) -> Any:
    """TF's `TFLiteConverter` for `source`, configured for `mode` (calibration data included).

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.tflite.source import load_source
        >>> converter = plain_converter(load_source(build_digits_cnn()), "float16")
        >>> converter.target_spec.supported_types
        [tf.float16]
    """
    concrete = source.concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], source.owner)
    # The SavedModel lowering keeps Keras 3 variables as READ_VARIABLE ops that calibration cannot
    # run; the frozen-graph pipeline turns them into constants and folds BatchNormalization.
    converter.experimental_lower_to_saved_model = False
    _configure(converter, mode, source, concrete, representative_data, num_samples, progress)
    if not per_channel:
        compat.disable_per_channel_weights(converter)
    if sparsity:
        converter.optimizations = list(
            {*converter.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY}
        )
    return converter


def has_fake_quant(concrete: Any) -> bool:
    """True when the traced graph (or a function it calls) holds fake-quant ops (a QAT model)."""
    graph_def = concrete.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    return bool(ops & _FAKE_QUANT_OPS)


def _configure(
    converter: Any,
    mode: str,
    source: TraceableModel,
    concrete: Any,
    representative_data: Any,
    num_samples: int,
    progress: bool,
) -> None:
    if mode == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "dynamic":
        return
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    converter.representative_dataset = as_dataset_fn(
        _calibration_samples(source, concrete, representative_data, num_samples, mode), progress
    )
    if mode == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
        return
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = tf.uint8 if mode == "edgetpu" else tf.int8
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    if mode == "edgetpu":
        compat.disable_per_channel_dense(converter)


def _calibration_samples(
    source: TraceableModel, concrete: Any, data: Any, num_samples: int, mode: str
) -> list:
    if data is not None:
        rescaled = inputs_rescaled(source.owner) if compat.is_keras3_model(source.owner) else []
        return collect_samples(data, source.input_specs, num_samples, source.name, rescaled)
    if has_fake_quant(concrete):
        # TF 2.21 refuses TFLITE_BUILTINS_INT8 without a representative dataset even when every
        # range is already in the graph: feed it a few synthetic samples that change nothing.
        _log.info("QAT model '%s': calibrating on synthetic inputs.", source.name)
        return synthetic_samples(source.input_specs, count=min(num_samples, 16))
    raise ConversionError(
        f"mode={mode!r} needs representative_data to calibrate the activation ranges of "
        f"'{source.name}': pass a few hundred real inputs (e.g. representative_data=x_train[:200]), "
        "or train it quantization-aware with tfcompress.quantize_model."
    )


_LEGACY_ROUTE = (
    "\nThis is a legacy tf_keras model. The legacy route: in a process started with "
    "TF_USE_LEGACY_KERAS=1, convert it with tf.lite.TFLiteConverter.from_keras_model(model) "
    "(tfmot's workflow), or save it as a SavedModel (model.save('dir')) and pass that directory "
    "to tfcompress.convert."
)


def run_converter(
    converter: Any,
    name: str,
    mode: str,
    *,
    isolate: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    legacy: bool = False,
) -> bytes:
    """`converter.convert()`, its errors turned into ConversionError; isolated in a child process."""
    try:
        with warnings.catch_warnings():
            # with integer I/O the converter warns that input statistics were not given: they
            # come from calibration, so the warning is noise for our users
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            if isolate:
                return convert_isolated(converter, name=name, mode=mode, timeout=timeout)
            return converter.convert()
    except ConversionError as error:
        if legacy and _LEGACY_ROUTE not in str(error):
            raise ConversionError(f"{error}{_LEGACY_ROUTE}") from error
        raise
    except Exception as error:  # the converter raises ConverterError, ValueError, RuntimeError...
        detail = str(error).strip().splitlines()
        summary = (
            "\n".join(line for line in detail if "error" in line.lower())[:1500]
            or str(error)[:1500]
        )
        advice = (
            "When it names an op with no TFLite kernel for this mode, try mode='dynamic' or "
            "'float16', or replace that layer (docs/reference/coverage.md lists what converts); when it "
            "names a shape, give the model static input shapes."
        )
        if mode == "int16x8" and "Empty min/max" in str(error):
            advice = (
                "In int16x8, TF's quantizer cannot calibrate integer tensors, such as the token "
                "ids an Embedding reads: convert this model with mode='int8' (full integer), "
                "'float16' or 'dynamic'."
            )
        if mode == "int16x8" and "Quantized dimension for tensor property" in str(error):
            advice = (
                "In int16x8, TF's quantizer needs per-channel weights for depthwise convolutions "
                "(DepthwiseConv2D, SeparableConv2D): convert with per_channel=True (the default)."
            )
        if "Unsupported filter quantization zero-point" in str(error):
            advice = (
                "TFLite takes weights with a zero point of 0 only; a quantization-aware layer "
                "whose weight quantizer is symmetric with narrow_range=False (an even number of "
                "levels, as in 4-bit LastValueQuantizer(symmetric=True, narrow_range=False)) can "
                "end with another one: use narrow_range=True for its weights."
            )
        raise ConversionError(
            f"The TFLite converter could not convert '{name}' to mode={mode!r}; its own error is "
            f"below. {advice}\n{summary}" + (_LEGACY_ROUTE if legacy else "")
        ) from error
