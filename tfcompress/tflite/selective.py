"""Selective precision: keep chosen Keras layers in float inside an otherwise integer file.

TF's converter calibrates a float file (every tensor gets its observed range) and then quantizes
it with MLIR. The quantizer takes a denylist of nodes (output tensor names): the ops it names
stay float and get `DEQUANTIZE` before and `QUANTIZE` after them, the rest is quantized as
usual. `tfcompress.convert(..., keep_float=[...])` calibrates once, maps the Keras layer names to
the ops that implement them (`tfcompress.tflite.layer_map`) and quantizes with that denylist; the
integer input and output of the file stay integer.

The same calibrated file quantized again with other denylists is how the debugger measures a
layer's isolated error (everything else float) and how `suggest_keep_float` tries candidates:
one calibration, many cheap quantizations (milliseconds each).

TF 2.21 cannot mix activation widths in one file: 16-bit activations are a whole-model choice
(`mode="int16x8"`, TF's older quantizer, which takes no denylist), so there is no per-layer
`int16_activations`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfcompress.core import compat
from tfcompress.tflite.edgetpu import edgetpu_report
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import inspect, share_vectors
from tfcompress.tflite.layer_map import LayerOps, map_layers, top_level_layers
from tfcompress.tflite.requantize import fold_float_requantize

KEEP_FLOAT_MODES = ("int8", "edgetpu")
_QDQ_OPS = ("QUANTIZE", "DEQUANTIZE")
_ALL_SAMPLES = 10**9


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """MLIR's quantizer logs its flags on stderr once per call; the debugger calls it per layer.

    Its errors still reach the caller: they are raised as Python exceptions.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real file descriptors (embedded interpreter): nothing to quiet
        yield
        return
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        _flush_c_stdout()  # C's buffered lines must land in /dev/null, not after the restore
        for fd, copy in ((1, saved[0]), (2, saved[1])):
            os.dup2(copy, fd)
            os.close(copy)


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C library to flush
        pass


@dataclass
class CalibratedModel:
    """A calibrated float file and what it takes to quantize it with any set of float layers.

    Made by `calibrate` (or inside `convert(..., keep_float=...)`); `quantize` is cheap, so the
    debugger and `suggest_keep_float` call it once per candidate.

    Attributes:
        calibrated: the float flatbuffer with the observed ranges of its tensors.
        model: the Keras model that was converted (after convert's own preparation).
        mode: `"int8"` or `"edgetpu"`.
        rows: the layer-to-ops map of the calibrated file.
        quantization_aware: whether the model holds fake-quant ranges (a QAT model).

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.export import calibrate
        >>> calibrated = calibrate(build_digits_cnn(), "int8", load_digits().x_train[:20])
        >>> tfc.inspect(calibrated.quantize(["fc1"])).float_ops
        ['DEQUANTIZE', 'FULLY_CONNECTED', 'QUANTIZE']
    """

    calibrated: bytes
    model: Any
    mode: str
    per_channel: bool = True
    per_channel_dense: bool = True
    rows: list[LayerOps] = field(default_factory=list, repr=False)
    quantization_aware: bool = False

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = map_layers(self.calibrated, self.model)

    def rows_of(self, names: Sequence[str]) -> list[LayerOps]:
        """The rows holding the named layers; a name that has none is an error listing them all."""
        check_layer_names(self.model, names, self.rows)
        wanted = set(names)
        return [row for row in self.rows if wanted & {*row.layers, *row.named}]

    def quantize(
        self, keep_float: Sequence[str] = (), *, only: Sequence[str] | None = None
    ) -> bytes:
        """Quantize the calibrated file, keeping `keep_float` (or all but `only`) in float.

        Args:
            keep_float: Keras layer names whose ops stay float.
            only: instead, quantize only these layers and keep every other op float (the
                debugger's isolated error).

        Returns:
            The flatbuffer, with integer input and output as in `convert`.
        """
        if only is not None:
            chosen = {id(row) for row in self.rows_of(only)}
            nodes = [n for row in self.rows if id(row) not in chosen for n in row.op_outputs]
        else:
            nodes = [n for row in self.rows_of(keep_float) for n in row.op_outputs]
        import tensorflow as tf

        io_type = tf.uint8 if self.mode == "edgetpu" else tf.int8
        try:
            with _quiet_native_output(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flatbuffer = compat.mlir_quantize(
                    self.calibrated,
                    disable_per_channel=not self.per_channel,
                    fully_quantize=False,  # what TF's converter passes: same files as convert
                    input_data_type=io_type,
                    output_data_type=io_type,
                    denylisted_nodes=sorted(set(nodes)) or None,
                    disable_per_channel_for_dense_layers=not self.per_channel_dense,
                )

        except Exception as error:  # the quantizer raises RuntimeError/ConverterError
            raise ConversionError(
                f"TF's quantizer could not quantize '{self.model.name}' with "
                f"{'only ' + repr(list(only)) if only is not None else 'keep_float=' + repr(list(keep_float))}"
                f": {str(error).strip()[:800]}"
            ) from error
        flatbuffer, _ = fold_float_requantize(flatbuffer)
        if self.mode != "edgetpu":  # the same file as convert(keep_float=...) writes
            flatbuffer = share_vectors(flatbuffer)
        if only is None and keep_float:
            self._check_kept_float(flatbuffer, keep_float)
        return flatbuffer

    def _check_kept_float(self, flatbuffer: bytes, keep_float: Sequence[str]) -> None:
        """Never hand back a file in which a layer asked to stay float is still integer."""
        graph = inspect(flatbuffer).subgraphs[0]
        rows = map_layers(flatbuffer, self.model)
        still_integer = []
        for name in keep_float:
            indices = [
                int(op.split(":")[0])
                for row in rows
                if name in row.layers or name in row.named
                for op in row.ops
            ]
            computing = [graph.ops[i] for i in indices if graph.ops[i].name not in _QDQ_OPS]
            if computing and not any(op.computes_in_float for op in computing):
                still_integer.append(name)
        if not still_integer:
            return
        why = (
            "It is a quantization-aware model: its fake-quant ops fix every range, and TF's "
            "quantizer quantizes those ops whatever the denylist says. Leave the layer out of "
            "QAT instead (do not annotate it, tfcompress.quantization.quantize_annotate_layer), "
            "or convert the float model with keep_float."
            if self.quantization_aware
            else "TF's quantizer did not leave them float."
        )
        raise ConversionError(
            f"keep_float={list(keep_float)}: the ops of {still_integer} in '{self.model.name}' are "
            f"still integer in the file. {why}"
        )


def check_layer_names(
    model: Any, names: Sequence[str], rows: Sequence[LayerOps], argument: str = "keep_float"
) -> None:
    """Raise a `ConversionError` naming each unknown layer and listing the model's layers.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.tflite.selective import check_layer_names
        >>> try:
        ...     check_layer_names(build_digits_cnn(), ["conv9"], [])
        ... except Exception as error:
        ...     print(str(error)[:48])
        keep_float names layers that 'digits_cnn' does n
    """
    if isinstance(names, str):
        raise ConversionError(
            f"{argument} takes a list of layer names, got the string {names!r}: "
            f"write {argument}=[{names!r}]."
        )
    valid = [layer.name for layer in top_level_layers(model)]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConversionError(
            f"{argument} names layers that '{model.name}' does not have: {unknown}. Its layers "
            f"are: {', '.join(valid)}."
        )
    placed = {name for row in rows for name in [*row.layers, *row.named]}
    missing = [name for name in names if rows and name not in placed]
    if missing:
        raise ConversionError(
            f"{argument}: the layers {missing} of '{model.name}' leave no op in the converted "
            f"file (removed or constant-folded by the converter), so there is nothing to "
            f"change. Layers with ops: {', '.join(sorted(placed))}."
        )


def check_keep_float_mode(mode: str) -> None:
    """`keep_float` needs the MLIR int8 quantizer: modes int8 and edgetpu.

    Example:
        >>> from tfcompress.tflite.selective import check_keep_float_mode
        >>> check_keep_float_mode("int8")
    """
    if mode not in KEEP_FLOAT_MODES:
        raise ConversionError(
            f"keep_float needs mode='int8' or mode='edgetpu' (an integer file in which some "
            f"layers stay float); got mode={mode!r}. In 'float32', 'float16' and 'dynamic' every "
            "activation is float already; 'int16x8' uses TF's older quantizer, which cannot "
            "keep single layers float."
        )


def calibrated_model(
    calibrated_bytes: bytes, converter: Any, model: Any, mode: str, quantization_aware: bool
) -> CalibratedModel:
    """The `CalibratedModel` of a calibrate-only conversion by `converter` (its weight layout)."""
    check_keep_float_mode(mode)
    per_channel, per_channel_dense = compat.per_channel_flags(converter)
    return CalibratedModel(
        calibrated_bytes,
        model,
        mode,
        per_channel=per_channel,
        per_channel_dense=per_channel_dense,
        quantization_aware=quantization_aware,
    )


def quantize_keeping_float(calibrated: CalibratedModel, keep_float: Sequence[str]) -> bytes:
    """`convert`'s quantize stage with `keep_float`: the calibrated file with that denylist."""
    flatbuffer = calibrated.quantize(list(keep_float))
    if calibrated.mode == "edgetpu" and len(keep_float):
        _warn_edgetpu_cut(flatbuffer, list(keep_float))
    return flatbuffer


def _warn_edgetpu_cut(flatbuffer: bytes, keep_float: list[str]) -> None:
    report = edgetpu_report(flatbuffer)
    cpu = report.cpu_ops
    if not cpu:
        return
    first = cpu[0]
    warnings.warn(
        f"mode='edgetpu' with keep_float={keep_float}: the Edge TPU compiler cuts the graph at "
        f"op {first.index} ({first.name}: {first.reason}); it and the {len(cpu) - 1} ops after it "
        "run on the CPU. tfcompress.edgetpu_report(flatbuffer).summary() lists them.",
        stacklevel=4,
    )
