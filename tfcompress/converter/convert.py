"""`convert`: Keras / tf_keras / SavedModel -> TFLite flatbuffer bytes in every deployment mode."""

from __future__ import annotations

import glob
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfcompress import compat
from tfcompress.converter.calibration import as_dataset_fn, collect_samples, synthetic_samples
from tfcompress.converter.errors import ConversionError
from tfcompress.converter.flatbuffer import read_model, share_vectors
from tfcompress.converter.isolation import DEFAULT_TIMEOUT_S, convert_isolated
from tfcompress.converter.requantize import fold_float_requantize
from tfcompress.converter.source import (
    ModelSource,
    TraceableModel,
    load_source,
    with_token_ids_as_int32,
)
from tfcompress.quantization.integer_friendly import integer_friendly_source

MODES = ("float32", "dynamic", "float16", "int8", "int16x8", "edgetpu")
CALIBRATED_MODES = ("int8", "int16x8", "edgetpu")
_FAKE_QUANT_OPS = {
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
    "FakeQuantWithMinMaxArgs",
}
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
    optimize: Sequence[Any] | None = None,
) -> bytes:
    """Convert a model to a TFLite flatbuffer and return its bytes.

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
            (`tfcompress.converter.int4` lists the runtimes); the Edge TPU does not, so
            `mode="edgetpu"` refuses it (keep its int8 levels).
        keep_float: with `mode="int8"` or `"edgetpu"`, names of Keras layers to keep in float
            inside the integer file (`DEQUANTIZE` before and `QUANTIZE` after their ops; the
            file's input and output stay integer). `tfcompress.ptq.suggest_keep_float` picks
            them for an accuracy target; an unknown name is an error listing the layers.
        optimize: with `mode="int8"` or `"edgetpu"`, PTQ recovery steps applied to a copy of a
            Keras model before converting, always in the order `"fold_bn"`, `"equalize"`,
            `"adaround"`, `"bias_correction"` (`tfcompress.ptq.recovery.STEPS`); an entry may be
            `(name, options)`, e.g. `("equalize", {"relu6": "replace"})`. AdaRound and bias
            correction use `representative_data` and the weight grid of `per_channel`; with
            `int4_weights=True` AdaRound rounds to 4 bits and the file stores INT4.

    In the calibrated modes, where TF's converter requantizes an integer tensor through float
    (`DEQUANTIZE -> QUANTIZE`, e.g. on the input of a QAT model whose first layer is a
    Rescaling or Normalization: the calibrated and the trained input ranges differ), the pair is
    rewritten as one integer `QUANTIZE` (see `tfcompress.converter.requantize`).

    A model still holding its training wrappers (pruned and not passed through
    `strip_pruning`, clustered and not passed through `strip_clustering`) is stripped here with
    those functions, and a warning says so: the file holds the pruned zeros and the clustered
    values either way, and your model object is left as it is. A legacy `tf_keras` model
    converts as it is; one still wrapped by tfmot is refused with the tfmot call to make.

    Returns:
        The flatbuffer as `bytes`; write it with `tfcompress.save_tflite`.

    Raises:
        ConversionError: the model, the mode or the calibration data cannot be used; the message
            says what to change. A crash of TF's converter, or an isolated conversion running
            past `timeout`, is one too.

    Isolation forks only for the calibrated modes and costs one `fork()` plus the flatbuffer's
    trip through a pipe: 0.04 s with a MobileNetV2 (alpha 0.35, 96x96) in memory; its int8
    conversion took 1.71 s isolated against 1.57 s in-process (1.09x, best of 3 alternating
    rounds on a quiet 2-core machine, benchmarks/isolation_bench.py).

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> split = load_digits()
        >>> flatbuffer = tfc.convert(build_digits_cnn(), "int8", split.x_train[:50])
        >>> tfc.inspect(flatbuffer).float_ops
        []
    """
    if mode not in MODES:
        raise ConversionError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
    if timeout is not None and not timeout > 0:
        raise ConversionError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}."
        )
    if representative_data is not None and mode not in CALIBRATED_MODES:
        warnings.warn(
            f"mode={mode!r} does not calibrate: representative_data is ignored.", stacklevel=2
        )
    _check_int4_mode(int4_weights, mode)
    four_bit = False
    if optimize:  # PTQ recovery steps rewrite the float model first (tfcompress.ptq.recovery)
        from tfcompress.ptq.recovery.steps import prepare_for_convert

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
        )
    source = load_source(model, input_signature, safe_mode, custom_objects)
    source = _without_training_wrappers(source, input_signature)
    if mode == "int16x8":
        source = _without_fake_quant(source, representative_data, input_signature)
    elif mode in ("int8", "edgetpu"):
        _check_8_bit_activations(source, mode)
    if mode in CALIBRATED_MODES and input_signature is None:  # token ids stay whole numbers
        source = with_token_ids_as_int32(source)
    # layers whose ops have no int8 kernel (fused RNN, NEG, SQUARE, ELU) -> int8-friendly ones;
    # after int16x8's baking, so a baked QAT model gets the same rewrite as a float one
    source = integer_friendly_source(source, mode)
    if mode == "int16x8":
        _refuse_masks_in_int16x8(source)
    if mode == "edgetpu":
        source = source.with_batch_size(1)
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
    if keep_float is not None:  # calibrate here, quantize with a denylist in tfcompress.ptq
        from tfcompress.ptq.selective import check_keep_float_mode, check_layer_names

        check_keep_float_mode(mode)
        check_layer_names(source.owner, keep_float, [])  # before the calibration's cost
        converter._experimental_calibrate_only = True
    flatbuffer = _run_converter(
        converter,
        source.name,
        mode,
        isolate=isolate,
        timeout=timeout,
        legacy=compat.is_tf_keras_model(source.owner),
    )
    if keep_float is not None:
        from tfcompress.ptq.selective import quantize_for_convert

        flatbuffer = quantize_for_convert(flatbuffer, converter, source.owner, keep_float, mode)
    if mode in CALIBRATED_MODES:  # the converter's float requantize pairs become integer ops
        flatbuffer, _ = fold_float_requantize(flatbuffer)
    if mode != "edgetpu":  # the Edge TPU compiler gets the converter's own layout
        flatbuffer = share_vectors(flatbuffer)
    read_model(flatbuffer, origin=f"the converted '{source.name}'")  # never hand back a broken file
    if mode in ("int8", "edgetpu") and not keep_float:
        _warn_if_float_ops_left(flatbuffer, source.name, synthetic=representative_data is None)
    if four_bit:  # AdaRound's 4-bit grid, which the converter stored as int8 values
        from tfcompress.ptq.recovery.four_bit import four_bit_levels

        flatbuffer = four_bit_levels(flatbuffer, require=True).flatbuffer
    if int4_weights:
        from tfcompress.converter.int4 import pack_int4

        flatbuffer = pack_int4(flatbuffer, require=True).flatbuffer
    return flatbuffer


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


_PRUNING_WRAPPERS = ("PruneLowMagnitude",)
_CLUSTERING_WRAPPERS = ("ClusterWeights", "ClusterCustomWeights")


def _wrapper_names(model: Any, classes: tuple[str, ...]) -> list[str]:
    """Names of the layers (nested models included) whose class is one of `classes`."""
    found = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ in classes:
            found.append(layer.name)
        elif hasattr(layer, "layers"):
            found.extend(_wrapper_names(layer, classes))
    return found


def _without_training_wrappers(
    source: TraceableModel, input_signature: Sequence[tf.TensorSpec] | None
) -> TraceableModel:
    """Strip pruning and clustering wrappers left in the model, and say so once."""
    owner = source.owner
    pruned = _wrapper_names(owner, _PRUNING_WRAPPERS)
    clustered = _wrapper_names(owner, _CLUSTERING_WRAPPERS)
    if not pruned and not clustered:
        return source
    if compat.is_tf_keras_model(owner):
        raise ConversionError(
            f"The tf_keras model '{source.name}' still holds tfmot's training wrappers "
            f"({', '.join(pruned + clustered)}). Take the legacy route first: in the process "
            "that trained it (TF_USE_LEGACY_KERAS=1), call tfmot.sparsity.keras.strip_pruning / "
            "tfmot.clustering.keras.strip_clustering, then pass the stripped model to convert."
        )
    if not compat.is_keras3_model(owner):
        return source
    stripped = owner
    done = []
    try:
        if pruned:
            from tfcompress.pruning import strip_pruning

            stripped = strip_pruning(stripped)
            done.append(f"strip_pruning (pruned layers: {', '.join(pruned)})")
        if clustered and _wrapper_names(stripped, _CLUSTERING_WRAPPERS):
            from tfcompress.sharing import strip_clustering

            stripped = strip_clustering(stripped)
            done.append(f"strip_clustering (clustered layers: {', '.join(clustered)})")
    except Exception as error:
        raise ConversionError(
            f"'{source.name}' still holds training wrappers ({', '.join(pruned + clustered)}) and "
            f"stripping them failed ({type(error).__name__}: {error}). Call "
            "tfcompress.strip_pruning / tfcompress.strip_clustering on it yourself and convert "
            "the result."
        ) from error
    warnings.warn(
        f"convert: '{source.name}' was not stripped; applied {' and '.join(done)} to a copy "
        "before converting (your model is unchanged). Strip it yourself to silence this.",
        stacklevel=3,
    )
    return load_source(stripped, input_signature)


def _without_fake_quant(
    source: TraceableModel, representative_data: Any, input_signature: Any
) -> TraceableModel:
    """TF 2.21 cannot export fake quant in int16x8: bake a QAT model's weights in and calibrate."""
    from tfcompress.quantization.export import is_quantization_aware, strip_quantization

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


def _refuse_masks_in_int16x8(source: TraceableModel) -> None:
    """A masked average divides by the number of steps kept: TFLite has no 16x8 DIV kernel."""
    import keras

    from tfcompress.quantization.masking import IntegerGlobalAveragePooling1D

    def walk(model: Any) -> Iterator[Any]:  # nested models' layers too
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    if not compat.is_keras3_model(source.owner):
        return
    for layer in walk(source.owner):
        if isinstance(layer, IntegerGlobalAveragePooling1D):
            raise ConversionError(
                f"mode='int16x8' cannot average the masked steps of '{source.name}' (layer "
                f"'{layer.name}'): the average divides by the number of steps kept, and TFLite "
                "has no 16-bit DIV kernel. Convert with mode='int8' (full integer, masks "
                "included) or 'float16'/'dynamic', or pool without a mask."
            )


def _check_8_bit_activations(source: TraceableModel, mode: str) -> None:
    """A model trained with 16-bit fake quant has no 8-bit ranges: its int8 file would be wrong."""
    from tfcompress.quantization.export import activation_bits

    if compat.is_keras3_model(source.owner) and 16 in activation_bits(source.owner):
        raise ConversionError(
            f"'{source.name}' was trained with 16-bit activations (quantize_model(..., "
            f"activation_bits=16)), which mode={mode!r} cannot hold. Convert it with "
            "mode='int16x8', or quantize the float model with activation_bits=8 for int8."
        )


def _warn_if_float_ops_left(flatbuffer: bytes, name: str, synthetic: bool) -> None:
    """An integer file that still computes in float is not what the user asked for: say so."""
    from tfcompress.converter.flatbuffer import inspect

    float_ops = ", ".join(sorted(set(inspect(flatbuffer).float_ops)))
    if not float_ops:
        return
    if synthetic:
        why = (
            "It was calibrated on synthetic inputs because no representative_data was given; a "
            "tensor without a fake-quant range (often the input before a Rescaling layer) then "
            "gets a range that does not match. Pass representative_data=real_inputs."
        )
    else:
        why = (
            "TFLite has no int8 kernel for some op here, or requantizes in float between two "
            "ranges. docs/coverage.md lists the layers concerned and their alternatives "
            "(mode='float16' or 'dynamic' for an all-float file)."
        )
    warnings.warn(
        f"The integer model of '{name}' still computes {float_ops} in float. {why}", stacklevel=3
    )


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
        return collect_samples(data, source.input_specs, num_samples, source.name)
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


def _run_converter(
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
            "'float16', or replace that layer (docs/coverage.md lists what converts); when it "
            "names a shape, give the model static input shapes."
        )
        if mode == "int16x8" and "Empty min/max" in str(error):
            advice = (
                "In int16x8, TF's quantizer cannot calibrate integer tensors, such as the token "
                "ids an Embedding reads: convert this model with mode='int8' (full integer), "
                "'float16' or 'dynamic'."
            )
        raise ConversionError(
            f"The TFLite converter could not convert '{name}' to mode={mode!r}; its own error is "
            f"below. {advice}\n{summary}" + (_LEGACY_ROUTE if legacy else "")
        ) from error


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files of earlier saves to `target` whose process has died.

    A save killed mid-write (SIGKILL, power loss) leaves its `.<name>.<pid>.<random>.tmp` file;
    the target itself is untouched. A live process's temporary (a concurrent save) is kept.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp")
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = pattern.fullmatch(leftover.name)
        if match is not None and not _process_alive(int(match.group(1))):
            leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def save_tflite(flatbuffer: bytes, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a TFLite flatbuffer atomically (temporary file, then rename).

    Args:
        flatbuffer: bytes returned by `convert`.
        path: where to write; parent folders are created.
        overwrite: replace an existing file. Without it an existing file is an error.

    Returns:
        The path written.

    Example:
        >>> import tempfile, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> out = tfc.save_tflite(tfc.convert(build_digits_cnn()), tempfile.mkdtemp() + "/m.tflite")
        >>> out.stat().st_size > 0
        True
    """
    if not isinstance(flatbuffer, bytes | bytearray):
        raise TypeError(
            f"save_tflite expects the bytes returned by convert(); got {type(flatbuffer).__name__}."
        )
    read_model(bytes(flatbuffer), origin="the bytes given to save_tflite")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"'{target}' is a directory: give a file path such as '{target}/model.tflite'."
        )
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"'{target}' already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(flatbuffer)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _default_file_mode())  # mkstemp makes 0600; give what open() would
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
