"""Run TFLite models on the LiteRT interpreter: predictions, accuracy and latency."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.errors import TFLiteFileError
from tfcompress.tflite.flatbuffer import TFLiteSource, inspect, load_bytes, validate

_METRICS = ("accuracy", "mae", "mse")


def make_interpreter(
    source: TFLiteSource, threads: int = 1, builtin_only: bool = False, reference: bool = False
) -> Any:
    """A LiteRT interpreter for a validated flatbuffer: XNNPACK, unless `builtin_only` (LiteRT's
    optimized builtin kernels) or `reference` (its reference kernels, which TFLM's follow)."""
    data, origin = load_bytes(source)
    validate(data, origin)  # a corrupted file gets a clear error, never a crash of the process
    interpreter_class = compat.litert_interpreter_class()
    try:
        with _without_native_info_lines():
            interpreter = interpreter_class(
                model_content=data,
                num_threads=threads,
                experimental_op_resolver_type=compat.litert_op_resolver(builtin_only, reference),
            )
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise TFLiteFileError(_load_failure(data, origin, str(error).strip())) from error
    return interpreter


def xnnpack_takes_ops(source: TFLiteSource) -> bool:
    """Whether LiteRT's XNNPACK delegate runs any op of the file. When it runs none (an int16x8
    file: XNNPACK has no 16-bit activation kernels), LiteRT's builtin kernels run every op.

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.random.rand(16, 4).astype("float32")
        >>> xnnpack_takes_ops(tfc.convert(model, "int8", x, check=False))
        True
        >>> xnnpack_takes_ops(tfc.convert(model, "int16x8", x, check=False))
        False
    """
    return "DELEGATE" in compat.litert_op_names(make_interpreter(source))


@contextlib.contextmanager
def _without_native_info_lines() -> Iterator[None]:
    """Drop LiteRT's native "INFO: Created ... delegate" lines; pass every other stderr line on.

    LiteRT's C++ logger writes straight to file descriptor 2 and has no Python switch.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): leave it alone
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                if not line.startswith("INFO: ")
            ]
            if kept:
                sys.stderr.write("".join(kept))


def _load_failure(data: bytes, origin: str, detail: str) -> str:
    """Why LiteRT refused a file that parses, and what would run it."""
    report = inspect(data)
    custom = sorted(
        {op.name.removeprefix("CUSTOM:") for op in report.all_ops if op.name.startswith("CUSTOM:")}
    )
    missing = [name for name in custom if name in detail]
    if missing or "unresolved custom op" in detail:
        names = ", ".join(missing or custom)
        return (
            f"{origin} uses the custom op {names}, which this LiteRT runtime does not have. The "
            "file needs a runtime built with that op (the one it was made for, or a LiteRT build "
            f"that registers {names}); re-converting will not help unless you own the source "
            f"model. LiteRT said: {detail[:300]}"
        )
    if "Didn't find op for builtin opcode" in detail:
        return (
            f"{origin} uses an op version this LiteRT runtime does not know: {detail[:300]} "
            "Run it with a newer ai-edge-litert, or convert the source model with the TensorFlow "
            "that matches this runtime."
        )
    if "XNNPack" in detail or "XNNPACK" in detail:
        return (
            f"LiteRT's XNNPACK delegate cannot run {origin}: {detail[:300]} Run it with the "
            "builtin kernels: builtin_only=True (CLI: --builtin)."
        )
    return (
        f"LiteRT cannot load {origin}: {detail[:400]}. The file is corrupted, or was written for "
        "another runtime."
    )


def run_tflite(
    source: TFLiteSource,
    x: np.ndarray | list[np.ndarray],
    batch_size: int = 256,
    threads: int = 1,
    builtin_only: bool = False,
    progress: bool = False,
    reference: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Run a TFLite model on float inputs and return float outputs.

    `builtin_only` runs LiteRT's optimized builtin kernels instead of XNNPACK; `reference` its
    reference kernels (what TensorFlow Lite Micro's kernels follow).

    Integer inputs and outputs are quantized and dequantized with the tensors' own scale and
    zero point, so an int8 model is called exactly like the Keras model it came from.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> flatbuffer = tfc.convert(build_digits_cnn(), "float32")
        >>> tfc.converter.run_tflite(flatbuffer, np.zeros((3, 8, 8, 1), np.float32)).shape
        (3, 10)
    """
    interpreter = make_interpreter(source, threads, builtin_only, reference)
    inputs = x if isinstance(x, list | tuple) else [x]
    input_details = interpreter.get_input_details()
    if len(inputs) != len(input_details):
        raise ValueError(f"The model has {len(input_details)} inputs; got {len(inputs)} arrays.")
    for detail, array in zip(input_details, inputs, strict=True):
        if tuple(np.shape(array)[1:]) != tuple(detail["shape"][1:]):
            raise ValueError(
                f"Input '{detail['name']}' expects samples of shape "
                f"{tuple(int(d) for d in detail['shape'][1:])}; "
                f"got an array of shape {np.shape(array)}."
            )
    count = len(inputs[0])
    dynamic_batch = all(d["shape_signature"][0] == -1 for d in input_details)
    step = batch_size if dynamic_batch else int(input_details[0]["shape"][0])
    chunks: list[list[np.ndarray]] = []
    starts = range(0, count, step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluating", unit="batch", leave=False)
    for start in starts:
        batch = [np.asarray(a[start : start + step]) for a in inputs]
        chunks.append(_invoke(interpreter, input_details, batch, dynamic_batch))
    outputs = [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]
    return outputs[0] if len(outputs) == 1 else outputs


def _invoke(
    interpreter: Any, details: list[dict], batch: list[np.ndarray], dynamic: bool
) -> list[np.ndarray]:
    rows = len(batch[0])
    if dynamic:
        for detail in details:
            interpreter.resize_tensor_input(detail["index"], [rows, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    for detail, array in zip(details, batch, strict=True):
        interpreter.set_tensor(detail["index"], _quantize(array, detail))
    # TFLite's fused LSTM/RNN kernels keep their state in variable tensors that outlive an
    # invoke: without a reset, each batch would start from the last one's final state
    interpreter.reset_all_variables()
    try:
        interpreter.invoke()
    except RuntimeError as error:
        detail = str(error).strip()
        if "custom op" in detail:
            raise TFLiteFileError(
                f"LiteRT failed to run a custom op of the model: {detail[:400]}. The file needs a "
                "runtime that has that op."
            ) from error
        raise TFLiteFileError(f"LiteRT failed to run the model: {detail[:400]}") from error
    results = []
    for detail in interpreter.get_output_details():
        results.append(_dequantize(interpreter.get_tensor(detail["index"]), detail)[:rows])
    return results


def _quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """Inputs as `model.predict` takes them, in the file's input type.

    Real values (floats, or integers of another type than the file's, such as uint8 images
    for an int8 file) are quantized with the input's scale; integers of the file's own type
    are taken as already quantized.
    """
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer) or array.dtype == dtype:
        return array.astype(dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return array.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(array.dtype, np.integer) or scale == 0:
        return array.astype(np.float32)
    return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)


def evaluate_tflite(
    source: TFLiteSource,
    x: np.ndarray | list[np.ndarray],
    y: np.ndarray,
    metric: str | None = None,
    batch_size: int = 256,
    threads: int = 1,
    builtin_only: bool = False,
    progress: bool = False,
    output: int | str | None = None,
) -> float:
    """Score a TFLite model on the LiteRT interpreter.

    Args:
        source: a `.tflite` path or bytes.
        x: float inputs, as you would pass to `model.predict`.
        y: integer class labels for "accuracy" (top-1 of the outputs, per pixel for a dense
            map), or targets for "mae"/"mse".
        metric: "accuracy", "mae" or "mse"; by default "accuracy" when `y` holds class labels
            (whole numbers, one per sample or pixel, or one-hot rows) and "mae" otherwise
            (regression targets).
        batch_size: samples per invocation when the model takes a dynamic batch.
        threads: interpreter threads.
        builtin_only: use the builtin kernels instead of the default XNNPACK delegate.
        progress: show a progress bar.
        output: which output to score when the model has several: its position, or its name
            (the signature's output key or the tensor name, as `inspect(...).output_names`
            lists them). Required for a multi-output model.

    Raises:
        ValueError: a multi-output model without `output`, or an `output` that does not exist;
            the message lists the outputs.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> split = load_digits()
        >>> flatbuffer = tfc.convert(build_digits_cnn(), "float32")
        >>> 0.0 <= tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test) <= 1.0
        True
    """
    return evaluate_with_metric(
        source, x, y, metric, batch_size, threads, builtin_only, progress, output
    )[1]


def evaluate_with_metric(
    source: TFLiteSource,
    x: np.ndarray | list[np.ndarray],
    y: np.ndarray,
    metric: str | None = None,
    batch_size: int = 256,
    threads: int = 1,
    builtin_only: bool = False,
    progress: bool = False,
    output: int | str | None = None,
) -> tuple[str, float]:
    """`evaluate_tflite`'s score with the name of the metric it chose."""
    if metric is not None and metric not in _METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {', '.join(_METRICS)}.")
    report = inspect(source)
    position = _output_position(report.output_names, output, report.origin)
    outputs = run_tflite(source, x, batch_size, threads, builtin_only, progress)
    if isinstance(outputs, list):
        outputs = outputs[position]
    y = np.asarray(y)
    if len(y) != len(outputs):
        raise ValueError(f"x has {len(outputs)} samples but y has {len(y)}.")
    labels_given = _holds_class_labels(outputs, y)
    metric = metric or ("accuracy" if labels_given else "mae")
    if metric == "accuracy" and not labels_given:
        raise ValueError(
            f"metric='accuracy' needs class labels, but y holds real values (shape "
            f"{tuple(y.shape)}, dtype {y.dtype}) for outputs of shape {tuple(outputs.shape)}: "
            "score a regression with metric='mae' or 'mse'."
        )
    if metric == "accuracy":
        predicted = outputs.argmax(axis=-1) if outputs.shape[-1] > 1 else (outputs[..., 0] > 0.5)
        labels = y.argmax(axis=-1) if y.ndim == outputs.ndim and y.shape[-1] > 1 else y.reshape(-1)
        return metric, float(np.mean(predicted.reshape(-1) == labels))
    error = outputs.reshape(len(y), -1) - y.reshape(len(y), -1)
    return metric, float(np.mean(np.abs(error)) if metric == "mae" else np.mean(error**2))


def _holds_class_labels(outputs: np.ndarray, y: np.ndarray) -> bool:
    """Whether `y` is class labels for `outputs`: ids (one per sample or pixel) or one-hot rows."""
    whole = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    if not whole and np.issubdtype(y.dtype, np.floating):
        whole = bool(np.all(np.mod(y, 1) == 0))
    if not whole:
        return False
    if outputs.shape[-1] > 1:  # scores per class: ids of one fewer axis, or one-hot rows
        ids = y.size * outputs.shape[-1] == outputs.size
        one_hot = y.shape == outputs.shape and bool(np.all((y == 0) | (y == 1)))
        return ids or one_hot
    return bool(np.all((y == 0) | (y == 1)))  # one sigmoid output: binary labels


def _output_position(names: list[str], output: int | str | None, origin: str) -> int:
    """The position of the output to score; never a silent choice among several."""
    listed = ", ".join(f"{i}: '{name}'" for i, name in enumerate(names))
    if output is None:
        if len(names) > 1:
            raise ValueError(
                f"{origin} has {len(names)} outputs ({listed}); say which one to score with "
                "output=<position or name> (CLI: --output)."
            )
        return 0
    if isinstance(output, bool) or not isinstance(output, int | str | np.integer):
        raise TypeError(f"output must be a position or a name; got {type(output).__name__}.")
    if isinstance(output, str) and not output.lstrip("-").isdigit():
        if output not in names:
            raise ValueError(f"{origin} has no output named '{output}'; its outputs are {listed}.")
        return names.index(output)
    position = int(output)
    if not 0 <= position < len(names):
        raise ValueError(f"output={position} is out of range: {origin} has outputs {listed}.")
    return position


@dataclass
class Latency:
    """Latency of one invocation, over `runs` timed runs after warm-up."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    threads: int
    delegate: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def benchmark_tflite(
    source: TFLiteSource,
    threads: int = 1,
    runs: int = 100,
    warmup: int = 10,
    builtin_only: bool = False,
) -> Latency:
    """Median and 90th-percentile latency of one batch-1 invocation on the LiteRT interpreter.

    Args:
        source: a `.tflite` path or bytes.
        threads: interpreter threads.
        runs: timed invocations; warmup: untimed invocations first.
        builtin_only: use the builtin kernels instead of the default XNNPACK delegate.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> latency = tfc.benchmark_tflite(tfc.convert(build_digits_cnn()), runs=5, warmup=1)
        >>> latency.median_ms > 0
        True
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(
            f"Need runs >= 1, warmup >= 0 and threads >= 1; got {runs}, {warmup}, {threads}."
        )
    interpreter = make_interpreter(source, threads, builtin_only)
    details = interpreter.get_input_details()
    for detail in details:
        if detail["shape_signature"][0] == -1:
            interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in details:
        sample = rng.random(detail["shape"]).astype(np.float32)
        interpreter.set_tensor(detail["index"], _quantize(sample, detail))
    for _ in range(warmup):
        interpreter.invoke()
    timings = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        timings[i] = (time.perf_counter() - start) * 1000.0
    return Latency(
        median_ms=float(np.median(timings)),
        p90_ms=float(np.percentile(timings, 90)),
        mean_ms=float(timings.mean()),
        min_ms=float(timings.min()),
        runs=runs,
        threads=threads,
        delegate="builtin" if builtin_only else "xnnpack",
    )
