"""How closely a TFLite file computes what its Keras model computes, output by output.

Every output gets the same figures, whatever it is: the share of rows (pixels, for a dense map)
whose top-1 class is the same in both (`agreement`), the mean absolute error relative to the
spread of the Keras output (`relative_error`) and the signal-to-quantization-noise ratio
(`sqnr_db`). Which of them decides depends on the output's `kind`: "classes" (scores per class:
agreement) or "values" (a regression, an embedding, a single score: SQNR). Figures always name
the runtime that computed the file's outputs: LiteRT with XNNPACK (what phones run by default),
LiteRT's reference kernels, or TensorFlow Lite Micro.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from tfcompress.core.graph import producer_of
from tfcompress.tflite.flatbuffer import TFLiteSource, inspect, load_bytes
from tfcompress.tflite.runtime import run_tflite, xnnpack_takes_ops

__all__ = [
    "RUNTIMES",
    "ConvertedFile",
    "Fidelity",
    "FidelityThresholds",
    "OutputFidelity",
    "compare_outputs",
    "file_fidelity",
    "file_outputs",
    "keras_outputs",
    "kinds_of",
    "measure_fidelity",
    "output_kinds",
    "runtime_of",
    "sqnr_gain",
]

RUNTIMES = {
    "xnnpack": "LiteRT (XNNPACK)",
    "builtin": "LiteRT (builtin kernels, no XNNPACK)",
    "reference": "LiteRT (reference kernels)",
    "micro": "TensorFlow Lite Micro",
}
_CLASS_LOSSES = ("crossentropy", "hinge", "focal", "kl_divergence", "kld")
_VALUE_LOSSES = ("mean_squared", "mean_absolute", "mse", "mae", "huber", "log_cosh", "cosine")


@dataclass(frozen=True)
class FidelityThresholds:
    """The figures below which a converted file is reported as not matching its Keras model.

    Attributes:
        min_agreement: least share of rows with the same top-1 class, for class outputs.
        min_sqnr_db: least output SQNR in dB, for value outputs (20 dB: an error of 10 % of
            the output's RMS)...
        max_relative_error: ...or at most this mean error relative to the output's spread (its
            mean absolute deviation): a value output passes when either figure is met.
        ties_sqnr_db: a class output whose scores are this close to the model's (30 dB: 3 % of
            their RMS) passes whatever its agreement: the rows that differ are near-ties.
    """

    min_agreement: float = 0.98
    min_sqnr_db: float = 20.0
    max_relative_error: float = 0.1
    ties_sqnr_db: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}.")


@dataclass(frozen=True)
class OutputFidelity:
    """The figures of one output: the file against the Keras model on the same rows."""

    name: str
    kind: str  # "classes" or "values"
    rows: int
    agreement: float | None  # top-1 agreement (None for outputs of one value per row)
    relative_error: float  # mean |file - keras| / mean |keras - mean(keras)|
    sqnr_db: float
    flips: int = 0  # rows (pixels) whose top-1 class differs
    compared: int = 0  # top-1 decisions compared (rows, or pixels of a dense map)

    def passes(self, thresholds: FidelityThresholds) -> bool:
        """Whether the output's deciding figure reaches its threshold."""
        if self.kind == "classes" and self.agreement is not None:
            return (
                self.agreement >= thresholds.min_agreement
                or self.sqnr_db >= thresholds.ties_sqnr_db
            )
        return (
            self.sqnr_db >= thresholds.min_sqnr_db
            or self.relative_error <= thresholds.max_relative_error
        )

    def describe(self) -> str:
        """One line: the deciding figure first."""
        sqnr = "inf" if np.isinf(self.sqnr_db) else f"{self.sqnr_db:.1f}"
        if self.kind == "classes" and self.agreement is not None:
            return (
                f"'{self.name}': top-1 agreement {self.agreement:.3f} ({self.flips} of "
                f"{self.compared} differ), SQNR {sqnr} dB"
            )
        return (
            f"'{self.name}': SQNR {sqnr} dB, relative error {self.relative_error:.3f} "
            f"on {self.rows} rows"
        )


@dataclass(frozen=True)
class Fidelity:
    """How a TFLite file matches its Keras model: one `OutputFidelity` per output.

    Attributes:
        outputs: per output, in the file's order.
        rows: how many input rows were compared.
        runtime: the runtime that ran the file (a value of `RUNTIMES`).
        held_out: whether the rows were kept out of the calibration.
        thresholds: the thresholds `passed` was judged with.
    """

    outputs: tuple[OutputFidelity, ...]
    rows: int
    runtime: str
    held_out: bool
    thresholds: FidelityThresholds = field(default_factory=FidelityThresholds)

    @property
    def passed(self) -> bool:
        """Whether every output reaches its threshold."""
        return all(output.passes(self.thresholds) for output in self.outputs)

    @property
    def failing(self) -> list[OutputFidelity]:
        """The outputs below their threshold."""
        return [output for output in self.outputs if not output.passes(self.thresholds)]

    def summary(self) -> str:
        """The figures of every output, on which rows and which runtime."""
        rows = "held-out rows" if self.held_out else "calibration rows"
        lines = [f"{self.rows} {rows}, on {self.runtime}:"]
        lines += [f"  {output.describe()}" for output in self.outputs]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "runtime": self.runtime,
            "held_out": self.held_out,
            "passed": self.passed,
            "thresholds": asdict(self.thresholds),
            "outputs": [asdict(output) for output in self.outputs],
        }


def _as_list(values: Any) -> list[np.ndarray]:
    if isinstance(values, dict):
        return [np.asarray(values[key]) for key in sorted(values)]
    if isinstance(values, list | tuple):
        return [np.asarray(value) for value in values]
    return [np.asarray(values)]


def keras_outputs(model: Any, x: Sequence[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """The Keras model's outputs on `x` (one array per input), flattened as the file orders them.

    Dict outputs come in the order of their sorted keys, the order the file's outputs have.
    """
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(x[0]), batch_size):
        batch = [np.asarray(a[start : start + batch_size]) for a in x]
        values = model(batch[0] if len(batch) == 1 else batch, training=False)
        chunks.append([np.asarray(value, dtype=np.float32) for value in _as_list(values)])
    return [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]


def runtime_of(flatbuffer: TFLiteSource, runtime: str) -> str:
    """The LiteRT runtime that really runs `flatbuffer` when `runtime` is asked for: "builtin"
    for "xnnpack" when XNNPACK takes none of the file's ops (an int16x8 file), so the figures
    name the kernels that computed them; `runtime` otherwise."""
    if runtime == "xnnpack" and not xnnpack_takes_ops(flatbuffer):
        return "builtin"
    return runtime


def file_outputs(
    flatbuffer: TFLiteSource, x: Sequence[np.ndarray], runtime: str = "xnnpack"
) -> list[np.ndarray]:
    """The file's dequantized outputs on `x`, on LiteRT: with XNNPACK, its optimized builtin
    kernels or its reference kernels."""
    if runtime not in ("xnnpack", "builtin", "reference"):
        raise ValueError(
            f"runtime={runtime!r}: file_outputs runs LiteRT ('xnnpack', 'builtin' or "
            "'reference'); TensorFlow Lite Micro runs through tfcompress.micro."
        )
    outputs = run_tflite(
        flatbuffer,
        list(x),
        builtin_only=runtime == "builtin",
        reference=runtime == "reference",
    )
    return outputs if isinstance(outputs, list) else [outputs]


def output_kinds(model: Any) -> list[str]:
    """'classes' or 'values' for each output of a Keras model, in the file's order.

    An output is "values" when it has one value per row (or per pixel) or when its loss in the
    model's compile settings is a regression loss; a classification loss makes it "classes".
    Without a loss, several values per row are "classes" (logits, softmax, sigmoid), except a
    linear output beside an output of probabilities (softmax or sigmoid): a detector's box or
    landmark coordinates next to its class scores are "values". Where the guess is wrong,
    compile the model with its losses, or tell the tools (`kinds=` of `auto_quantize` and
    `suggest_keep_float`).

    Example:
        >>> import keras
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, {"p": keras.layers.Dense(3, activation="softmax")(inputs),
        ...                              "v": keras.layers.Dense(1)(inputs),
        ...                              "box": keras.layers.Dense(4)(inputs)})
        >>> output_kinds(model)
        ['values', 'classes', 'values']
    """
    outputs = getattr(model, "outputs", None) or []
    structure = getattr(model, "output", None)
    names = sorted(structure) if isinstance(structure, dict) else [None] * len(outputs)
    tensors = [structure[name] for name in names] if isinstance(structure, dict) else outputs
    losses = _losses_by_output(model, names)
    activations = [_activation_of(tensor) for tensor in tensors]
    beside_probabilities = any(a in _PROBABILITIES for a in activations)
    kinds = []
    for tensor, loss, activation in zip(tensors, losses, activations, strict=True):
        width = tensor.shape[-1] if tensor.shape else 1
        if width == 1:
            kinds.append("values")
        elif loss and any(word in loss for word in _VALUE_LOSSES):
            kinds.append("values")
        elif loss and any(word in loss for word in _CLASS_LOSSES):
            kinds.append("classes")
        elif not loss and activation == "linear" and beside_probabilities:
            kinds.append("values")
        else:
            kinds.append("classes")
    return kinds


_PROBABILITIES = ("softmax", "sigmoid")


def _activation_of(tensor: Any) -> str | None:
    """The activation that made a symbolic output: "softmax", "sigmoid", "linear" (a Dense or
    convolution without one), another name, or None when the producer does not say."""
    layer = producer_of(tensor)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return str(getattr(activation, "__name__", activation)).lower()


def _losses_by_output(model: Any, names: list[str | None]) -> list[str | None]:
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        return [_loss_name(loss.get(name)) if name else None for name in names]
    if isinstance(loss, list | tuple):
        return [_loss_name(item) for item in loss] + [None] * (len(names) - len(loss))
    return [_loss_name(loss)] * len(names)


def _loss_name(loss: Any) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss.lower()
    return str(
        getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)
    ).lower()


def compare_outputs(
    reference: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    names: Sequence[str],
    kinds: Sequence[str],
    runtime: str = "xnnpack",
    held_out: bool = True,
    thresholds: FidelityThresholds | None = None,
) -> Fidelity:
    """Compare a file's outputs with the Keras model's on the same rows.

    Args:
        reference: the Keras model's outputs, one array per output, batch first.
        outputs: the file's dequantized outputs, in the same order.
        names: the outputs' names.
        kinds: "classes" or "values" per output (`output_kinds`).
        runtime: a key of `RUNTIMES`, the runtime that computed `outputs`.
        held_out: whether the rows were kept out of the calibration.
        thresholds: what `Fidelity.passed` is judged with; the defaults otherwise.

    Example:
        >>> import numpy as np
        >>> keras_out = np.array([[0.9, 0.1], [0.2, 0.8]])
        >>> fidelity = compare_outputs([keras_out], [keras_out + 0.01], ["probs"], ["classes"])
        >>> fidelity.outputs[0].agreement, fidelity.passed
        (1.0, True)
    """
    if not (len(reference) == len(outputs) == len(names) == len(kinds)):
        raise ValueError(
            f"{len(reference)} Keras outputs, {len(outputs)} file outputs, {len(names)} names "
            f"and {len(kinds)} kinds: the file and the model do not have the same outputs."
        )
    figures = []
    for ref, out, name, kind in zip(reference, outputs, names, kinds, strict=True):
        ref = np.asarray(ref, np.float64)
        out = np.asarray(out, np.float64).reshape(ref.shape)
        figures.append(_figures(ref, out, name, kind))
    rows = len(reference[0]) if reference else 0
    return Fidelity(
        tuple(figures), rows, RUNTIMES[runtime], held_out, thresholds or FidelityThresholds()
    )


def _figures(ref: np.ndarray, out: np.ndarray, name: str, kind: str) -> OutputFidelity:
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        sqnr = float("inf")
    else:
        sqnr = 10 * np.log10(signal / noise) if signal > 0 else float("-inf")
    spread = float(np.mean(np.abs(ref - ref.mean())))
    error = float(np.mean(np.abs(ref - out)))
    relative = error / spread if spread > 0 else (0.0 if error == 0 else float("inf"))
    agreement, flips, compared = None, 0, 0
    if ref.ndim > 1 and ref.shape[-1] > 1:
        same = ref.argmax(axis=-1) == out.argmax(axis=-1)
        agreement, flips, compared = float(same.mean()), int(same.size - same.sum()), same.size
    return OutputFidelity(name, kind, len(ref), agreement, relative, float(sqnr), flips, compared)


def sqnr_gain(
    reference: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    *,
    confidence: float = 0.9,
    resamples: int = 2000,
) -> tuple[float, float]:
    """How many dB of SQNR `outputs` gain over `baseline` against the same `reference`, and the
    lower bound of that gain at `confidence`.

    The gain is the mean over the outputs of `SQNR(outputs) - SQNR(baseline)`, on all the rows
    (for one output: `10 log10(baseline noise / noise)`). Its bound comes from a paired
    bootstrap: the rows are drawn with replacement `resamples` times (with a fixed seed, so the
    answer is deterministic), both files are scored on the same draw, and the bound is the
    `1 - confidence` quantile of the gains. A positive bound says the rows confirm the gain; a
    gain that rests on a few rows gets a bound below zero.

    Args:
        reference: the Keras model's outputs, one array per output, batch first.
        outputs: one file's outputs on the same rows, in the same order.
        baseline: the other file's outputs.
        confidence: the share of resamples on which the gain must be at least the bound.
        resamples: how many times the rows are drawn.

    Returns:
        `(gain in dB, its lower bound in dB)`.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ref = rng.normal(size=(64, 4))
        >>> noise = rng.normal(size=(64, 4))
        >>> gain, low = sqnr_gain([ref], [ref + 0.01 * noise], [ref + 0.1 * noise])
        >>> round(gain, 1), low > 0
        (20.0, True)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}.")
    rows = len(reference[0])
    draws = np.random.default_rng(0).integers(0, rows, size=(resamples, rows))
    point, sampled = 0.0, np.zeros(resamples)
    for ref, out, base in zip(reference, outputs, baseline, strict=True):
        ref = np.asarray(ref, np.float64).reshape(rows, -1)
        noise = ((ref - np.asarray(out, np.float64).reshape(ref.shape)) ** 2).sum(axis=1)
        noise_before = ((ref - np.asarray(base, np.float64).reshape(ref.shape)) ** 2).sum(axis=1)
        tiny = 1e-12 * float((ref**2).sum()) + 1e-30  # both exact: no gain, not infinity
        point += 10 * np.log10((noise_before.sum() + tiny) / (noise.sum() + tiny))
        sampled += 10 * np.log10(
            (noise_before[draws].sum(axis=1) + tiny) / (noise[draws].sum(axis=1) + tiny)
        )
    count = len(reference)
    return float(point / count), float(np.quantile(sampled / count, 1 - confidence))


def measure_fidelity(
    flatbuffer: TFLiteSource,
    model: Any,
    x: np.ndarray | Sequence[np.ndarray],
    runtime: str = "xnnpack",
    held_out: bool = True,
    thresholds: FidelityThresholds | None = None,
    kinds_from: Any = None,
    outputs_of: Any = None,
) -> Fidelity:
    """Run a Keras model and its TFLite file on the same inputs and compare every output.

    Args:
        flatbuffer: the `.tflite` bytes or path.
        model: the Keras model the file was converted from.
        x: inputs as `model.predict` takes them (an array, or a list of arrays).
        runtime: "xnnpack" (LiteRT's default CPU path; a file XNNPACK takes no op of, such as
            an int16x8 file, runs on the builtin kernels and is reported so), "builtin" (its
            optimized builtin kernels) or "reference" (its reference kernels, which TFLM's
            kernels follow).
        held_out: whether `x` was kept out of the calibration (reported, not checked).
        thresholds: what `passed` is judged with.
        kinds_from: the Keras model whose outputs and compile settings say what each output
            is (`output_kinds`), when `model` is another callable computing its outputs (the
            graph TF's converter traced); `model` itself by default.
        outputs_of: computes the file's dequantized outputs, `outputs_of(bytes, arrays)`, on
            a runtime this module does not run (TensorFlow Lite Micro: `runtime="micro"` with
            `tfcompress.micro.report.run_on_tflm`); LiteRT's `runtime` when None.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> split = load_digits()
        >>> model = build_digits_cnn(width=4)
        >>> flatbuffer = tfc.convert(model, "int8", split.x_train[:100])
        >>> fidelity = measure_fidelity(flatbuffer, model, split.x_test[:50])
        >>> fidelity.runtime, fidelity.rows
        ('LiteRT (XNNPACK)', 50)
    """
    arrays = list(x) if isinstance(x, list | tuple) else [x]
    reference = keras_outputs(model, arrays)
    kinds = kinds_of(model if kinds_from is None else kinds_from, reference)
    fidelity, _ = file_fidelity(
        flatbuffer, reference, arrays, kinds, runtime, held_out, thresholds, outputs_of
    )
    return fidelity


def kinds_of(model: Any, reference: Sequence[np.ndarray]) -> list[str]:
    """`output_kinds(model)`, or by the shape of its outputs `reference` when the model has no
    graph to read (a subclassed model): several values per row are classes."""
    kinds = output_kinds(model)
    if len(kinds) != len(reference):
        kinds = ["classes" if r.ndim > 1 and r.shape[-1] > 1 else "values" for r in reference]
    return kinds


def file_fidelity(
    flatbuffer: TFLiteSource,
    reference: Sequence[np.ndarray],
    x: Sequence[np.ndarray],
    kinds: Sequence[str],
    runtime: str = "xnnpack",
    held_out: bool = True,
    thresholds: FidelityThresholds | None = None,
    outputs_of: Any = None,
) -> tuple[Fidelity, list[np.ndarray]]:
    """Run a file on `x` and compare it with the Keras outputs `reference` already computed on
    the same rows: its `Fidelity` and its outputs (arguments as for `measure_fidelity`)."""
    if outputs_of is not None:
        outputs = list(outputs_of(load_bytes(flatbuffer)[0], list(x)))
    else:
        runtime = runtime_of(flatbuffer, runtime)
        outputs = file_outputs(flatbuffer, x, runtime)
    names = inspect(flatbuffer).output_names
    if len(names) != len(outputs):
        names = [f"output_{i}" for i in range(len(outputs))]
    fidelity = compare_outputs(reference, outputs, names, kinds, runtime, held_out, thresholds)
    return fidelity, outputs


class ConvertedFile(bytes):
    """The bytes of a converted file, with the figures of the check made on them.

    It is `bytes` in every way (write it, hash it, compare it); `fidelity` is a `Fidelity`, or
    `None` where the file was not checked (a float mode, or no data to check on).

    Example:
        >>> converted = ConvertedFile(b"TFL3", None)
        >>> converted == b"TFL3", converted.fidelity is None
        (True, True)
    """

    fidelity: Fidelity | None

    def __new__(cls, data: bytes, fidelity: Fidelity | None = None) -> ConvertedFile:
        converted = super().__new__(cls, data)
        converted.fidelity = fidelity
        return converted

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConvertedFile, (bytes(self), self.fidelity))
