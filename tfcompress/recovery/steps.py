"""`optimize_model`: the recovery steps in their fixed order, as `convert(..., optimize=...)` runs them.

A step is kept only when held-out rows confirm that it makes the file better. When the data has
rows to spare, some are held out (`split_held_out`: the rows after the ones calibration reads,
else the last quarter), never used to calibrate, equalize, round or correct; each data-driven
step's file is compared with the file without it on those rows, against the float model
(`tfcompress.tflite.fidelity`, on LiteRT with XNNPACK): its top-1 agreement for class outputs may
not be lower, and its SQNR gain must hold on `CONFIDENCE` of the bootstrap resamples of the rows
(`fidelity.sqnr_gain`). A step the rows do not confirm is dropped with a warning giving both
files' figures. Every step works on the BatchNorm-folded model, as TF's converter folds it; the
final file calibrates on the rows plain PTQ calibrates on, held-out rows included once the steps
are chosen.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.core.batchnorm import fold_batch_norms
from tfcompress.core.graph import inputs_rescaled
from tfcompress.core.results import Compressed
from tfcompress.io import load_model
from tfcompress.recovery.bias import bias_correction
from tfcompress.recovery.equalization import equalize
from tfcompress.recovery.rounding import adaround
from tfcompress.recovery.weights import SEPARABLE_LAYERS, split_separable, unhandled_layers
from tfcompress.tflite.calibration import collect_samples
from tfcompress.tflite.convert import plain_converter, run_converter
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.fidelity import (
    Fidelity,
    file_fidelity,
    keras_outputs,
    kinds_of,
    sqnr_gain,
)
from tfcompress.tflite.four_bit import four_bit_levels
from tfcompress.tflite.isolation import IsolatedCrash
from tfcompress.tflite.source import TraceableModel, load_source

#: the steps, in the order they always run: folding first (the others need folded kernels),
#: equalization next (it rescales kernels), AdaRound (it fixes the kernels' integers), bias
#: correction last (it corrects the mean shift of the final integers, AdaRound's included)
STEPS = ("fold_bn", "equalize", "adaround", "bias_correction")
#: the steps checked against the file without them (folding BatchNorm is exact, and the
#: converter folds it anyway)
CHECKED_STEPS = ("equalize", "adaround", "bias_correction")
#: the modes whose files the steps recover: in int16x8 files the weights' rounding is most of
#: the error, which is what AdaRound and bias correction reduce
INTEGER_MODES = ("int8", "int16x8", "edgetpu")
#: share of the rows held out when the data has no rows beyond those calibration reads
HELD_OUT_SHARE = 0.25
#: fewest held-out rows worth a verdict; with fewer the steps run unchecked, and a warning says so
MIN_HELD_OUT = 32
#: most held-out rows used
MAX_HELD_OUT = 1000
#: the share of bootstrap resamples of the held-out rows on which a step's SQNR gain must hold
CONFIDENCE = 0.9
_RUNTIME = "xnnpack"
#: a stage that rewrites a traceable model for a mode (`integer_friendly_source`)
Rewrite = Callable[[TraceableModel, str], TraceableModel]
_PACKAGE = str(Path(__file__).resolve().parents[1])


def parse_steps(optimize: Any) -> dict[str, dict[str, Any]]:
    """`{step: options}` from a list of names or `(name, options)` pairs, in `STEPS` order.

    Example:
        >>> list(parse_steps(["bias_correction", ("equalize", {"relu6": "replace"})]))
        ['equalize', 'bias_correction']
    """
    if isinstance(optimize, str):
        optimize = [optimize]
    if isinstance(optimize, dict):
        optimize = list(optimize.items())
    if not isinstance(optimize, Sequence):
        raise ValueError(
            f"optimize must be a list of step names from {list(STEPS)}; got {optimize!r}."
        )
    chosen: dict[str, dict[str, Any]] = {}
    for entry in optimize:
        name, options = (entry, {}) if isinstance(entry, str) else tuple(entry)
        if name not in STEPS:
            raise ValueError(
                f"optimize: unknown step {name!r}; the valid steps are {', '.join(STEPS)} "
                "(they always run in that order)."
            )
        if not isinstance(options, dict):
            raise ValueError(f"optimize: the options of {name!r} must be a dict; got {options!r}.")
        chosen[name] = dict(options)
    return {name: chosen[name] for name in STEPS if name in chosen}


@dataclass(frozen=True)
class StepCheck:
    """One step measured against the file without it, on held-out rows.

    Attributes:
        step: the step's name.
        kept: whether the step stayed (the held-out rows confirmed it: `confirmed_better`).
        with_step: the figures of the file with the step (`Fidelity.summary`'s lines).
        without_step: the figures of the file without it.
        score_with: (top-1 agreement of the class outputs, mean SQNR in dB) with the step.
        score_without: the same without it.
        gain_db: the step's SQNR gain, mean over the outputs (`fidelity.sqnr_gain`).
        gain_low_db: its lower bound on `CONFIDENCE` of the resamples of the rows.
    """

    step: str
    kept: bool
    with_step: str
    without_step: str
    score_with: tuple[float, float]
    score_without: tuple[float, float]
    gain_db: float = 0.0
    gain_low_db: float = 0.0


@dataclass
class RecoveryReport:
    """What `optimize_model` ran, checked and dropped.

    Attributes:
        steps: the steps asked for, in `STEPS` order.
        kept: the steps the returned model has.
        checks: one `StepCheck` per data-driven step measured on held-out rows.
        held_out_rows: how many rows were held out (0: nothing was checked).
        runtime: the runtime that ran the files.
        plain: the figures of the plain PTQ file (no step).
    """

    steps: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    checks: list[StepCheck] = field(default_factory=list)
    held_out_rows: int = 0
    runtime: str = ""
    plain: str = ""

    @property
    def dropped(self) -> list[str]:
        """The steps the held-out rows did not confirm, and left out."""
        return [check.step for check in self.checks if not check.kept]


def split_held_out(rows: np.ndarray, calibration_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`(rows to calibrate and optimize with, held-out rows or None)`: the documented rule.

    The rows after the first `calibration_rows` (those calibration reads) are held out when
    there are at least `MIN_HELD_OUT` of them, so the calibration rows stay what they were;
    otherwise the last `HELD_OUT_SHARE` of the rows, when that is at least `MIN_HELD_OUT`;
    otherwise nothing is held out. At most `MAX_HELD_OUT` rows are held out.

    Example:
        >>> import numpy as np
        >>> calibration, held_out = split_held_out(np.zeros((300, 2)), 200)
        >>> len(calibration), len(held_out)
        (200, 100)
        >>> calibration, held_out = split_held_out(np.zeros((200, 2)), 200)
        >>> len(calibration), len(held_out)
        (150, 50)
        >>> calibration, held_out = split_held_out(np.zeros((64, 2)), 50)
        >>> len(calibration), held_out is None
        (50, True)
    """
    spare = len(rows) - calibration_rows
    if spare >= MIN_HELD_OUT:
        return rows[:calibration_rows], rows[calibration_rows:][:MAX_HELD_OUT]
    share = int(len(rows) * HELD_OUT_SHARE)
    if share >= MIN_HELD_OUT:
        cut = len(rows) - min(share, MAX_HELD_OUT)
        return rows[: min(cut, calibration_rows)], rows[cut:]
    return rows[:calibration_rows], None


def int8_file(
    model: keras.Model,
    data: np.ndarray,
    *,
    mode: str = "int8",
    per_channel: bool = True,
    num_samples: int = 200,
    four_bit: bool = False,
    rewrite: Rewrite | None = None,
) -> bytes:
    """The plain PTQ file of `model` as the check measures it: TF's converter, calibrated on `data`.

    `rewrite` is the stage that replaces layers without an integer kernel in `mode` (`convert`
    passes its own, so a PReLU net is checked in int16x8 as it is converted).

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> len(int8_file(model, np.ones((8, 4), "float32"))) > 0
        True
    """
    source = load_source(model)
    if rewrite is not None:
        source = rewrite(source, mode)
    converter = plain_converter(
        source, mode, data, num_samples=num_samples, per_channel=per_channel
    )
    flatbuffer = run_converter(converter, model.name, mode)
    if four_bit:  # AdaRound's 4-bit grid, as convert stores it
        flatbuffer = four_bit_levels(flatbuffer, require=True).flatbuffer
    return flatbuffer


def _score(fidelity: Fidelity) -> tuple[float, float]:
    """(mean top-1 agreement of the class outputs, mean SQNR in dB)."""
    agreements = [
        o.agreement for o in fidelity.outputs if o.kind == "classes" and o.agreement is not None
    ]
    agreement = float(np.mean(agreements)) if agreements else 0.0
    return agreement, float(np.mean([o.sqnr_db for o in fidelity.outputs]))


def confirmed_better(agreement_with: float, agreement_without: float, gain_low_db: float) -> bool:
    """Whether held-out rows confirm a step: the file with it agrees on no fewer rows (class
    outputs) and its SQNR gain is above zero on `CONFIDENCE` of the resamples of the rows.

    A few dozen rows move agreement by single rows and SQNR by tenths of a dB, so a step that
    wins by that little is as likely to lose on other rows: only a gain the rows confirm stays.

    Example:
        >>> confirmed_better(0.975, 0.971, gain_low_db=-2.7)  # one more row agrees, dB lost
        False
        >>> confirmed_better(1.0, 1.0, gain_low_db=0.4)
        True
    """
    return agreement_with >= agreement_without and gain_low_db > 0


def _figures(fidelity: Fidelity) -> str:
    return "; ".join(output.describe() for output in fidelity.outputs)


def optimize_model(
    model: keras.Model,
    optimize: Any,
    data: Any = None,
    *,
    per_channel: bool = True,
    bits: int = 8,
    layer_bits: dict[str, int] | None = None,
    check: bool = True,
    held_out: Any = None,
    return_report: bool = False,
) -> keras.Model | Compressed:
    """Apply the chosen recovery steps to `model` in the fixed order `STEPS`; return the new model.

    With `check` and data of at least `MIN_HELD_OUT / HELD_OUT_SHARE` rows, the last quarter of
    the rows is held out (`split_held_out`) and every data-driven step (`CHECKED_STEPS`) is kept
    only if those rows confirm that the int8 file of the model with it is better than the file
    without it (`confirmed_better`: no lower top-1 agreement with `model` for class outputs, an
    SQNR gain on `CONFIDENCE` of the resamples of the rows; on LiteRT with XNNPACK). A dropped
    step is named in a warning with both files' figures. With fewer rows, equalization (which
    fits nothing on the rows) is judged on the calibration rows, and the steps that fit the rows
    run unchecked, with a warning.

    Args:
        model: a functional or Sequential Keras model.
        optimize: step names (`"fold_bn"`, `"equalize"`, `"adaround"`, `"bias_correction"`), or
            `(name, options)` pairs whose options go to that step's function, e.g.
            `("equalize", {"relu6": "replace"})`, `("adaround", {"iterations": 500})`.
        data: calibration inputs (needed by `adaround` and `bias_correction`, and by the check).
        per_channel: the weight grid of the file (AdaRound and bias correction emulate it).
        bits: weight width of the file (8, or 4 for INT4 weights).
        layer_bits: `{layer name: 4 or 8}` for the layers whose width differs from `bits`
            (AdaRound and bias correction round and emulate those layers at that width).
        check: measure each step on held-out rows and drop those the rows do not confirm.
        held_out: the rows to check on (a validation set): then all of `data` calibrates and
            optimizes. Default: the last quarter of `data`, as above.
        return_report: return a `Compressed` result: `.model` and `.report`, a `RecoveryReport`
            (steps kept, dropped, and their figures).

    Returns:
        The float model to convert (and the report): `model` itself when the held-out rows
        confirm none of the data-driven steps asked for.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> optimized = optimize_model(model, ["fold_bn", "bias_correction"], np.ones((8, 4)))
        >>> optimized.output_shape
        (None, 2)
    """
    steps = parse_steps(optimize)
    rows = None if data is None else as_rows(data, model)
    if not check or rows is None:
        held_out = None
    elif held_out is not None:
        data, held_out = rows, as_rows(held_out, model)
    else:
        data, held_out = split_held_out(rows, len(rows))
    grid = {"bits": bits, "per_channel": per_channel, "layer_bits": layer_bits}
    make_file = None
    if check and rows is not None:
        four_bit = "adaround" in steps and (bits == 4 or layer_bits is not None)

        def make_file(candidate: keras.Model) -> bytes:
            return int8_file(
                candidate, data, per_channel=per_channel, num_samples=len(data), four_bit=four_bit
            )

    result = _run_steps(model, steps, data, held_out, grid, make_file, check)
    return result if return_report else result.model


def as_rows(data: Any, model: keras.Model) -> np.ndarray | None:
    """`data` as one float32 array of single-input rows, or None when it is not that."""
    if len(model.inputs) != 1:
        return None
    try:
        rows = np.asarray(data[0] if isinstance(data, list | tuple) and len(data) == 1 else data)
    except (TypeError, ValueError):
        return None
    return rows if rows.dtype != object and rows.ndim >= 1 else None


def _run_steps(
    model: keras.Model,
    steps: dict[str, dict[str, Any]],
    data: Any,
    held_out: np.ndarray | None,
    grid: dict[str, Any],
    make_file: Callable[[keras.Model], bytes] | None,
    check: bool,
) -> Compressed:
    """The steps in order; with `held_out` and `make_file`, each checked against the file without it."""
    needs_data = [name for name in ("adaround", "bias_correction") if name in steps]
    if needs_data and data is None:
        raise ValueError(
            f"optimize: {', '.join(needs_data)} need calibration data; pass "
            "representative_data=x_train[:200]."
        )
    report = RecoveryReport(steps=list(steps))
    checked = [name for name in steps if name in CHECKED_STEPS]
    # equalization fits nothing on the rows, so without held-out rows the calibration rows judge
    # it fairly; the steps that fit the rows need rows they did not see
    in_sample = (
        check
        and held_out is None
        and make_file is not None
        and data is not None
        and "equalize" in steps
    )
    unchecked = [name for name in checked if not (in_sample and name == "equalize")]
    if check and unchecked and data is not None and (held_out is None or make_file is None):
        _warn(
            f"optimize: {', '.join(repr(n) for n in unchecked)} not checked against plain PTQ: "
            f"the data leaves fewer than {MIN_HELD_OUT} rows to hold out (pass at least "
            f"{int(MIN_HELD_OUT / HELD_OUT_SHARE)} rows, or more rows than num_samples)."
        )
    four_bit = "adaround" in steps and (grid["bits"] == 4 or grid["layer_bits"] is not None)
    reference, model = model, split_separable(model)  # the file runs separable convs as two ops
    grid = {**grid, "layer_bits": _split_names(reference, grid["layer_bits"])}
    _warn_unhandled(model, [name for name in ("adaround", "bias_correction") if name in steps])
    # TF's converter folds BatchNorm into the kernels it quantizes, so every step works on the
    # folded kernels, asked for or not: those are the integers to round and correct, and the
    # file's tensors keep short names (the function is the same)
    report.kept += ["fold_bn"] if steps else []
    unrounded = fold_batch_norms(model) if steps else model
    rounded: keras.Model | None = None  # the model whose kernels lie on the grid, if any

    def nearest(candidate: keras.Model) -> keras.Model:
        """A 4-bit file needs every kernel on the 4-bit grid: round to nearest."""
        if not four_bit:
            return candidate
        return adaround(candidate, data, **grid, iterations=0)

    judge = None
    if make_file is not None and held_out is not None:
        judge = _Judge(reference, held_out, make_file, "held-out rows")
    elif in_sample:
        judge = _Judge(reference, data, make_file, "calibration rows (equalization fits none)")
    # the first step faces plain PTQ: the model as given (a 4-bit file needs its kernels on the
    # 4-bit grid, so there the folded model rounded to nearest)
    current = (
        None if judge is None else judge.measure(nearest(unrounded) if four_bit else reference)
    )
    if current is not None:
        report.runtime, report.plain = current.fidelity.runtime, _figures(current.fidelity)
        report.held_out_rows = 0 if in_sample else current.fidelity.rows

    def verdict(name: str, candidate: keras.Model) -> bool:
        nonlocal current
        if judge is None or current is None:
            return True
        measured = judge.measure(candidate)
        gain, low = sqnr_gain(
            judge.expected, measured.outputs, current.outputs, confidence=CONFIDENCE
        )
        score, before = _score(measured.fidelity), _score(current.fidelity)
        kept = confirmed_better(score[0], before[0], low)
        with_step, without_step = _figures(measured.fidelity), _figures(current.fidelity)
        report.checks.append(
            StepCheck(name, kept, with_step, without_step, score, before, gain, low)
        )
        if not kept:
            _warn(
                f"optimize: '{name}' dropped: {current.fidelity.rows} {judge.rows_are} do not "
                f"confirm that it makes the file better (measured on {current.fidelity.runtime}, "
                f"against the float model): with it {with_step}; without it {without_step}; "
                f"SQNR gain {gain:+.2f} dB, {low:+.2f} dB or more on {CONFIDENCE:.0%} of "
                f"resamples of the rows. The file is made without '{name}'."
            )
        else:
            current = measured
        return kept

    if "equalize" in steps:
        equalized, eq_report = equalize(model, **steps["equalize"], return_report=True)
        if not eq_report.pairs:
            reasons = "; ".join(f"{k}: {v}" for k, v in list(eq_report.skipped.items())[:3])
            _warn(
                "optimize: 'equalize' found no pair of layers it can equalize"
                + (f" ({reasons})" if reasons else " (no Conv/Dense chain)")
                + "; the model is only BatchNorm-folded."
            )
        else:
            left = {**unhandled_layers(model), **eq_report.skipped}
            if left:
                _warn(f"optimize: 'equalize' leaves these layers as they are: {_listed(left)}.")
            if verdict("equalize", nearest(equalized)):
                unrounded = equalized
                report.kept.append("equalize")
    if in_sample:  # the steps that fit the rows run unchecked, as the warning above says
        judge = None
    if "adaround" in steps:
        candidate = adaround(unrounded, data, **{**grid, **steps["adaround"]})
        if verdict("adaround", candidate):
            rounded = candidate
            report.kept.append("adaround")
    if "bias_correction" in steps:  # matches the float means of the model before rounding
        base = rounded if rounded is not None else nearest(unrounded)
        options = {**grid, "reference": unrounded, **steps["bias_correction"]}
        candidate = bias_correction(base, data, **options)
        if verdict("bias_correction", candidate):
            rounded = candidate
            report.kept.append("bias_correction")
    judged = {check.step for check in report.checks}
    if (
        checked
        and set(checked) <= judged
        and not four_bit
        and not any(c.kept for c in report.checks)
    ):
        # no step confirmed: the file is plain PTQ's (folding alone changes nothing TF's
        # converter does not do itself)
        report.kept = []
        return Compressed(reference, report)
    final = rounded if rounded is not None else nearest(unrounded)
    return Compressed(final, report)


def _split_names(model: keras.Model, layer_bits: dict[str, int] | None) -> dict | None:
    """`layer_bits` with each separable convolution's name given to its two parts."""
    if not layer_bits:
        return layer_bits
    separable = {layer.name for layer in model.layers if isinstance(layer, SEPARABLE_LAYERS)}
    split: dict[str, int] = {}
    for name, width in layer_bits.items():
        parts = [f"{name}_depthwise", f"{name}_pointwise"] if name in separable else [name]
        split.update(dict.fromkeys(parts, width))
    return split


def _listed(reasons: dict[str, str], most: int = 12) -> str:
    """`'a' (why), 'b' (why)` for the first `most` entries, and how many more."""
    items = [f"'{name}' ({why})" for name, why in list(reasons.items())[:most]]
    more = len(reasons) - most
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")


def _warn_unhandled(model: keras.Model, steps: list[str]) -> None:
    """One warning per step naming the layers with weights whose kernel it leaves alone."""
    unhandled = unhandled_layers(model)
    for step in steps if unhandled else []:
        _warn(f"optimize: '{step}' leaves these layers as they are: {_listed(unhandled)}.")


def _warn(message: str) -> None:
    """Warn at the first caller outside tfcompress (the user's line)."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


@dataclass(frozen=True)
class _Measured:
    """A candidate's file on the judging rows: its figures and its outputs."""

    fidelity: Fidelity
    outputs: list[np.ndarray]


class _Judge:
    """Makes each candidate's file and runs it on the rows that judge the steps (held-out rows,
    or the calibration rows for equalization alone) beside the float model, whose outputs are
    computed once."""

    def __init__(
        self,
        reference: keras.Model,
        rows: np.ndarray,
        make_file: Callable[[keras.Model], bytes],
        rows_are: str,
    ) -> None:
        self.rows, self.make_file, self.rows_are = [rows], make_file, rows_are
        self.expected = keras_outputs(reference, self.rows)
        self.kinds = kinds_of(reference, self.expected)

    def measure(self, candidate: keras.Model) -> _Measured:
        flatbuffer = self.make_file(candidate)
        fidelity, outputs = file_fidelity(
            flatbuffer, self.expected, self.rows, self.kinds, _RUNTIME
        )
        return _Measured(fidelity, outputs)


def prepare_for_convert(
    model: Any,
    optimize: Any,
    data: Any,
    *,
    mode: str,
    per_channel: bool,
    int4_weights: bool,
    num_samples: int,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
    check: bool = True,
    rewrite: Rewrite | None = None,
) -> tuple[keras.Model, Any, bool]:
    """What `convert(..., optimize=...)` converts: the optimized model, its data, 4-bit or not.

    The data is split by `split_held_out` (the calibration rows stay the first `num_samples`
    when more rows are given); each data-driven step is checked on the held-out rows against the
    file without it and dropped, with a warning, when the rows do not confirm it (see
    `optimize_model`). AdaRound runs in a separate process: a crash inside TensorFlow becomes a
    `ConversionError`.
    `check=False` runs the steps unchecked on the first `num_samples` rows (a caller that
    compares files itself, such as `auto_quantize`).

    Returns `(model, data, four_bit)`; `data` holds every row read, so the file calibrates on the
    first `num_samples` as without `optimize` (held-out rows among them join the calibration once
    the steps are chosen) and `convert` checks the file on the rows after them; with `four_bit`
    the converted file's filters are turned into 4-bit levels (`four_bit_levels`) before any
    INT4 packing.

    Example:
        >>> import numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> _, data, four_bit = prepare_for_convert(
        ...     model, [("adaround", {"iterations": 0})], np.ones((8, 4)), mode="int8",
        ...     per_channel=True, int4_weights=True, num_samples=6)
        >>> data.shape, four_bit
        ((8, 4), True)
    """
    steps = parse_steps(optimize)
    if mode not in INTEGER_MODES:
        raise ConversionError(
            f"optimize= recovers integer accuracy: use it with mode='int8', 'int16x8' or "
            f"'edgetpu', not mode={mode!r}."
        )
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model = load_model(model, custom_objects=custom_objects, safe_mode=safe_mode, compile=False)
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ConversionError(
            "optimize= rewrites a Keras 3 functional or Sequential model (or a .keras file); "
            f"got {type(model).__name__}. Convert the Keras model itself."
        )
    adaround_bits = steps.get("adaround", {}).get("bits")
    int4_layers = steps.get("adaround", {}).pop("int4_layers", None)
    bits = 4 if (int4_weights and int4_layers is None) or adaround_bits == 4 else 8
    if int4_weights and "adaround" not in steps:
        raise ConversionError(
            "int4_weights=True with optimize= needs the 'adaround' step: it puts the weights on "
            "a 4-bit grid (round-to-nearest is ('adaround', {'iterations': 0}))."
        )
    if int4_layers is not None and (not int4_weights or adaround_bits is not None):
        raise ConversionError(
            "optimize: ('adaround', {'int4_layers': [...]}) chooses which layers get 4-bit "
            "weights: use it with int4_weights=True and without 'bits' (the other layers keep 8)."
        )
    if adaround_bits is not None and adaround_bits != bits:
        raise ConversionError(
            f"optimize: ('adaround', {{'bits': {adaround_bits}}}) contradicts int4_weights=True."
        )
    layer_bits = None
    if int4_layers is not None:
        if isinstance(int4_layers, str) or not int4_layers:
            raise ConversionError(
                "optimize: int4_layers must be a non-empty list of layer names; got "
                f"{int4_layers!r}."
            )
        layer_bits = {str(name): 4 for name in int4_layers}
    for name in ("adaround", "bias_correction"):
        if name in steps:
            steps[name].pop("bits", None)
    held_out, calibration = None, None
    if data is not None:
        specs = [_tf_spec(tensor) for tensor in model.inputs]
        count = num_samples + (MAX_HELD_OUT if check else 0)
        samples = collect_samples(data, specs, count, model.name, inputs_rescaled(model))
        rows = np.concatenate([sample[0] for sample in samples])
        data, held_out = split_held_out(rows, num_samples) if check else (rows, None)
        calibration = rows  # convert calibrates on the first num_samples, as without optimize=
    four_bit = "adaround" in steps and (bits == 4 or layer_bits is not None)
    grid = {"bits": bits, "per_channel": per_channel, "layer_bits": layer_bits}

    def make_file(candidate: keras.Model) -> bytes:
        return int8_file(
            candidate,
            data,
            mode=mode,
            per_channel=per_channel,
            num_samples=num_samples,
            four_bit=four_bit,
            rewrite=rewrite,
        )

    try:
        optimized = _run_steps(model, steps, data, held_out, grid, make_file, check).model
    except IsolatedCrash as error:
        raise ConversionError(f"optimize: step 'adaround' failed. {error}") from None
    except ValueError as error:
        raise ConversionError(str(error)) from error
    return optimized, calibration, four_bit


def _tf_spec(tensor: Any) -> Any:
    """The `tf.TensorSpec` of a Keras input tensor."""
    import tensorflow as tf

    return tf.TensorSpec(tuple(tensor.shape), tensor.dtype)
