"""Per-Keras-layer quantization debugger: which layer makes the integer file lose accuracy.

`debug_quantization` runs the Keras model and its integer file on the same samples and
compares, for every Keras layer whose output the file holds, the two outputs:

* **accumulated** error: the layer's output in the integer file against the Keras model's.
  It holds the error of every integer layer before it, so it grows along the network.
* **isolated** error: the same output in a file where *only this layer* is integer and every
  other op stays float. The calibrated file is quantized again with every other layer on the
  quantizer's denylist (`tfcompress.tflite.selective`), so the layer reads float inputs that are
  quantized with its own calibrated input scale, exactly as in the real file; what is measured
  is the error of quantizing that layer alone (its input, weights and output). Its effect on the
  model's output in that file (`output_sqnr_db`) ranks the layers: it is the error that keeping
  this layer float would remove.

TFLite's `QuantizationDebugger` is the prior art: it reports per TFLite tensor and compares
each quantized op with a float op fed the same dequantized input. Here the rows are Keras layers
(tensor names map back to layers, `tfcompress.tflite.layer_map`), and isolation is done by the
quantizer itself, so fused ops (Conv+BN+ReLU) are judged as the one op they become.

Every output of the model counts: a layer's isolated effect is the SQNR of the worst output in
the file where only it is integer. The per-layer figures come from LiteRT's reference kernels,
the only runtime that keeps every intermediate tensor readable; the model's outputs are
measured again on the runtime asked for (`runtime="xnnpack"` by default, what phones run), and
the report names both.

Every error is reported as SQNR in dB (`10 log10(sum(ref^2) / sum((out - ref)^2))`; higher is
better, capped at 120 dB for an exact match), relative RMSE (`rms(out - ref) / rms(ref)`) and
the mean cosine similarity of each sample's output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.core.graph import inputs_rescaled
from tfcompress.core.optional import require
from tfcompress.diagnose.scoring import check_runtime, output_names, run_file
from tfcompress.export import calibrate
from tfcompress.io import load_model
from tfcompress.quantization.strip import is_quantization_aware
from tfcompress.tflite.calibration import collect_samples
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.fidelity import (
    RUNTIMES,
    compare_outputs,
    keras_outputs,
    kinds_of,
    runtime_of,
)
from tfcompress.tflite.flatbuffer import load_bytes
from tfcompress.tflite.layer_map import map_layers
from tfcompress.tflite.runtime import _dequantize, _quantize
from tfcompress.tflite.selective import check_keep_float_mode
from tfcompress.tflite.source import load_source

SQNR_CAP_DB = 120.0


@dataclass
class LayerError:
    """The quantization error of one Keras layer's output.

    Attributes:
        layer: the Keras layer whose output is compared.
        class_name: its Keras class.
        fused: Keras layers computed by the same TFLite ops (folded BatchNorm, fused ReLU).
        ops: the TFLite ops (`"INDEX:NAME"`) that implement the layer in the integer file.
        sqnr_db: accumulated SQNR of the layer's output in the integer file.
        rel_rmse: accumulated relative RMSE.
        cosine: accumulated mean cosine similarity.
        isolated_sqnr_db: SQNR of the layer's output when only this layer is integer.
        isolated_rel_rmse: relative RMSE of the same.
        output_sqnr_db: SQNR of the model's output when only this layer is integer (the rank).

    Example:
        >>> from tfcompress.diagnose.debug import LayerError
        >>> row = LayerError("fc1", "Dense", [], ["5:FULLY_CONNECTED"], 30.0, 0.03, 0.99)
        >>> row.propagated_db is None
        True
    """

    layer: str
    class_name: str
    fused: list[str]
    ops: list[str]
    sqnr_db: float | None
    rel_rmse: float | None
    cosine: float | None
    isolated_sqnr_db: float | None = None
    isolated_rel_rmse: float | None = None
    output_sqnr_db: float | None = None

    @property
    def propagated_db(self) -> float | None:
        """How much worse (dB) the accumulated error is than the isolated one: inherited error."""
        if self.sqnr_db is None or self.isolated_sqnr_db is None:
            return None
        return self.isolated_sqnr_db - self.sqnr_db


@dataclass
class QuantizationDebugReport:
    """Per-layer errors of an integer file against its Keras model, worst first.

    Attributes:
        model_name: the Keras model's name.
        mode: the conversion mode of the file.
        num_samples: samples compared.
        output_sqnr_db: SQNR of the model's worst output in the integer file, on `runtime`.
        layers: one `LayerError` per Keras layer with a tensor in the file, worst first.
        isolated_samples: samples used for the isolated errors (0 when not computed).
        notes: what was skipped and why.
        outputs: per output of the model: its name, kind ("classes" or "values"), SQNR (dB)
            and top-1 agreement (classes) in the integer file, on `runtime`.
        runtime: the runtime of the model-output figures.
        layer_runtime: the runtime of the per-layer figures (LiteRT's reference kernels: the
            only one that keeps intermediate tensors readable).

    Example:
        >>> from tfcompress.diagnose.debug import LayerError, QuantizationDebugReport
        >>> row = LayerError("fc1", "Dense", [], ["5:FULLY_CONNECTED"], 30.0, 0.03, 0.99)
        >>> report = QuantizationDebugReport("m", "int8", 10, 25.0, [row])
        >>> QuantizationDebugReport.from_dict(report.to_dict()) == report
        True
    """

    model_name: str
    mode: str
    num_samples: int
    output_sqnr_db: float | None
    layers: list[LayerError]
    isolated_samples: int = 0
    notes: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    runtime: str = RUNTIMES["xnnpack"]
    layer_runtime: str = RUNTIMES["reference"]

    @property
    def ranking(self) -> list[str]:
        """Layer names, worst first."""
        return [row.layer for row in self.layers]

    def layer(self, name: str) -> LayerError:
        """The row of the layer `name` (also found by a layer fused into it)."""
        for row in self.layers:
            if name == row.layer or name in row.fused:
                return row
        raise KeyError(f"No row for layer {name!r}; rows: {', '.join(self.ranking)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready figures; `from_dict` reads them back."""
        return {
            "model_name": self.model_name,
            "mode": self.mode,
            "num_samples": self.num_samples,
            "output_sqnr_db": self.output_sqnr_db,
            "isolated_samples": self.isolated_samples,
            "notes": list(self.notes),
            "outputs": [dict(row) for row in self.outputs],
            "runtime": self.runtime,
            "layer_runtime": self.layer_runtime,
            "layers": [asdict(row) for row in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationDebugReport:
        """The report written by `to_dict` (e.g. read back from the CLI's JSON)."""
        fields = {k: v for k, v in data.items() if k != "layers"}
        return cls(**fields, layers=[LayerError(**row) for row in data["layers"]])

    def summary(self, limit: int | None = None) -> str:
        """A text table, worst layer first."""
        lines = [
            f"Quantization error of '{self.model_name}' ({self.mode}, {self.num_samples} samples; "
            f"worst model output SQNR {_fmt(self.output_sqnr_db)} dB on {self.runtime}; layers "
            f"on {self.layer_runtime})",
            f"{'layer (+ fused into it)':<36} {'class':<20} {'SQNR dB':>8} {'relRMSE':>8} {'cosine':>7} "
            f"{'isol dB':>8} {'out dB':>8}  ops",
        ]
        for row in self.layers[:limit]:
            name = row.layer + (f" (+{', '.join(row.fused)})" if row.fused else "")
            name = name if len(name) <= 36 else name[:35] + "~"
            lines.append(
                f"{name:<36} {row.class_name:<20.20} {_fmt(row.sqnr_db):>8} "
                f"{_fmt(row.rel_rmse, 3):>8} {_fmt(row.cosine, 4):>7} "
                f"{_fmt(row.isolated_sqnr_db):>8} {_fmt(row.output_sqnr_db):>8}  "
                f"{' '.join(row.ops)}"
            )
        lines.append(
            "SQNR: accumulated in the integer file; isol: this layer alone integer; out: worst "
            "model output SQNR with this layer alone integer (the ranking)."
        )
        for row in self.outputs:
            agreement = row.get("agreement") or 0.0
            lines.append(
                f"output '{row['name']}' ({row['kind']}): SQNR {_fmt(row['sqnr_db'])} dB"
                + ("" if row["kind"] != "classes" else f", top-1 agreement {agreement:.4f}")
                + f" on {self.runtime}"
            )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Write a PNG bar chart of accumulated and isolated SQNR per layer (network order)."""
        matplotlib = require("matplotlib", "QuantizationDebugReport.plot")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = sorted(self.layers, key=lambda row: _first_op(row))
        names = [row.layer for row in rows]
        positions = np.arange(len(rows))
        figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4))
        axis.bar(positions - 0.2, [_num(r.sqnr_db) for r in rows], 0.4, label="accumulated")
        axis.bar(positions + 0.2, [_num(r.isolated_sqnr_db) for r in rows], 0.4, label="isolated")
        axis.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
        axis.set_ylabel("SQNR of the layer output (dB, higher is better)")
        axis.set_title(f"{self.model_name}: {self.mode} quantization error per layer")
        axis.legend()
        figure.tight_layout()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=100)
        plt.close(figure)
        return target

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2))
        return target


def _first_op(row: LayerError) -> int:
    return min((int(op.split(":")[0]) for op in row.ops), default=0)


def _num(value: float | None) -> float:
    return float("nan") if value is None else value


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def errors(reference: np.ndarray, output: np.ndarray) -> tuple[float, float, float]:
    """SQNR (dB), relative RMSE and mean cosine similarity of `output` against `reference`.

    Example:
        >>> import numpy as np
        >>> from tfcompress.diagnose.debug import errors
        >>> ref = np.ones((2, 4), np.float32)
        >>> [round(v, 2) for v in errors(ref, ref * 1.1)]
        [20.0, 0.1, 1.0]
    """
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = output.reshape(len(output), -1).astype(np.float64)
    noise = float(np.sum((out - ref) ** 2))
    power = float(np.sum(ref**2))
    if noise == 0.0:
        sqnr = SQNR_CAP_DB
    elif power == 0.0:
        sqnr = -SQNR_CAP_DB
    else:
        sqnr = min(SQNR_CAP_DB, 10.0 * math.log10(power / noise))
    rel_rmse = math.sqrt(noise / power) if power > 0 else math.inf if noise else 0.0
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    dots = np.sum(ref * out, axis=1)
    both_zero = (norms == 0) & (np.linalg.norm(ref - out, axis=1) == 0)
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    return sqnr, rel_rmse, float(np.mean(cosine))


def keras_model_of(model: Any, custom_objects: dict | None = None) -> Any:
    """The Keras 3 model of `model` (a model object, or a `.keras`/`.h5` path), or a clear error.

    A path is read by `tfcompress.io.load_model` (a missing or damaged file raises its
    `ModelFileError`, naming the file and the fix).
    """
    import os

    if isinstance(model, str | os.PathLike):
        model = load_model(model, custom_objects=custom_objects, compile=False)
    if not compat.is_keras3_model(model) or not getattr(model, "inputs", None):
        raise ConversionError(
            f"The quantization debugger needs a Keras 3 functional or Sequential model with "
            f"inputs; got {type(model).__name__}. Build it with keras.Input, or load the .keras file."
        )
    return model


def input_arrays(model: Any, data: Any, num_samples: int) -> list[np.ndarray]:
    """Up to `num_samples` samples of `data`, checked against the model, one array per input."""

    specs = load_source(model, None, True, None).input_specs
    samples = collect_samples(data, specs, num_samples, model.name, inputs_rescaled(model))
    return [np.concatenate([sample[i] for sample in samples]) for i in range(len(specs))]


class _FileRunner:
    """Runs a file on LiteRT's builtin kernels and keeps every intermediate tensor readable."""

    def __init__(self, flatbuffer: bytes) -> None:

        self.interpreter = compat.litert_interpreter_class()(
            model_content=flatbuffer,
            experimental_op_resolver_type=compat.litert_op_resolver(True),
            experimental_preserve_all_tensors=True,
        )
        self.inputs = self.interpreter.get_input_details()
        self.dynamic = all(d["shape_signature"][0] == -1 for d in self.inputs)

    def run(self, x: list[np.ndarray], tensors: Sequence[int]) -> tuple[list, list[np.ndarray]]:
        """(dequantized `tensors`, dequantized outputs), each concatenated over `x`."""

        step = 64 if self.dynamic else int(self.inputs[0]["shape"][0])
        found: list[list[np.ndarray]] = [[] for _ in tensors]
        outputs: list[list[np.ndarray]] = []
        details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        for start in range(0, len(x[0]), step):
            batch = [a[start : start + step] for a in x]
            rows = len(batch[0])
            if self.dynamic:
                for detail in self.inputs:
                    self.interpreter.resize_tensor_input(
                        detail["index"], [rows, *detail["shape"][1:]]
                    )
            self.interpreter.allocate_tensors()
            for detail, array in zip(self.inputs, batch, strict=True):
                self.interpreter.set_tensor(detail["index"], _quantize(array, detail))
            self.interpreter.reset_all_variables()  # stateful kernels: see runtime._invoke
            self.interpreter.invoke()
            for slot, index in enumerate(tensors):
                value = self.interpreter.get_tensor(index)
                found[slot].append(_dequantize_tensor(value, details[index])[:rows])
            outputs.append(
                [
                    _dequantize(self.interpreter.get_tensor(d["index"]), d)[:rows]
                    for d in self.interpreter.get_output_details()
                ]
            )
        merged = [np.concatenate([batch[i] for batch in outputs]) for i in range(len(outputs[0]))]
        return [np.concatenate(parts) for parts in found], merged


def _dequantize_tensor(value: np.ndarray, detail: dict) -> np.ndarray:
    parameters = detail.get("quantization_parameters", {})
    scales = np.asarray(parameters.get("scales", []), np.float64)
    if not np.issubdtype(value.dtype, np.integer) or scales.size == 0:
        return value.astype(np.float32)
    zero_points = np.asarray(parameters.get("zero_points", [0]), np.float64)
    return ((value.astype(np.float64) - zero_points) * scales).astype(np.float32)


def _keras_outputs(model: Any, layers: list[str], x: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The Keras model's output of each named layer on `x` (one forward pass)."""
    import keras

    usable = []
    for name in layers:
        try:
            usable.append((name, model.get_layer(name).output))
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
    probe = keras.Model(model.inputs, [tensor for _, tensor in usable])
    values = probe.predict(x if len(x) > 1 else x[0], verbose=0, batch_size=256)
    if len(usable) == 1:
        values = [values]
    return {name: np.asarray(value) for (name, _), value in zip(usable, values, strict=True)}


def _compare(reference: np.ndarray | None, value: np.ndarray) -> tuple[Any, Any, Any]:
    if reference is None or reference.size != value.size:
        return None, None, None
    return errors(reference, value.reshape(reference.shape))


def debug_quantization(
    model: Any,
    data: Any,
    mode: str = "int8",
    *,
    tflite: Any = None,
    representative_data: Any = None,
    num_samples: int = 200,
    isolated: bool = True,
    isolated_samples: int = 64,
    calibrated: Any = None,
    custom_objects: dict | None = None,
    runtime: str = "xnnpack",
    **convert_options: Any,
) -> QuantizationDebugReport:
    """Compare a Keras model with its integer TFLite file, per Keras layer, worst layer first.

    Args:
        model: a Keras 3 functional or Sequential model (float, or quantization-aware from
            `tfcompress.quantize_model`) or a `.keras` path.
        data: the inputs to compare on (array, list of arrays, dataset or generator).
        mode: `"int8"` or `"edgetpu"`.
        tflite: an integer file already made from `model` (bytes or path). Without it the file
            is made here as `tfcompress.convert(model, mode, representative_data)` makes it.
        representative_data: calibration inputs; `data` when not given.
        num_samples: how many samples of `data` to compare.
        isolated: also measure each layer alone (one extra quantization and run per layer).
        isolated_samples: samples used for the isolated runs.
        calibrated: a `tfcompress.ptq.CalibratedModel` of `model` to reuse.
        custom_objects: custom classes needed to load a `.keras` file.
        runtime: what runs the file for the model-output figures: `"xnnpack"` (LiteRT with
            XNNPACK, the default: what phones run), `"reference"` (LiteRT's reference kernels)
            or `"micro"` (TensorFlow Lite Micro). The per-layer figures always come from
            LiteRT's reference kernels, which keep intermediate tensors readable.
        **convert_options: other `convert` keywords (`per_channel`, ...).

    Returns:
        A `QuantizationDebugReport`; `.summary()`, `.to_dict()`, `.plot(path)`.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.ptq import debug_quantization
        >>> x = load_digits().x_test[:16]
        >>> report = debug_quantization(build_digits_cnn(), x, num_samples=16, isolated_samples=8)
        >>> len(report.layers), report.layer("bn1").layer
        (7, 'relu1')
    """

    check_keep_float_mode(mode)
    check_runtime(runtime)
    keras_model = keras_model_of(model, custom_objects)
    notes: list[str] = []
    if tflite is not None:
        flatbuffer, _ = load_bytes(tflite)
        if calibrated is None and isolated:
            notes.append(
                "isolated errors come from a calibration made here on representative_data "
                "(or data), not from the calibration of the given file."
            )
    else:
        flatbuffer = None
    if calibrated is None and (flatbuffer is None or isolated):
        calibration = data if representative_data is None else representative_data
        calibrated = calibrate(keras_model, mode, calibration, **convert_options)
    if calibrated is not None:
        keras_model = calibrated.model  # what convert really converted (wrappers stripped)
    if flatbuffer is None:
        flatbuffer = calibrated.quantize([])
    x = input_arrays(keras_model, data, num_samples)
    rows = map_layers(flatbuffer, keras_model)
    if not rows:
        raise ConversionError(
            f"No op of the file could be mapped to a layer of '{keras_model.name}': was the file "
            "converted from this model?"
        )
    reference = _keras_outputs(keras_model, [row.reference or row.layer for row in rows], x)
    values, outputs = _FileRunner(flatbuffer).run(x, [row.tensor for row in rows])
    model_outputs = keras_outputs(keras_model, x)
    runtime = runtime_of(flatbuffer, runtime)  # XNNPACK takes no op of an int16x8 file
    if runtime != "reference":
        outputs = run_file(flatbuffer, x, runtime)
    per_output = _output_rows(keras_model, model_outputs, outputs, runtime)
    output_sqnr = min((row["sqnr_db"] for row in per_output), default=None)
    classes = {layer.name: type(layer).__name__ for layer in keras_model.layers}
    table = []
    for row, value in zip(rows, values, strict=True):
        sqnr, rmse, cosine = _compare(reference.get(row.reference or row.layer), value)
        table.append(
            LayerError(row.layer, classes[row.layer], row.fused, row.ops, sqnr, rmse, cosine)
        )
    used = 0
    if isolated and _is_quantization_aware(keras_model):
        isolated = False
        notes.append(
            "isolated errors not computed: a quantization-aware model's fake-quant ops fix every "
            "range, so TF's quantizer cannot leave its other layers float. Ranked by accumulated "
            "SQNR."
        )
    if isolated and calibrated is not None:
        used = min(isolated_samples, len(x[0]))
        _isolated_errors(calibrated, table, reference, model_outputs, x, used)
    elif not isolated:
        notes.append("isolated errors not computed (isolated=False): ranked by accumulated SQNR.")
    missing = [row.layer for row in table if row.sqnr_db is None]
    if missing:
        notes.append(f"no Keras output to compare for {missing} (shared layer or reshaped tensor).")
    table.sort(key=_rank_key)
    return QuantizationDebugReport(
        keras_model.name, mode, len(x[0]), output_sqnr, table, used, notes, per_output,
        RUNTIMES[runtime],
    )  # fmt: skip


def _output_rows(
    model: Any, reference: list[np.ndarray], outputs: list[np.ndarray], runtime: str
) -> list[dict[str, Any]]:
    """Name, kind, SQNR (dB, capped) and top-1 agreement of every model output in the file."""
    names = output_names(model)
    if len(names) != len(reference):
        names = [f"output_{i}" for i in range(len(reference))]
    fidelity = compare_outputs(reference, outputs, names, kinds_of(model, reference), runtime)
    return [
        {
            "name": row.name,
            "kind": row.kind,
            "sqnr_db": _compare(ref, out)[0],
            "agreement": row.agreement,
        }
        for row, ref, out in zip(fidelity.outputs, reference, outputs, strict=True)
    ]


def _worst_output_sqnr(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float | None:
    found = [_compare(ref, out)[0] for ref, out in zip(reference, outputs, strict=True)]
    found = [value for value in found if value is not None]
    return min(found, default=None)


def _is_quantization_aware(model: Any) -> bool:

    return bool(is_quantization_aware(model))


def _rank_key(row: LayerError) -> tuple[float, float]:
    primary = row.output_sqnr_db if row.output_sqnr_db is not None else row.sqnr_db
    return (math.inf if primary is None else primary, _num(row.sqnr_db))


def _isolated_errors(
    calibrated: Any,
    table: list[LayerError],
    reference: dict[str, np.ndarray],
    model_outputs: list[np.ndarray],
    x: list[np.ndarray],
    count: int,
) -> None:
    """Fill each row's isolated figures from a file where only that layer is integer."""
    sample = [a[:count] for a in x]
    for entry in table:
        alone = calibrated.quantize(only=[entry.layer])
        alone_rows = {row.layer: row for row in map_layers(alone, calibrated.model)}
        if entry.layer not in alone_rows:
            continue
        values, outputs = _FileRunner(alone).run(sample, [alone_rows[entry.layer].tensor])
        ref = reference.get(alone_rows[entry.layer].reference or entry.layer)
        sqnr, rmse, _ = _compare(None if ref is None else ref[:count], values[0])
        entry.isolated_sqnr_db, entry.isolated_rel_rmse = sqnr, rmse
        entry.output_sqnr_db = _worst_output_sqnr([r[:count] for r in model_outputs], outputs)
