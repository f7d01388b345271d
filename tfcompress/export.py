"""`tfc.convert`: a Keras model -> TFLite flatbuffer bytes, as a pipeline of explicit stages.

    model -> PTQ recovery (optional, `optimize=`) -> strip training layers -> integer-ready
    rewrite -> plain conversion (`tfcompress.tflite.convert`) -> calibrate -> quantize
    -> byte passes -> bytes

Each stage is a function of this module or of the layer below (`tfcompress.tflite`), so the
debugger, `keep_float`, `auto_quantize` and the latency-aware pruning call the ones they need.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import catalog, compat
from tfcompress.core.graph import inputs_rescaled
from tfcompress.core.wrappers import strip_training_layers, training_layers, walk_layers
from tfcompress.io import ModelFileError, load_model
from tfcompress.micro.report import check as micro_check
from tfcompress.micro.report import run_on_tflm
from tfcompress.micro.rewrite import micro_friendly
from tfcompress.quantization.integer_friendly import integer_friendly_source
from tfcompress.quantization.masking import IntegerGlobalAveragePooling1D
from tfcompress.quantization.strip import (
    activation_bits,
    is_quantization_aware,
    strip_quantization,
    untrained_ranges,
)
from tfcompress.recovery.steps import prepare_for_convert
from tfcompress.tflite.biases import narrow_biases_in_place
from tfcompress.tflite.calibration import Sample, collect_samples
from tfcompress.tflite.convert import (
    CALIBRATED_MODES,
    MODES,
    plain_converter,
    run_converter,
)
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.fidelity import (
    ConvertedFile,
    Fidelity,
    FidelityThresholds,
    compare_outputs,
    file_outputs,
    keras_outputs,
    measure_fidelity,
)
from tfcompress.tflite.flatbuffer import (
    inspect,
    name_outputs_in_place,
    pack,
    read_model,
    share_vectors_of,
    validate,
)
from tfcompress.tflite.four_bit import four_bit_levels
from tfcompress.tflite.int4 import pack_int4
from tfcompress.tflite.isolation import DEFAULT_TIMEOUT_S
from tfcompress.tflite.layer_map import map_layers
from tfcompress.tflite.mixed import readers_of, widen_activations
from tfcompress.tflite.requantize import (
    fold_float_requantize_in_place,
    outputs_before_requantize_in_place,
)
from tfcompress.tflite.save import save_tflite
from tfcompress.tflite.selective import (
    CalibratedModel,
    calibrated_model,
    check_keep_float_mode,
    check_layer_names,
    quantize_keeping_float,
)
from tfcompress.tflite.source import (
    ModelSource,
    TraceableModel,
    load_source,
    with_token_ids_as_int32,
)

__all__ = ["CALIBRATED_MODES", "MODES", "calibrate", "convert", "save_tflite"]
_log = logging.getLogger("tfcompress")


def convert(
    model: ModelSource,
    mode: str = "float32",
    representative_data: Any = None,
    *,
    num_samples: int = 200,
    input_signature: Sequence[tf.TensorSpec] | None = None,
    sparsity: bool = False,
    per_channel: bool = True,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
    progress: bool = False,
    isolate: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    int4_weights: bool = False,
    keep_float: Sequence[str] | None = None,
    int16_layers: Sequence[str] | None = None,
    optimize: Sequence[Any] | None = None,
    target: str = "phone",
    validation_data: Any = None,
    thresholds: FidelityThresholds | None = None,
    strict: bool = False,
    check: bool = True,
) -> ConvertedFile:
    """Convert a model to a TFLite flatbuffer and return its bytes, checked against the model.

    Args:
        model: a Keras 3 model, a legacy `tf_keras` model, a path to a `.keras`/`.h5` file or a
            SavedModel directory.
        mode: `"float32"`; `"dynamic"` (int8 weights, float activations); `"float16"` (float16
            weights); `"int8"` (full integer, int8 input and output, no float op left);
            `"int16x8"` (int16 activations, int8 weights, int16 input and output; a QAT model's
            trained weights are baked in and its 16-bit ranges calibrated); `"edgetpu"`
            (full integer, uint8 input and output, batch 1, per-tensor Dense weights).
        representative_data: calibration inputs for the integer modes: a numpy array (batch
            first), a list of arrays for several inputs, a `tf.data.Dataset` (of inputs or
            `(inputs, labels)`, batched or not) or a generator. Optional for a
            quantization-aware model, whose ranges come from its fake-quant ops.
        num_samples: how many calibration samples to read at most.
        input_signature: `tf.TensorSpec`s of the inputs, for a subclassed model that has none.
        sparsity: also encode sparse weights (`EXPERIMENTAL_SPARSITY`) for pruned models.
        per_channel: per-channel weight scales for convolutions in the integer modes. Turn it off
            for clustered models, so that a kernel with 16 shared values keeps 16 int8 values.
        safe_mode: load `.keras` files with Keras's safe mode (refuses to run Lambda code).
        custom_objects: custom classes needed to load a `.keras` file.
        progress: show a progress bar while calibrating.
        isolate: run the calibration and quantization step of TF's converter (the integer
            modes) in a forked child process, so that a crash inside TensorFlow (a segmentation
            fault, an abort) becomes a `ConversionError` instead of killing your Python process.
            On Linux only; elsewhere it runs in-process. `isolate=False` runs it in-process.
        timeout: seconds the isolated converter may run before it is stopped and reported as a
            `ConversionError`; `None` waits for ever. Ignored with `isolate=False`.
        int4_weights: with `mode="int8"`, store the weights trained with `weight_bits <= 4` as
            packed TFLite INT4 (two per byte), so the file and its weight memory shrink; the
            integers and the outputs are those of the int8 file. LiteRT's builtin CPU kernels run
            its convolutions, slower than XNNPACK runs the int8 file
            (`tfcompress.tflite.int4` lists the runtimes); the Edge TPU does not, so
            `mode="edgetpu"` refuses it (keep its int8 levels).
        keep_float: with `mode="int8"` or `"edgetpu"`, names of Keras layers to keep in float
            inside the integer file (`DEQUANTIZE` before and `QUANTIZE` after their ops; the
            file's input and output stay integer). `tfcompress.ptq.suggest_keep_float` picks
            them for an accuracy target; an unknown name is an error listing the layers.
        int16_layers: with `mode="int8"`, names of Keras layers whose outputs are kept in 16
            bits inside the int8 file: their ops and the ops that read their outputs are those
            of the int16x8 file (int16 activations, the same int8 weights), and a `QUANTIZE`
            requantizes between int8 and int16 where they meet the int8 ops, in integer
            arithmetic. The precision of `mode="int16x8"` where the debugger finds the error,
            int8 activations (half the memory, XNNPACK's kernels) elsewhere; runs on LiteRT and
            on TFLM (`target="micro"`), not on the Edge TPU. Needs `representative_data` (the
            16-bit ranges are calibrated); `tfcompress.tflite.mixed` describes the file.
        optimize: with `mode="int8"`, `"int16x8"` or `"edgetpu"`, PTQ recovery steps applied
            to a copy of a Keras model before converting, always in the order `"fold_bn"`,
            `"equalize"`, `"adaround"`, `"bias_correction"` (`tfcompress.recovery.STEPS`); an
            entry may be `(name, options)`, e.g. `("equalize", {"relu6": "replace"})`. AdaRound
            and bias correction use `representative_data` and the weight grid of `per_channel`;
            with `int4_weights=True` AdaRound rounds to 4 bits and the file stores INT4. In
            int16x8 the weights' rounding is most of the error, which AdaRound and bias
            correction reduce.
        target: where the file runs. `"phone"` (LiteRT: phones, desktops, Linux boards), or
            `"micro"` (TensorFlow Lite Micro on a microcontroller): a static batch-1 file in
            mode `"int8"`, `"int16x8"` or `"float32"`, with layers TFLM lacks ops for rewritten
            where an equivalent exists (`UpSampling2D` as nearest `Resizing`), checked on TFLM's
            interpreter before it is returned (`tfcompress.micro.check`; needs
            `pip install 'tfcompress[micro]'`). A file TFLM cannot run is refused, naming the op,
            the layer and the fix.
        validation_data: inputs to check an integer file on (`"int8"`, `"int16x8"`,
            `"edgetpu"`), in any form `representative_data` takes. Without it, the file is
            checked on up to 200 rows of `representative_data` after the `num_samples` it
            calibrates on (held-out rows), or, when it has no more rows, on the calibration rows
            themselves (the figures then say so).
        thresholds: a `FidelityThresholds`: the least top-1 agreement for class outputs (0.98
            by default, or scores within 30 dB SQNR of the model's, where the rows that differ
            are near-ties), and for value outputs an SQNR of 20 dB or a mean error within 10 %
            of the output's spread, that the file must reach.
        strict: raise a `ConversionError` instead of warning when the file misses `thresholds`.
        check: `False` skips the check (for tools that measure the files they make).

    Every integer file is run on LiteRT (XNNPACK; LiteRT's reference kernels, which TFLM's
    kernels match, for `target="micro"`) beside the Keras model, and the figures of every
    output come back with the bytes: `tfc.convert(...).fidelity` (a `Fidelity`; `None` when
    no data was given, as for a quantization-aware model converted with its trained ranges
    alone). A file below `thresholds` gets a warning that names the outputs, the layers whose
    float copy brings it back and the other fixes (`mode="int16x8"`, QAT with data).

    In the calibrated modes, where TF's converter requantizes an integer tensor through float
    (`DEQUANTIZE -> QUANTIZE`, e.g. on the input of a QAT model whose first layer is a
    Rescaling or Normalization: the calibrated and the trained input ranges differ), the pair is
    rewritten as one integer `QUANTIZE` (see `tfcompress.tflite.requantize`).

    A model still holding its training wrappers (pruned and not passed through
    `strip_pruning`, clustered and not passed through `strip_clustering`) is stripped here (each
    wrapper's `strip()`, as those functions do), and a warning says so: the file holds the pruned zeros and the clustered
    values either way, and your model object is left as it is. A legacy `tf_keras` model
    converts as it is; one still wrapped by tfmot is refused with the tfmot call to make.

    Returns:
        The flatbuffer as `bytes` (a `ConvertedFile`, whose `fidelity` holds the check's
        figures); write it with `tfcompress.save_tflite`.

    Raises:
        ConversionError: the model, the mode or the calibration data cannot be used; the message
            says what to change. A crash of TF's converter, or an isolated conversion running
            past `timeout`, is one too; so is a file below `thresholds` with `strict=True`.

    Isolation forks only for the calibrated modes; its cost is a small fraction of the
    conversion (docs/dev/decisions/2026-11-23-converter-isolation.md).

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> split = load_digits()
        >>> flatbuffer = tfc.convert(build_digits_cnn(), "int8", split.x_train[:50])
        >>> tfc.inspect(flatbuffer).float_ops
        []
        >>> flatbuffer.fidelity.outputs[0].agreement > 0.9
        True
    """
    if mode not in MODES:
        raise ConversionError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    _check_target(target, mode)
    if timeout is not None and not timeout > 0:
        raise ConversionError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}."
        )
    if representative_data is not None and mode not in CALIBRATED_MODES:
        warnings.warn(
            f"mode={mode!r} does not calibrate: representative_data is ignored.", stacklevel=2
        )
    _check_int4_mode(int4_weights, mode)
    _check_int16_layers(int16_layers, mode, keep_float, int4_weights, representative_data)
    reference, model = _reference_of(model, input_signature, safe_mode, custom_objects)
    source, representative_data, four_bit = prepared_source(
        model,
        mode,
        representative_data,
        optimize=optimize,
        input_signature=input_signature,
        per_channel=per_channel,
        int4_weights=int4_weights,
        num_samples=num_samples,
        safe_mode=safe_mode,
        custom_objects=custom_objects,
    )
    if target == "micro":
        source = micro_ready(source)
    representative_data, rows, held_out = check_rows(
        source, mode, representative_data, validation_data, num_samples, check
    )
    converter = plain_converter(
        source,
        mode,
        representative_data,
        num_samples=num_samples,
        per_channel=per_channel,
        sparsity=sparsity,
        progress=progress,
    )
    if target == "micro":  # TFLM keeps a multiplier and a shift per channel of a per-channel FC
        compat.disable_per_channel_dense(converter)
    if keep_float is None and mode in ("int8", "edgetpu") and not int16_layers:
        keep_float = _float_by_default(source)
    calibrated = None
    if keep_float is not None:  # calibrate here, quantize with a denylist
        check_keep_float_mode(mode)
        check_layer_names(source.owner, keep_float, [])  # before the calibration's cost
        calibrated = _calibrate(converter, source, mode, isolate, timeout)
        flatbuffer = quantize_keeping_float(calibrated, keep_float)
    else:
        flatbuffer = run_converter(
            converter,
            source.name,
            mode,
            isolate=isolate,
            timeout=timeout,
            legacy=compat.is_tf_keras(source.owner),
        )
        if int16_layers:
            flatbuffer = _with_16_bit_layers(
                flatbuffer, source, int16_layers, representative_data, num_samples, isolate, timeout
            )
    flatbuffer = byte_passes(
        flatbuffer,
        source.name,
        mode,
        output_names=named_outputs(source.owner),
        warn_float_ops=not keep_float,
        synthetic=representative_data is None,
        four_bit=four_bit,
        int4_weights=int4_weights,
        int16_ops=bool(int16_layers),
    )
    if target == "micro":
        _check_on_micro(flatbuffer, source.name, mode)
    fidelity = None
    if rows is not None:
        # a micro file is checked on TFLM itself; XNNPACK takes no sparse-encoded tensors
        runtime = "micro" if target == "micro" else "builtin" if sparsity else "xnnpack"
        # the graph TF's converter traced computes what the model computes, without a first
        # eager call; recovery steps change the weights, so the file then faces the model itself
        computed = reference if optimize or reference is None else _Traced(source)
        fidelity = check_fidelity(
            flatbuffer, computed, reference, rows, runtime, held_out, thresholds, source.name
        )
    if fidelity is not None and not fidelity.passed:
        try:  # the search for a fix never costs the user the file
            if (
                mode in ("int8", "edgetpu")
                and calibrated is None
                and compat.is_keras3_model(source.owner)
                and getattr(source.owner, "outputs", None)  # a graph the layer map can read
                and not is_quantization_aware(source.owner)  # fake quant fixes every range
            ):
                calibrated = _calibrate(converter, source, mode, isolate, timeout)
            fixes = fixes_that_work(fidelity, computed, calibrated, rows, runtime, keep_float or ())
        except Exception as error:  # noqa: BLE001 - said in the warning instead
            _log.info("no float-layer search for '%s': %s", source.name, error)
            fixes = []
        if mode == "int8" and target == "phone" and not four_bit and not int4_weights:
            if not is_quantization_aware(source.owner):  # QAT: 16-bit ranges need QAT again

                def int16x8() -> bytes:
                    converter16 = plain_converter(
                        source, "int16x8", representative_data, num_samples=num_samples
                    )
                    plain = run_converter(
                        converter16, source.name, "int16x8", isolate=isolate, timeout=timeout
                    )
                    return byte_passes(
                        plain,
                        source.name,
                        "int16x8",
                        output_names=named_outputs(source.owner),
                        warn_float_ops=False,
                    )

                fixes.append(
                    int16x8_trial(int16x8, fidelity, computed, rows, runtime, len(flatbuffer))
                )
        report_mismatch(fidelity, source.name, fixes, strict)
    return ConvertedFile(flatbuffer, fidelity)


CHECK_ROWS = 200  # most rows an integer file is checked on


def _reference_of(
    model: ModelSource,
    input_signature: Sequence[tf.TensorSpec] | None,
    safe_mode: bool,
    custom_objects: dict | None,
) -> tuple[Any, ModelSource]:
    """The model the file is checked against, and the model to convert (a file loaded once)."""
    if compat.is_keras3_model(model) or compat.is_tf_keras(model):
        return model, model
    if not isinstance(model, str | os.PathLike):
        return None, model  # load_source names what it takes
    if str(model).lower().endswith((".h5", ".hdf5")):  # Keras 2 files too, rebuilt in Keras 3
        try:
            keras_model = load_model(
                model, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
            )
        except ModelFileError as error:
            raise ConversionError(str(error)) from error
        return keras_model, keras_model
    loaded = load_source(model, input_signature, safe_mode, custom_objects)
    if compat.is_keras3_model(loaded.owner) or compat.is_tf_keras(loaded.owner):
        return loaded.owner, loaded.owner
    return _CallOnList(loaded.fn), model  # a SavedModel: its serving signature


class _CallOnList:
    """A traced function of a list of inputs, called as a Keras model is."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        return self.fn(list(inputs) if isinstance(inputs, list | tuple) else [inputs])


class _Traced:
    """The converter's traced graph of a model, called as a Keras model is (batch by batch)."""

    def __init__(self, source: TraceableModel) -> None:
        self.function = source.concrete_function()
        self.specs = source.input_specs

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        arrays = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        tensors = [tf.constant(a, s.dtype) for a, s in zip(arrays, self.specs, strict=True)]
        if self.specs[0].shape[0] is None:
            return self.function(*tensors)
        step = self.specs[0].shape[0]  # a static batch (micro, Edge TPU): one batch at a time
        chunks = [
            self.function(*[t[i : i + step] for t in tensors])
            for i in range(0, len(arrays[0]), step)
        ]
        return tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *chunks)


def check_rows(
    source: TraceableModel,
    mode: str,
    representative_data: Any,
    validation_data: Any,
    num_samples: int,
    check: bool = True,
) -> tuple[Any, list[np.ndarray] | None, bool]:
    """Stage: the rows an integer file is checked on, kept apart from the calibration rows.

    Returns:
        The calibration data (the same rows, in the same order, read once), the check's inputs
        (one array per model input; None: nothing to check on) and whether they are held out.
    """
    if mode not in CALIBRATED_MODES or not check:
        if validation_data is not None:
            warnings.warn(
                f"validation_data is ignored: mode={mode!r}, check={check}.", stacklevel=3
            )
        return representative_data, None, False
    rescaled = inputs_rescaled(source.owner) if compat.is_keras3_model(source.owner) else []

    def read(data: Any, count: int) -> list[Sample]:
        return collect_samples(data, source.input_specs, count, source.name, rescaled)

    if validation_data is not None:
        return representative_data, _stacked(read(validation_data, CHECK_ROWS)), True
    if representative_data is None:
        return None, None, False
    samples = read(representative_data, num_samples + CHECK_ROWS)
    calibration = _stacked(samples[:num_samples])
    data = calibration if len(calibration) > 1 else calibration[0]
    if len(samples) > num_samples:
        return data, _stacked(samples[num_samples:]), True
    return data, calibration, False


def _stacked(samples: list[Sample]) -> list[np.ndarray]:
    return [np.concatenate([sample[i] for sample in samples]) for i in range(len(samples[0]))]


def check_fidelity(
    flatbuffer: bytes,
    reference: Any,
    model: Any,
    rows: list[np.ndarray],
    runtime: str,
    held_out: bool,
    thresholds: FidelityThresholds | None,
    name: str,
) -> Fidelity | None:
    """Stage: run the file beside its Keras model on `rows` and compare every output.

    `reference` computes the model's outputs (the model, or the graph the converter traced);
    `model` is the Keras model, which says what each output is.
    """
    if reference is None:
        return None
    try:
        return measure_fidelity(
            flatbuffer,
            reference,
            rows,
            runtime,
            held_out,
            thresholds,
            kinds_from=model,
            outputs_of=run_on_tflm if runtime == "micro" else None,
        )
    except Exception as error:  # the check must not lose the file; it says what it could not do
        warnings.warn(
            f"convert could not check the file of '{name}' against the model "
            f"({type(error).__name__}: {str(error)[:300]}): compare them yourself with "
            "tfcompress.evaluate_tflite.",
            stacklevel=3,
        )
        return None


def report_mismatch(fidelity: Fidelity, name: str, fixes: list[str], strict: bool) -> None:
    """Stage: a file below its thresholds is said (or refused), with the fixes that work."""
    failing = "; ".join(output.describe() for output in fidelity.failing)
    limits = fidelity.thresholds
    tried = " ".join(fixes) if fixes else ""
    text = (
        f"The integer file of '{name}' does not compute what the Keras model computes: {failing} "
        f"({fidelity.summary().splitlines()[0][:-1]}; thresholds: agreement "
        f">= {limits.min_agreement}, SQNR >= {limits.min_sqnr_db} dB or relative error <= "
        f"{limits.max_relative_error}). {tried} Other fixes: "
        "the layers tfcompress.debug_quantization(model, data) ranks worst in float "
        "(keep_float=[...]) or, where a wide tensor is the cause, in 16 bits inside the int8 "
        "file (int16_layers=[...]); quantization-aware training with data. "
        "strict=True raises instead of warning; thresholds=FidelityThresholds(...) sets the "
        "limits."
    )
    if strict:
        raise ConversionError(text)
    warnings.warn(text, stacklevel=3)


def outputs_on(flatbuffer: bytes, x: list[np.ndarray], runtime: str) -> list[np.ndarray]:
    """The file's dequantized outputs on `runtime`: LiteRT's (a key of `RUNTIMES`), or TFLM's."""
    if runtime == "micro":
        return run_on_tflm(flatbuffer, x)
    return file_outputs(flatbuffer, x, runtime)


def int16x8_trial(
    build: Any,
    fidelity: Fidelity,
    reference: Any,
    rows: list[np.ndarray],
    runtime: str,
    size: int,
) -> str:
    """Stage: `mode="int16x8"` (16-bit activations) tried on the check's rows, and what it gave.

    `build` makes the int16x8 file of the same model and calibration rows; it is run on the
    same runtime (a key of `RUNTIMES`) and judged with the same thresholds as the int8 file
    (`size` bytes).
    """
    sample = [array[:64] for array in rows]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flatbuffer = build()
        outputs = outputs_on(flatbuffer, sample, runtime)
    except Exception as error:  # noqa: BLE001 - a fix that cannot be built is said, not raised
        return f"mode='int16x8' could not be made ({type(error).__name__}: {str(error)[:200]})."
    names = [output.name for output in fidelity.outputs]
    kinds = [output.kind for output in fidelity.outputs]
    result = compare_outputs(
        keras_outputs(reference, sample),
        outputs,
        names,
        kinds,
        runtime,
        fidelity.held_out,
        fidelity.thresholds,
    )
    verdict = "brings it back" if result.passed else "does not bring it back"
    figures = "; ".join(output.describe() for output in result.outputs)
    return (
        f"mode='int16x8' {verdict} ({figures}, tried on {result.rows} rows; "
        f"{len(flatbuffer):,} bytes against {size:,})."
    )


def fixes_that_work(
    fidelity: Fidelity,
    reference: Any,
    calibrated: CalibratedModel | None,
    rows: list[np.ndarray],
    runtime: str,
    kept: Sequence[str] = (),
    most_layers: int = 3,
) -> list[str]:
    """Stage: the float layers that bring a mismatching file back, tried on the check's rows.

    Greedy: every layer of the file alone in float, then the best one with each of the next
    best, up to `most_layers`. One quantization and one run per try, on at most 64 rows.
    """
    if calibrated is None or calibrated.quantization_aware:
        return []
    sample = [array[:64] for array in rows]
    expected = keras_outputs(reference, sample)

    def measured(keep: list[str]) -> Fidelity | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flatbuffer = calibrated.quantize(keep)
        except ConversionError:  # TF's quantizer keeps some layers integer: not a fix
            return None
        outputs = outputs_on(flatbuffer, sample, runtime)
        kinds = [output.kind for output in fidelity.outputs]
        names = [output.name for output in fidelity.outputs]
        return compare_outputs(
            expected, outputs, names, kinds, runtime, fidelity.held_out, fidelity.thresholds
        )

    def worst_sqnr(result: Fidelity) -> float:
        return min(output.sqnr_db for output in result.outputs)

    keep = list(kept)
    layers = [layer for layer in dict.fromkeys(row.layer for row in calibrated.rows)]
    for _ in range(most_layers):
        tried = [(layer, measured([*keep, layer])) for layer in layers if layer not in keep]
        scored = sorted(
            ((worst_sqnr(result), layer, result) for layer, result in tried if result),
            key=lambda item: -item[0],
        )
        if not scored:
            return []
        _, best, result = scored[0]
        keep.append(best)
        if result.passed:
            figures = "; ".join(output.describe() for output in result.outputs)
            return [f"keep_float={keep} brings it back ({figures}, tried on {result.rows} rows)."]
        layers = [layer for _, layer, _ in scored[1:7]]
    return []


TARGETS = ("phone", "micro")
MICRO_MODES = ("int8", "int16x8", "float32")


def _check_target(target: str, mode: str) -> None:
    if target not in TARGETS:
        raise ConversionError(f"Unknown target {target!r}; choose one of {', '.join(TARGETS)}.")
    if target == "micro" and mode not in MICRO_MODES:
        raise ConversionError(
            f"target='micro' takes mode 'int8', 'int16x8' or 'float32', not {mode!r}: TFLM's "
            "kernels take integer or float32 tensors, not the float16 weights or the "
            "dynamic-range kernels of those modes."
        )


def micro_ready(source: TraceableModel) -> TraceableModel:
    """Stage for `target="micro"`: layers TFLM lacks ops for rewritten, and a static batch of 1.

    A dynamic batch makes the converter compute shapes at run time (SHAPE, REDUCE_PROD, ...),
    which TFLM does not run; firmware invokes one sample at a time.
    """
    if compat.is_keras3_model(source.owner):
        rewritten = micro_friendly(source.owner)
        if rewritten is not source.owner:  # same inputs, as the earlier stages traced them
            fresh = load_source(rewritten, source.input_specs)
            source = TraceableModel(source.name, fresh.fn, source.input_specs, fresh.owner)
    return source.with_batch_size(1)


def _check_on_micro(flatbuffer: bytes, name: str, mode: str) -> None:
    """The file must run on TFLM's interpreter: otherwise say which op, which layer, what to do."""
    report = micro_check(flatbuffer)
    if report.runs:
        return
    failing = report.failing_op
    where = (
        f"op {failing.name} (layer '{failing.layer}')"
        if failing and failing.layer
        else f"op {failing.name}"
        if failing
        else "the file"
    )
    advice = failing.advice if failing else report.error
    raise ConversionError(
        f"The {mode} file of '{name}' does not run on TensorFlow Lite Micro: {where}. {advice}"
    )


def calibrate(
    model: ModelSource,
    mode: str = "int8",
    representative_data: Any = None,
    *,
    num_samples: int = 200,
    input_signature: Sequence[tf.TensorSpec] | None = None,
    per_channel: bool = True,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
    progress: bool = False,
    isolate: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    optimize: Sequence[Any] | None = None,
) -> CalibratedModel:
    """Calibrate `model` with `convert`'s stages and return it before quantization.

    Args:
        model: a Keras 3 model or a `.keras` path (what `convert` takes).
        mode: `"int8"` or `"edgetpu"`.
        representative_data: calibration inputs, as for `convert`.
        num_samples, input_signature, per_channel, safe_mode, custom_objects, progress,
            isolate, timeout, optimize: as for `convert`.

    Returns:
        A `CalibratedModel`; its `quantize(keep_float)` is the file that
        `convert(model, mode, representative_data, keep_float=keep_float)` returns.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> calibrated = calibrate(build_digits_cnn(), "int8", load_digits().x_train[:20])
        >>> [row.layer for row in calibrated.rows][:3]
        ['relu1', 'relu2', 'pool']
    """
    check_keep_float_mode(mode)
    source, representative_data, _ = prepared_source(
        model,
        mode,
        representative_data,
        optimize=optimize,
        input_signature=input_signature,
        per_channel=per_channel,
        num_samples=num_samples,
        safe_mode=safe_mode,
        custom_objects=custom_objects,
    )
    converter = plain_converter(
        source,
        mode,
        representative_data,
        num_samples=num_samples,
        per_channel=per_channel,
        progress=progress,
    )
    return _calibrate(converter, source, mode, isolate, timeout)


def prepared_source(
    model: ModelSource,
    mode: str,
    representative_data: Any,
    *,
    optimize: Sequence[Any] | None = None,
    input_signature: Sequence[tf.TensorSpec] | None = None,
    per_channel: bool = True,
    int4_weights: bool = False,
    num_samples: int = 200,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
) -> tuple[TraceableModel, Any, bool]:
    """The stages before TF's converter: recovery, loading, strip, integer-ready rewrite.

    Returns:
        The traceable model, the calibration data (recovery may change it) and whether
        AdaRound rounded the weights to 4 bits.
    """
    four_bit = False
    if optimize:  # stage: PTQ recovery rewrites the float model first
        model, representative_data, four_bit = prepare_for_convert(
            model,
            optimize,
            representative_data,
            mode=mode,
            per_channel=per_channel,
            int4_weights=int4_weights,
            num_samples=num_samples,
            safe_mode=safe_mode,
            custom_objects=custom_objects,
            rewrite=integer_friendly_source,
        )
    source = load_source(model, input_signature, safe_mode, custom_objects)
    _refuse_layers_tflite_lacks(source)
    source = strip_training_layers_of(source, input_signature)
    source = integer_ready(source, mode, representative_data, input_signature)
    return source, representative_data, four_bit


def _calibrate(
    converter: Any, source: TraceableModel, mode: str, isolate: bool, timeout: float | None
) -> CalibratedModel:
    """Stage: TF's converter calibrates the float file (every tensor gets its observed range)."""
    compat.calibrate_only(converter)
    calibrated_bytes = run_converter(
        converter,
        source.name,
        mode,
        isolate=isolate,
        timeout=timeout,
        legacy=compat.is_tf_keras(source.owner),
    )
    aware = compat.is_keras3_model(source.owner) and is_quantization_aware(source.owner)
    return calibrated_model(calibrated_bytes, converter, source.owner, mode, aware)


def integer_ready(
    source: TraceableModel, mode: str, representative_data: Any, input_signature: Any
) -> TraceableModel:
    """Stage: the model as the integer modes need it (the float modes get the rewrite only).

    int16x8 bakes a QAT model's weights in; int8 and edgetpu refuse 16-bit QAT ranges; token
    ids are traced as int32; layers whose ops have no integer kernel are rewritten
    (`tfcompress.quantization.integer_friendly`); the Edge TPU gets batch 1.
    """
    if mode == "int16x8":
        source = _without_fake_quant(source, representative_data, input_signature)
    elif mode in ("int8", "edgetpu"):
        _check_8_bit_activations(source, mode)
        _check_trained_ranges(source, representative_data)
    if mode in CALIBRATED_MODES and input_signature is None:  # token ids stay whole numbers
        source = with_token_ids_as_int32(source)
    # layers whose ops have no int8 kernel (fused RNN, NEG, SQUARE, ELU) -> int8-friendly ones;
    # after int16x8's baking, so a baked QAT model gets the same rewrite as a float one
    source = integer_friendly_source(source, mode)
    if mode == "int16x8":
        _refuse_masks_in_int16x8(source)
    if mode == "edgetpu":
        source = source.with_batch_size(1)
    return source


def byte_passes(
    flatbuffer: bytes,
    name: str,
    mode: str,
    *,
    output_names: list[str] | None = None,
    warn_float_ops: bool = True,
    synthetic: bool = False,
    four_bit: bool = False,
    int4_weights: bool = False,
    int16_ops: bool = False,
) -> bytes:
    """Stage: the passes on the converted bytes, then a check that the file reads back.

    Float requantize pairs become integer ops, the biases of 16-bit ops (an int16x8 file, or
    `int16_ops`: an int8 file with 16-bit layers) are stored in 32 bits where they fit, repeated
    vectors are stored once (not for the Edge TPU compiler, which gets the converter's layout),
    AdaRound's 4-bit levels and INT4 packing are applied when asked for.
    """
    origin = f"the converted '{name}'"
    model = read_model(flatbuffer, origin)  # parsed once; the passes rewrite it in place
    changed = False
    if mode in CALIBRATED_MODES:  # the converter's float requantize pairs become integer ops
        changed |= fold_float_requantize_in_place(model) > 0
    if mode in ("int8", "int16x8"):  # an output at its own scale, not a later op's
        changed |= outputs_before_requantize_in_place(model) > 0
    if output_names:  # the Keras model's output names, not the converter's Identity_N
        name_outputs_in_place(model, output_names)
        changed = True
    if mode == "int16x8" or int16_ops:  # 32-bit biases where no sum can leave the int32 range
        changed |= narrow_biases_in_place(model)
    if mode != "edgetpu":  # each repeated vector once, without float ranges
        flatbuffer = share_vectors_of(model, flatbuffer, rewritten=changed)
    elif changed:  # the Edge TPU compiler gets the converter's own layout otherwise
        flatbuffer = pack(model, len(flatbuffer))
    validate(flatbuffer, origin)  # never hand back a broken file
    if mode in ("int8", "edgetpu") and warn_float_ops:
        _warn_if_float_ops_left(flatbuffer, name, synthetic=synthetic)
    if four_bit:  # AdaRound's 4-bit grid, which the converter stored as int8 values
        flatbuffer = four_bit_levels(flatbuffer, require=True).flatbuffer
    if int4_weights:
        flatbuffer = pack_int4(flatbuffer, require=True).flatbuffer
    return flatbuffer


def named_outputs(model: Any) -> list[str] | None:
    """The output names of a Keras model whose outputs are a dict, in the file's output order.

    Example:
        >>> import keras
        >>> inputs = keras.Input((2,))
        >>> dense = keras.layers.Dense(1)
        >>> named_outputs(keras.Model(inputs, {"b": dense(inputs), "a": inputs}))
        ['a', 'b']
    """
    if not compat.is_keras3_model(model) or not isinstance(getattr(model, "output", None), dict):
        return None
    paths = [path for path, _ in keras.tree.flatten_with_path(model.output)]
    return ["/".join(str(part) for part in path) for path in paths]


def strip_training_layers_of(
    source: TraceableModel, input_signature: Sequence[tf.TensorSpec] | None
) -> TraceableModel:
    """Stage: strip the training layers (pruning, clustering wrappers) left in the model."""
    owner = source.owner
    if compat.is_tf_keras(owner):
        legacy = compat.tfmot_wrapper_names(owner)
        if legacy:
            raise ConversionError(
                f"The tf_keras model '{source.name}' still holds tfmot's training wrappers "
                f"({', '.join(legacy)}). Take the legacy route first: in the process "
                "that trained it (TF_USE_LEGACY_KERAS=1), call tfmot.sparsity.keras.strip_pruning / "
                "tfmot.clustering.keras.strip_clustering, then pass the stripped model to convert."
            )
        return source
    if not compat.is_keras3_model(owner):
        return source
    found = [layer for layer in training_layers(owner) if layer.reported]
    if not found:
        return source
    names = [layer.name for layer in found]
    try:
        stripped = strip_training_layers(owner)
    except Exception as error:
        raise ConversionError(
            f"'{source.name}' still holds training wrappers ({', '.join(names)}) and "
            f"stripping them failed ({type(error).__name__}: {error}). Call "
            "tfcompress.strip_pruning / tfcompress.strip_clustering on it yourself and convert "
            "the result."
        ) from error
    done = []
    for function in dict.fromkeys(layer.strip_function for layer in found):
        kind = next(layer.technique for layer in found if layer.strip_function == function)
        which = [layer.name for layer in found if layer.strip_function == function]
        done.append(f"{function} ({kind} layers: {', '.join(which)})")
    warnings.warn(
        f"convert: '{source.name}' was not stripped; applied {' and '.join(done)} to a copy "
        "before converting (your model is unchanged). Strip it yourself to silence this.",
        stacklevel=4,
    )
    return load_source(stripped, input_signature)


def _check_int4_mode(int4_weights: bool, mode: str) -> None:
    """INT4 filters run only where a kernel takes them: int8 activations on LiteRT's CPU."""
    if not int4_weights or mode == "int8":
        return
    if mode == "edgetpu":
        raise ConversionError(
            "int4_weights=True cannot be used with mode='edgetpu': the Edge TPU compiler does not "
            "take INT4 tensors. Convert without int4_weights: the 4-bit weights are then stored "
            "as int8 levels (values in [-7, 7]), which the Edge TPU runs."
        )
    raise ConversionError(
        f"int4_weights=True needs mode='int8' (LiteRT's INT4 filters take int8 activations); "
        f"got mode={mode!r}. Use mode='int8', or drop int4_weights to keep int8 levels."
    )


def _without_fake_quant(
    source: TraceableModel, representative_data: Any, input_signature: Any
) -> TraceableModel:
    """TF 2.21 cannot export fake quant in int16x8: bake a QAT model's weights in and calibrate."""
    if not compat.is_keras3_model(source.owner) or not is_quantization_aware(source.owner):
        return source
    if representative_data is None:
        raise ConversionError(
            f"mode='int16x8' of the quantization-aware model '{source.name}' needs "
            "representative_data: TF 2.21's converter cannot take fake quant in int16x8, so the "
            "trained weights are baked in and the 16-bit activation ranges calibrated on real "
            "inputs. Pass representative_data=x_train[:200]."
        )
    _log.info("QAT model '%s': int16x8 export of its baked-in weights.", source.name)
    return load_source(strip_quantization(source.owner), input_signature)


def _check_int16_layers(
    int16_layers: Sequence[str] | None,
    mode: str,
    keep_float: Sequence[str] | None,
    int4_weights: bool,
    representative_data: Any,
) -> None:
    """`int16_layers` mixes 16-bit activations into an int8 file of a calibrated model."""
    if int16_layers is None:
        return
    if isinstance(int16_layers, str):
        raise ConversionError(
            f"int16_layers takes a list of layer names, got the string {int16_layers!r}: "
            f"write int16_layers=[{int16_layers!r}]."
        )
    if mode != "int8":
        raise ConversionError(
            f"int16_layers needs mode='int8' (16-bit activations for some layers inside an int8 "
            f"file); got mode={mode!r}. mode='int16x8' gives every layer 16-bit activations; the "
            "Edge TPU runs int8 only."
        )
    if keep_float:
        raise ConversionError(
            "int16_layers and keep_float cannot be combined in one file: choose 16-bit "
            "activations or float for the layers the debugger names."
        )
    if int4_weights:
        raise ConversionError(
            "int16_layers cannot be combined with int4_weights: LiteRT's INT4 filters take int8 "
            "activations only."
        )
    if representative_data is None:
        raise ConversionError(
            "int16_layers needs representative_data: the 16-bit ranges of those layers are "
            "calibrated on it."
        )


def _with_16_bit_layers(
    int8_file: bytes,
    source: TraceableModel,
    layers: Sequence[str],
    representative_data: Any,
    num_samples: int,
    isolate: bool,
    timeout: float | None,
) -> bytes:
    """Stage of `int16_layers`: the int8 file with the ops of the named layers, and the ops that
    read their outputs, from its int16x8 file."""
    rows = map_layers(int8_file, source.owner)
    check_layer_names(source.owner, layers, rows, argument="int16_layers")
    named = {
        index for row in rows if set(layers) & {*row.layers, *row.named} for index in row.op_indices
    }
    # a 16-bit output helps only where it is read in 16 bits: its readers run in int16x8 too
    chosen = named | readers_of(int8_file, named)
    converter = plain_converter(source, "int16x8", representative_data, num_samples=num_samples)
    try:
        int16x8_file = run_converter(
            converter, source.name, "int16x8", isolate=isolate, timeout=timeout
        )
    except ConversionError as error:
        reasons = sorted(
            {line.rstrip(".") for line in str(error).splitlines() if "not yet supported" in line}
        )
        raise ConversionError(
            f"int16_layers: the 16-bit ops are taken from the int16x8 conversion of "
            f"'{source.name}', and TF's converter cannot quantize this graph in int16x8"
            + (f" ({' '.join(reasons)})" if reasons else f": {str(error)[:300]}")
            + ". Keep those layers float instead (keep_float=[...]), or convert the whole "
            "model with mode='int16x8', which rewrites such layers for 16 bits."
        ) from error
    return widen_activations(int8_file, int16x8_file, chosen, source.name)


def _float_by_default(source: TraceableModel) -> list[str] | None:
    """Layers an integer file keeps float unless told otherwise (spectrograms), said in a warning."""
    owner = source.owner
    if not compat.is_keras3_model(owner):
        return None  # a QAT model too: its fake quant around a spectrogram does not save it
    chosen = [layer for layer in owner.layers if (catalog.info(layer) or _NO_ROW).keep_float]
    if not chosen:
        return None
    names = [layer.name for layer in chosen]
    reasons = "; ".join(
        f"'{layer.name}' ({type(layer).__name__}): {catalog.info(layer).keep_float}"
        for layer in chosen
    )
    warnings.warn(
        f"convert keeps {names} of '{source.name}' in float inside the integer file ({reasons}). "
        "Pass keep_float=[] to quantize them anyway, or keep_float=[...] to choose.",
        stacklevel=3,
    )
    return names


_NO_ROW = catalog.LayerInfo()


def _refuse_layers_tflite_lacks(source: TraceableModel) -> None:
    """A layer TFLite cannot run in any mode is named, with what to use, before converting."""
    if not compat.is_keras3_model(source.owner):
        return
    for layer in walk_layers(source.owner):
        gap = catalog.tflite_gap(layer)
        if gap is not None:
            raise ConversionError(
                f"'{source.name}' cannot be converted: layer '{layer.name}' "
                f"({type(layer).__name__}): {gap}."
            )


def _refuse_masks_in_int16x8(source: TraceableModel) -> None:
    """A masked average divides by the number of steps kept: TFLite has no 16x8 DIV kernel."""

    if not compat.is_keras3_model(source.owner):
        return
    for layer in walk_layers(source.owner):  # nested models' layers too
        if isinstance(layer, IntegerGlobalAveragePooling1D):
            raise ConversionError(
                f"mode='int16x8' cannot average the masked steps of '{source.name}' (layer "
                f"'{layer.name}'): the average divides by the number of steps kept, and TFLite "
                "has no 16-bit DIV kernel. Convert with mode='int8' (full integer, masks "
                "included) or 'float16'/'dynamic', or pool without a mask."
            )


def _check_trained_ranges(source: TraceableModel, representative_data: Any) -> None:
    """A QAT model converts with the ranges it trained; ranges it never trained would be wrong."""
    if not compat.is_keras3_model(source.owner) or not is_quantization_aware(source.owner):
        return
    untrained = untrained_ranges(source.owner)
    if not untrained:
        return
    named = ", ".join(untrained[:5]) + (
        f" and {len(untrained) - 5} more" if len(untrained) > 5 else ""
    )
    if representative_data is None:
        raise ConversionError(
            f"'{source.name}' is quantization-aware but was never trained: the activation "
            f"ranges of {named} are still the initial (-6, 6), so the int8 file would clip and "
            "round with ranges that fit nothing. Fine-tune it with fit first (quantization-aware "
            "training learns the ranges), or convert the float model with "
            "representative_data=x[:200]."
        )
    warnings.warn(
        f"'{source.name}' is quantization-aware but was never trained: the file uses the initial "
        f"range (-6, 6) for {named}. Fine-tune it with fit first, or convert the float model "
        "with representative_data.",
        stacklevel=5,
    )


def _check_8_bit_activations(source: TraceableModel, mode: str) -> None:
    """A model trained with 16-bit fake quant has no 8-bit ranges: its int8 file would be wrong."""
    if compat.is_keras3_model(source.owner) and 16 in activation_bits(source.owner):
        raise ConversionError(
            f"'{source.name}' was trained with 16-bit activations (quantize_model(..., "
            f"activation_bits=16)), which mode={mode!r} cannot hold. Convert it with "
            "mode='int16x8', or quantize the float model with activation_bits=8 for int8."
        )


def _warn_if_float_ops_left(flatbuffer: bytes, name: str, synthetic: bool) -> None:
    """An integer file that still computes in float is not what the user asked for: say so."""
    report = inspect(flatbuffer)
    float_ops = ", ".join(sorted(set(report.float_ops)))
    if not float_ops:
        return
    float_outputs = [
        name
        for name, index in zip(report.output_names, report.outputs, strict=False)
        if report.tensors[index].dtype.startswith("FLOAT")
    ]
    if synthetic:
        why = (
            "It was calibrated on synthetic inputs because no representative_data was given; a "
            "tensor without a fake-quant range (often the input before a Rescaling layer) then "
            "gets a range that does not match. Pass representative_data=real_inputs."
        )
    else:
        why = (
            "TFLite has no int8 kernel for some op here, or requantizes in float between two "
            "ranges. docs/reference/coverage.md lists the layers concerned and their alternatives "
            "(mode='float16' or 'dynamic' for an all-float file)."
        )
    if float_outputs:
        why = (
            f"Its output{'s' if len(float_outputs) > 1 else ''} {', '.join(float_outputs)} "
            f"{'are' if len(float_outputs) > 1 else 'is'} float32, not int8: a runtime that "
            f"expects an integer output will not take this file. {why}"
        )
    warnings.warn(
        f"The integer model of '{name}' still computes {float_ops} in float. {why}", stacklevel=4
    )
