"""Selective precision: keep chosen Keras layers in float inside an otherwise integer file.

TF's converter calibrates a float file (every tensor gets its observed range) and then quantizes
it with MLIR. The quantizer takes a denylist of nodes (output tensor names): the ops it names
stay float and get `DEQUANTIZE` before and `QUANTIZE` after them, the rest is quantized as
usual. `tfcompress.convert(..., keep_float=[...])` calibrates once, maps the Keras layer names to
the ops that implement them (`tfcompress.ptq.layer_map`) and quantizes with that denylist; the
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

import numpy as np

from tfcompress.converter.errors import ConversionError
from tfcompress.ptq.layer_map import LayerOps, map_layers, top_level_layers

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

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.ptq.selective import calibrate
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
        from tensorflow.lite.python import convert as tf_convert

        from tfcompress.converter.flatbuffer import share_vectors
        from tfcompress.converter.requantize import fold_float_requantize

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
                flatbuffer = tf_convert.mlir_quantize(
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
        from tfcompress.converter.flatbuffer import inspect

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
        from tfcompress.quantization.export import is_quantization_aware

        why = (
            "It is a quantization-aware model: its fake-quant ops fix every range, and TF's "
            "quantizer quantizes those ops whatever the denylist says. Leave the layer out of "
            "QAT instead (do not annotate it, tfcompress.quantization.quantize_annotate_layer), "
            "or convert the float model with keep_float."
            if is_quantization_aware(self.model)
            else "TF's quantizer did not leave them float."
        )
        raise ConversionError(
            f"keep_float={list(keep_float)}: the ops of {still_integer} in '{self.model.name}' are "
            f"still integer in the file. {why}"
        )


def check_layer_names(model: Any, names: Sequence[str], rows: Sequence[LayerOps]) -> None:
    """Raise a `ConversionError` naming each unknown layer and listing the model's layers.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.ptq.selective import check_layer_names
        >>> try:
        ...     check_layer_names(build_digits_cnn(), ["conv9"], [])
        ... except Exception as error:
        ...     print(str(error)[:48])
        keep_float names layers that 'digits_cnn' does n
    """
    if isinstance(names, str):
        raise ConversionError(
            f"keep_float takes a list of layer names, got the string {names!r}: "
            f"write keep_float=[{names!r}]."
        )
    valid = [layer.name for layer in top_level_layers(model)]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConversionError(
            f"keep_float names layers that '{model.name}' does not have: {unknown}. Its layers "
            f"are: {', '.join(valid)}."
        )
    placed = {name for row in rows for name in [*row.layers, *row.named]}
    missing = [name for name in names if rows and name not in placed]
    if missing:
        raise ConversionError(
            f"keep_float: the layers {missing} of '{model.name}' leave no op in the converted "
            f"file (removed or constant-folded by the converter), so there is nothing to keep "
            f"float. Layers with ops: {', '.join(sorted(placed))}."
        )


def check_keep_float_mode(mode: str) -> None:
    """`keep_float` needs the MLIR int8 quantizer: modes int8 and edgetpu.

    Example:
        >>> from tfcompress.ptq.selective import check_keep_float_mode
        >>> check_keep_float_mode("int8")
    """
    if mode not in KEEP_FLOAT_MODES:
        raise ConversionError(
            f"keep_float needs mode='int8' or mode='edgetpu' (an integer file in which some "
            f"layers stay float); got mode={mode!r}. In 'float32', 'float16' and 'dynamic' every "
            "activation is float already; 'int16x8' uses TF's older quantizer, which cannot "
            "keep single layers float."
        )


class _CalibrationRequest(list):
    """A `keep_float` list that also asks `convert` to hand back its `CalibratedModel`."""

    calibrated: CalibratedModel | None = None


def quantize_for_convert(
    calibrated_bytes: bytes, converter: Any, model: Any, keep_float: Sequence[str], mode: str
) -> bytes:
    """`convert`'s last step with `keep_float`: quantize its calibrated file with the denylist."""
    check_keep_float_mode(mode)
    dense_attribute = "_experimental_disable_per_channel_quantization_for_dense_layers"
    calibrated = CalibratedModel(
        calibrated_bytes,
        model,
        mode,
        per_channel=not getattr(converter, "_experimental_disable_per_channel", False),
        per_channel_dense=not getattr(converter, dense_attribute, False),
    )
    if isinstance(keep_float, _CalibrationRequest):
        keep_float.calibrated = calibrated
    flatbuffer = calibrated.quantize(list(keep_float))
    if mode == "edgetpu" and len(keep_float):
        _warn_edgetpu_cut(flatbuffer, list(keep_float))
    return flatbuffer


def _warn_edgetpu_cut(flatbuffer: bytes, keep_float: list[str]) -> None:
    from tfcompress.converter.edgetpu import edgetpu_report

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


def calibrate(
    model: Any, mode: str = "int8", representative_data: Any = None, **convert_options: Any
) -> CalibratedModel:
    """Calibrate `model` once with `tfcompress.convert`'s preparation and return it unquantized.

    Args:
        model: a Keras 3 model or a `.keras` path (what `convert` takes).
        mode: `"int8"` or `"edgetpu"`.
        representative_data: calibration inputs, as for `convert`.
        **convert_options: other `convert` keywords (`num_samples`, `per_channel`, ...).

    Returns:
        A `CalibratedModel`; its `quantize(keep_float)` is the file that
        `convert(model, mode, representative_data, keep_float=keep_float)` returns.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.ptq.selective import calibrate
        >>> calibrated = calibrate(build_digits_cnn(), "int8", load_digits().x_train[:20])
        >>> [row.layer for row in calibrated.rows][:3]
        ['relu1', 'relu2', 'pool']
    """
    from tfcompress.converter.convert import convert

    check_keep_float_mode(mode)
    request = _CalibrationRequest()
    convert(model, mode, representative_data, keep_float=request, **convert_options)
    assert request.calibrated is not None
    return request.calibrated


@dataclass
class KeepFloatSuggestion:
    """What `suggest_keep_float` found: the layers to keep float and the accuracies it measured.

    Attributes:
        keep_float: the fewest layers found whose float keeps the accuracy drop within target.
        float_accuracy: the Keras model's accuracy on the data.
        int8_accuracy: the fully integer file's accuracy.
        accuracy: the accuracy of the file with `keep_float`.
        target_met: whether `float_accuracy - accuracy <= max_accuracy_drop`.
        trials: each evaluated set of float layers and its accuracy, in the order tried.
        flatbuffer: the file with `keep_float` (save it with `tfcompress.save_tflite`).
        max_accuracy_drop: the target it was asked for.

    Example:
        >>> from tfcompress.ptq.selective import KeepFloatSuggestion
        >>> s = KeepFloatSuggestion(["fc1"], 0.95, 0.80, 0.94, True, [], b"")
        >>> round(s.gap_recovered, 3)
        0.933
    """

    keep_float: list[str]
    float_accuracy: float
    int8_accuracy: float
    accuracy: float
    target_met: bool
    trials: list[dict[str, Any]]
    flatbuffer: bytes = field(repr=False, default=b"")
    max_accuracy_drop: float = 0.01

    @property
    def shortfall(self) -> float:
        """How much accuracy the best file still lacks to meet the target (0.0 when met)."""
        return max(0.0, self.float_accuracy - self.accuracy - self.max_accuracy_drop)

    @property
    def gap_recovered(self) -> float:
        """Share of the float-to-int8 accuracy gap that keeping the layers float recovers."""
        gap = self.float_accuracy - self.int8_accuracy
        return 1.0 if gap <= 0 else (self.accuracy - self.int8_accuracy) / gap

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes), for JSON."""
        return {
            "keep_float": self.keep_float,
            "float_accuracy": self.float_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "accuracy": self.accuracy,
            "target_met": self.target_met,
            "max_accuracy_drop": self.max_accuracy_drop,
            "shortfall": self.shortfall,
            "gap_recovered": self.gap_recovered,
            "trials": self.trials,
        }


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(predictions, axis=-1) == labels.reshape(-1)))


def suggest_keep_float(
    model: Any,
    data: Any,
    labels: np.ndarray | None = None,
    *,
    max_accuracy_drop: float = 0.01,
    mode: str = "int8",
    representative_data: Any = None,
    max_layers: int | None = None,
    report: Any = None,
    **convert_options: Any,
) -> KeepFloatSuggestion:
    """Pick the fewest layers to keep float so that the file's accuracy meets a target.

    The layers are tried greedily in the debugger's order (worst isolated impact on the model
    output first): each candidate set is quantized from one calibration and evaluated on
    LiteRT; once the target is met, layers that turn out unnecessary are dropped again.

    Args:
        model: a Keras 3 classifier (functional or Sequential) or a `.keras` path.
        data: evaluation inputs (an array, or a list of arrays for several inputs).
        labels: integer class labels of `data`. Without them the target is agreement with the
            Keras model's top-1 class (its own accuracy is then 1.0).
        max_accuracy_drop: the accuracy the file may lose against the Keras model (0.01 = 1 pp).
        mode: `"int8"` or `"edgetpu"`.
        representative_data: calibration inputs; `data` when not given.
        max_layers: try at most this many layers (default: all of them; 0: none).
        report: a `QuantizationDebugReport` of the same model and mode, to reuse its ranking.
        **convert_options: other `convert` keywords (`num_samples`, `per_channel`, ...).

    Returns:
        A `KeepFloatSuggestion`; when the target cannot be met, the best set found, with
        `target_met=False` (its `accuracy` says by how much it misses).

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.ptq.selective import suggest_keep_float
        >>> x = load_digits().x_test[:40]
        >>> s = suggest_keep_float(build_digits_cnn(), x, max_accuracy_drop=1.0)
        >>> s.keep_float, s.target_met
        ([], True)
    """
    from tfcompress.converter.runtime import run_tflite
    from tfcompress.ptq.debug import debug_quantization, input_arrays, keras_model_of

    model = keras_model_of(model, convert_options.get("custom_objects"))
    if not 0 <= max_accuracy_drop <= 1:
        raise ValueError(f"max_accuracy_drop is a fraction in [0, 1], got {max_accuracy_drop!r}.")
    x = input_arrays(model, data, _ALL_SAMPLES)
    reference = model.predict(x if len(x) > 1 else x[0], verbose=0, batch_size=256)
    if labels is None:
        labels = np.argmax(reference, axis=-1)
    labels = np.asarray(labels)
    if len(labels) != len(x[0]):
        raise ValueError(f"labels has {len(labels)} entries for {len(x[0])} samples of data.")
    float_accuracy = _accuracy(reference, labels)
    calibrated = calibrate(
        model, mode, data if representative_data is None else representative_data, **convert_options
    )
    feed = x if len(x) > 1 else x[0]

    def evaluate(keep: list[str]) -> tuple[float, bytes]:
        flatbuffer = calibrated.quantize(keep)
        return _accuracy(run_tflite(flatbuffer, feed), labels), flatbuffer

    int8_accuracy, flatbuffer = evaluate([])
    trials = [{"keep_float": [], "accuracy": int8_accuracy}]
    best = ([], int8_accuracy, flatbuffer)
    if max_layers is not None and max_layers < 0:
        raise ValueError(f"max_layers must be >= 0 or None, got {max_layers!r}.")
    if float_accuracy - int8_accuracy > max_accuracy_drop and max_layers != 0:
        if report is None:
            report = debug_quantization(
                model, data, mode, calibrated=calibrated, num_samples=len(x[0])
            )
        chosen: list[str] = []
        for row in report.layers[:max_layers]:
            chosen.append(row.layer)
            accuracy, flatbuffer = evaluate(chosen)
            trials.append({"keep_float": list(chosen), "accuracy": accuracy})
            if accuracy > best[1]:
                best = (list(chosen), accuracy, flatbuffer)
            if float_accuracy - accuracy <= max_accuracy_drop:
                best = (list(chosen), accuracy, flatbuffer)
                break
        if float_accuracy - best[1] <= max_accuracy_drop:
            best = _drop_unneeded(best, float_accuracy, max_accuracy_drop, evaluate, trials)
    keep, accuracy, flatbuffer = best
    return KeepFloatSuggestion(
        keep,
        float_accuracy,
        int8_accuracy,
        accuracy,
        float_accuracy - accuracy <= max_accuracy_drop,
        trials,
        flatbuffer,
        max_accuracy_drop,
    )


def _drop_unneeded(
    best: tuple[list[str], float, bytes],
    float_accuracy: float,
    max_drop: float,
    evaluate: Any,
    trials: list[dict[str, Any]],
) -> tuple[list[str], float, bytes]:
    """Greedy picks can overshoot: drop each layer (earliest pick first) the target can spare."""
    keep, accuracy, flatbuffer = best
    for name in list(keep[:-1]):
        fewer = [n for n in keep if n != name]
        fewer_accuracy, fewer_file = evaluate(fewer)
        trials.append({"keep_float": list(fewer), "accuracy": fewer_accuracy})
        if float_accuracy - fewer_accuracy <= max_drop:
            keep, accuracy, flatbuffer = fewer, fewer_accuracy, fewer_file
    return keep, accuracy, flatbuffer
