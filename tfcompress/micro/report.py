"""`check`: does a TFLite file run on TensorFlow Lite Micro, in how much RAM and flash, and how
close are its outputs to LiteRT's reference kernels."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tfcompress.micro import ops as micro_ops
from tfcompress.micro.compress import DECODE_OP, decompress
from tfcompress.micro.runner import (
    DEFAULT_TIMEOUT_S,
    MAX_ARENA,
    Attempt,
    attempt,
    smallest_arena,
    tflm_runtime,
    tflm_version,
)
from tfcompress.tflite.errors import TFLiteFileError
from tfcompress.tflite.flatbuffer import (
    TFLiteReport,
    TFLiteSource,
    inspect,
    load_bytes,
    pack,
    read_model,
    validate,
)
from tfcompress.tflite.runtime import _dequantize, make_interpreter
from tfcompress.tflite.runtime import _quantize as _quantize_for

DEFAULT_ARENA_MARGIN = 0.25
ARENA_ALIGNMENT = 16  # TFLM aligns the arena and its tensors to 16 bytes
_ITEM_BYTES = {"INT8": 1, "UINT8": 1, "BOOL": 1, "INT16": 2, "FLOAT16": 2, "INT4": 1}
_FIRST_ARENA = 64 * 1024
_SUFFIX = re.compile(r"^(.*)_\d+$")
_MISSING_BUILTIN = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
_NODE_FAILED = re.compile(r"Node (\S+) \(number (\d+)\) failed to (?:prepare|invoke)")
_MEMORY = ("Failed to allocate", "Too many buffers", "arena")


@dataclass
class FailingOp:
    """The op TFLM stopped at, where it came from, and what to do.

    Attributes:
        name: the op (`"TILE"`, or `"CUSTOM:<name>"`).
        index: its position in its subgraph's execution order (what `tfc.inspect` lists).
        subgraph: the subgraph holding it (0 is the model's graph).
        layer: the Keras layer named in the op's output tensor name (the converter names
            tensors `"<model>/<layer>/<op>"`), or "" when the name tells none.
        tensor: that output tensor's name.
        advice: what to change so that the file runs on TFLM.

    Example:
        >>> from tfcompress.micro import FailingOp
        >>> FailingOp("TILE", 3, 0, "up", "m_1/up_1/Repeat/Tile", "...").layer
        'up'
    """

    name: str
    index: int
    subgraph: int
    layer: str
    tensor: str
    advice: str


@dataclass
class OutputDifference:
    """How far TFLM's values of one output are from LiteRT's on the same inputs.

    LiteRT has two sets of builtin kernels: its reference kernels (BUILTIN_REF) and its
    optimized ones (without XNNPACK). TFLM's kernels follow the reference ones for most ops
    (convolutions, ADD, pooling) and compute like the optimized ones where LiteRT's reference
    kernel is off (SUM: its reference kernel is far from the float model, TFLM and the optimized
    kernel are not). The figure is the smaller of the two differences, and `compared_with` says
    which (docs/dev/decisions/2026-12-06-tflm-vs-reference.md).

    Attributes:
        output: the output's name (its signature key, else its tensor name).
        dtype: its type in the file (`"INT8"`, `"INT16"`, `"FLOAT32"`).
        max_difference: the largest difference over every value of every sample: in
            quantization steps for an integer output, in the output's own units for a float one.
        unit: `"steps"` or `"absolute"`.
        differing: the share of values that differ at all.
        samples: how many samples were compared.
        logits_max_difference: for an output that a SOFTMAX op writes, the largest difference
            of that op's input (the logits), in the logits' own steps; None for other outputs.
            TFLM's and LiteRT's SOFTMAX agree on the same logits, but one step of a logit
            moves the probabilities by several of their (1/256) steps
            (docs/dev/decisions/2026-12-06-tflm-vs-reference.md).
        compared_with: the LiteRT kernels nearest to TFLM's, which the figures are against.

    Example:
        >>> from tfcompress.micro import OutputDifference
        >>> OutputDifference("logits", "INT8", 1.0, "steps", 0.02, 100).max_difference
        1.0
    """

    output: str
    dtype: str
    max_difference: float
    unit: str
    differing: float
    samples: int
    logits_max_difference: float | None = None
    compared_with: str = "LiteRT's reference kernels"


REFERENCE_KERNELS = "LiteRT's reference kernels"
OPTIMIZED_KERNELS = "LiteRT's optimized builtin kernels"


@dataclass
class MicroReport:
    """What `tfcompress.micro.check` measured: whether TFLM runs the file, its RAM and flash.

    Attributes:
        origin: the file (or "the given TFLite bytes").
        runs: TFLM allocated the file's tensors and invoked it (on `data` when given).
        error: what TFLM said when it did not ("" when it runs).
        failing_op: the op it stopped at, when TFLM's messages name one.
        arena_bytes: the smallest tensor arena with which TFLM allocates and invokes the file,
            measured (see `check`); None when it does not run.
        arena_margin: the share added for `recommended_arena_bytes`.
        recommended_arena_bytes: `arena_bytes` plus the margin, rounded up to 16 bytes.
        flash_bytes: the file's size: what the model adds to flash (TFLM's code comes on top).
        constant_bytes: of which the model's constant data (weights, biases, constant tensors).
        op_counts: how many times each op appears, over every subgraph.
        missing_ops: the file's ops TFLM has no kernel for (its op resolver's list).
        outputs: one `OutputDifference` per output, when `data` was given and the file runs.
        tflm_version: the `tflite-micro` package that ran the file.
        sha256: the file's SHA-256 (`export` checks a report against its file with it).
        probes: how many child processes the check ran (one interpreter each); a file whose
            arena this process measured before is not bisected again.
        notes: anything else worth knowing (a LiteRT failure on the reference side, ...).
        compressed_tensors: how many constant tensors the file stores compressed (look-up
            tables or zero masks that TFLM's `TFLM_DECODE` op expands, `tfc.micro.compress`);
            0 for a plain file.
        uncompressed_flash_bytes: for such a file, the size of the same file with its tables
            decoded (`tfc.micro.decompress`); `flash_bytes` divided by it is what compression
            saves. None for a plain file.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> report = tfc.micro.check(tfc.convert(build_digits_cnn(width=4), "int8", x))
        >>> report.runs, report.arena_bytes > 0, report.flash_bytes > report.constant_bytes
        (True, True, True)
    """

    origin: str
    runs: bool
    error: str
    failing_op: FailingOp | None
    arena_bytes: int | None
    arena_margin: float
    recommended_arena_bytes: int | None
    flash_bytes: int
    constant_bytes: int
    op_counts: dict[str, int]
    missing_ops: list[str]
    outputs: list[OutputDifference] = field(default_factory=list)
    tflm_version: str = ""
    sha256: str = ""
    probes: int = 0
    notes: list[str] = field(default_factory=list)
    compressed_tensors: int = 0
    uncompressed_flash_bytes: int | None = None

    @property
    def resolver_size(self) -> int:
        """N of the `MicroMutableOpResolver<N>` the file needs: its number of distinct ops."""
        return len(self.op_counts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field (and `resolver_size`)."""
        payload = asdict(self)
        payload["resolver_size"] = self.resolver_size
        return payload

    def summary(self) -> str:
        """A few readable lines, as `tfcompress micro` prints them."""
        verdict = "runs" if self.runs else "does NOT run"
        lines = [f"{self.origin} on TensorFlow Lite Micro ({self.tflm_version}): {verdict}"]
        failing = self.failing_op
        if not self.runs:
            if failing is not None:
                source = f", from Keras layer '{failing.layer}'" if failing.layer else ""
                lines.append(
                    f"  failing op: {failing.name} (op {failing.index} of subgraph "
                    f"{failing.subgraph}{source})"
                )
            lines.append(f"  TFLM said: {self.error}")
            if failing is not None:
                lines.append(f"  what to do: {failing.advice}")
            if self.missing_ops:
                lines.append("  ops TFLM has no kernel for: " + ", ".join(self.missing_ops))
        if self.arena_bytes is not None and self.recommended_arena_bytes is not None:
            lines.append(
                f"  tensor arena: {self.arena_bytes:,} bytes measured (the smallest that "
                f"allocates and invokes; {self.arena_bytes - 1:,} fails), "
                f"{self.recommended_arena_bytes:,} recommended (+{self.arena_margin:.0%}, "
                f"rounded up to {ARENA_ALIGNMENT})"
            )
        lines.append(
            f"  flash: {self.flash_bytes:,} bytes of model ({self.constant_bytes:,} of them "
            "constant data), plus TFLM's code"
        )
        if self.uncompressed_flash_bytes:
            lines.append(
                f"  compressed: {self.compressed_tensors} tensor(s) decoded by TFLM_DECODE, "
                f"{self.flash_bytes / self.uncompressed_flash_bytes:.2f}x the "
                f"{self.uncompressed_flash_bytes:,} bytes of the file decoded"
            )
        counts = ", ".join(f"{name} x{count}" for name, count in sorted(self.op_counts.items()))
        lines.append(f"  ops ({self.resolver_size} distinct): {counts}")
        for difference in self.outputs:
            unit = "step(s)" if difference.unit == "steps" else "(absolute)"
            logits = (
                f" (its logits, before SOFTMAX: at most {difference.logits_max_difference:g})"
                if difference.logits_max_difference is not None
                else ""
            )
            lines.append(
                f"  output '{difference.output}' ({difference.dtype}): at most "
                f"{difference.max_difference:g} {unit} from {difference.compared_with}{logits}, "
                f"{difference.differing:.1%} of values differ, {difference.samples} samples"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def check(
    model_file: TFLiteSource,
    data: np.ndarray | list[np.ndarray] | None = None,
    *,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> MicroReport:
    """Load a TFLite file on TensorFlow Lite Micro's interpreter and measure what firmware needs.

    TFLM runs on this machine through the `tflite-micro` package (TFLM's C++ interpreter and
    reference kernels built for the host). Every load runs in a forked child process, so a file
    that makes TFLM crash ends in a report that says so, never in the end of your process.

    The arena is measured, not estimated. TFLM's Python interpreter takes an arena size, and
    what its `RecordingMicroAllocator` reports after allocation can leave out the memory
    planner's scratch. So `check` bisects: each probe loads the file on a fresh interpreter
    with a given arena and invokes it; `arena_bytes` is an arena seen to work, and one byte
    less was seen to fail (once per file and process: the same bytes are not bisected again,
    so `convert(..., target="micro")` followed by `check` bisects once). It is exact for TFLM's
    Python interpreter on this 64-bit host and an upper bound for firmware with the reference
    kernels (docs/dev/decisions/2026-12-06-tflm-arena.md). Optimized kernels (CMSIS-NN, ESP-NN)
    may ask for scratch buffers the reference kernels do not: `recommended_arena_bytes` adds
    `arena_margin` for that.

    Args:
        model_file: a `.tflite` path or the bytes `tfcompress.convert` returns.
        data: inputs as `model.predict` takes them, batch first, one array per model input:
            real values (floats, or integers of another type, such as uint8 images for an int8
            file) are quantized with the input's scale and zero point; integers of the file's
            own input type are taken as already quantized. Given, TFLM and LiteRT's reference
            kernels (LiteRT's `BUILTIN_REF` resolver) run every sample; `outputs` holds their
            largest difference (and, for an output a SOFTMAX writes, that of its logits). For a file with look-up tables (`tfc.micro.compress`), LiteRT runs it
            decoded (`tfc.micro.decompress`), since it has no `TFLM_DECODE` kernel.
        arena_margin: share of the measured arena added to the recommended one (0.25: +25 %).
        timeout: seconds each child process may run.

    Returns:
        A `MicroReport`: `runs`, `failing_op` (with advice), `arena_bytes`,
        `recommended_arena_bytes`, `flash_bytes`, `op_counts`, `outputs`; `summary()` prints it.

    Raises:
        MicroUnavailableError: `tflite-micro` is not installed (the message says
            `pip install 'tfcompress[micro]'`); it is a `MicroError` and an `ImportError`.
        TFLiteFileError: the file is not a readable TFLite flatbuffer (checked before TFLM
            sees it).
        ValueError: `data` does not fit the model's inputs, or `arena_margin` is not in [0, 10].

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> report = tfc.micro.check(tfc.convert(build_digits_cnn(width=4), "int8", x), x)
        >>> report.runs, report.outputs[0].unit, report.outputs[0].max_difference <= 2
        (True, 'steps', True)
        >>> up = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.UpSampling2D()])
        >>> x_up = np.random.default_rng(0).random((8, 4, 4, 1), dtype=np.float32)
        >>> report = tfc.micro.check(tfc.convert(up, "int8", x_up))
        >>> report.runs, report.failing_op.name
        (False, 'TILE')
    """
    if not isinstance(arena_margin, int | float) or not 0 <= arena_margin <= 10:
        raise ValueError(f"arena_margin must be a share between 0 and 10; got {arena_margin!r}.")
    tflm_runtime()  # a missing package says how to install it, before anything else runs
    content, origin = load_bytes(model_file)
    validate(content, origin)  # a damaged file stops here with a clear TFLiteFileError
    info = inspect(content)
    inputs = _inputs_of(data, info) if data is not None else None
    counts = (len(info.inputs), len(info.outputs))
    missing = sorted({op.name for op in info.all_ops if micro_ops.resolver_method(op.name) is None})
    report = MicroReport(
        origin=origin,
        runs=False,
        error="",
        failing_op=None,
        arena_bytes=None,
        arena_margin=float(arena_margin),
        recommended_arena_bytes=None,
        flash_bytes=len(content),
        constant_bytes=info.weights_bytes,
        op_counts=info.all_op_counts,
        missing_ops=missing,
        tflm_version=f"tflite-micro {tflm_version()}",
        sha256=hashlib.sha256(content).hexdigest(),
        compressed_tensors=_compressed_tensors(info),
    )
    if report.compressed_tensors:
        report.uncompressed_flash_bytes = len(decompress(content))
    arena = _first_arena(info)
    while True:
        loaded = attempt(content, arena, inputs, record=True, counts=counts, timeout=timeout)
        report.probes += 1
        if loaded.ok or arena >= MAX_ARENA or not _may_need_memory(loaded):
            break
        arena = min(arena * 4, MAX_ARENA)
    if not loaded.ok:
        report.error = _error_text(loaded)
        if arena >= MAX_ARENA and _may_need_memory(loaded):
            report.notes.append(f"it failed with an arena of {MAX_ARENA:,} bytes too")
        report.failing_op = _failing_op(loaded, info)
        return report
    report.runs = True
    measured = _MEASURED_ARENAS.get(report.sha256)
    if measured is None:
        measured, probes = smallest_arena(content, arena, loaded.recorded, timeout=timeout)
        report.probes += probes
        _remember_arena(report.sha256, measured)
    report.arena_bytes = measured
    report.recommended_arena_bytes = recommended_arena(measured, arena_margin)
    if inputs is not None:
        report.outputs, notes = _differences(content, info, inputs, loaded.outputs, arena)
        report.notes.extend(notes)
    return report


#: the smallest arena of each file bisected in this process, by SHA-256: the same bytes need the
#: same arena (`tfc.convert(..., target="micro")` checks a file that the caller checks again)
_MEASURED_ARENAS: dict[str, int] = {}
_MEASURED_MOST = 64


def _remember_arena(sha256: str, arena: int) -> None:
    if len(_MEASURED_ARENAS) >= _MEASURED_MOST:
        del _MEASURED_ARENAS[next(iter(_MEASURED_ARENAS))]  # the oldest
    _MEASURED_ARENAS[sha256] = arena


def _from_layer(op: FailingOp) -> str:
    return f", from Keras layer '{op.layer}'" if op.layer else ""


def recommended_arena(measured: int, margin: float) -> int:
    """`measured` plus `margin` (a share), rounded up to TFLM's 16-byte alignment.

    Example:
        >>> from tfcompress.micro.report import recommended_arena
        >>> recommended_arena(4160, 0.25)
        5200
    """
    wanted = math.ceil(measured * (1.0 + margin))
    return -(-wanted // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _first_arena(info: TFLiteReport) -> int:
    """A generous first arena: twice the activations plus room for TFLM's own structures."""
    activations = 0
    entries = 0
    for subgraph in info.subgraphs:
        entries += len(subgraph.tensors) + len(subgraph.ops)
        for tensor in subgraph.tensors:
            if not tensor.is_constant:
                size = math.prod(max(d, 1) for d in tensor.shape)
                activations += size * _ITEM_BYTES.get(tensor.dtype, 8)
    return min(2 * activations + 512 * entries + _FIRST_ARENA, MAX_ARENA)


def _may_need_memory(loaded: Attempt) -> bool:
    return loaded.crashed or any(text in loaded.log for text in _MEMORY)


def _error_text(loaded: Attempt) -> str:
    """TFLM's own lines (the useful ones), then the wrapper's message."""
    lines = [line.strip() for line in loaded.log.splitlines() if line.strip()]
    said = "; ".join(dict.fromkeys(lines))
    if loaded.crashed:
        return (
            f"{loaded.message} while loading the file (in a child process: your process is "
            f"unharmed){': ' + said if said else ''}. The file passed tfcompress's flatbuffer "
            "checks but TFLM cannot read it: convert the model again, or report the file."
        )
    return f"{said} ({loaded.message})" if said else loaded.message


def _failing_op(loaded: Attempt, info: TFLiteReport) -> FailingOp | None:
    found = _MISSING_BUILTIN.search(loaded.log)
    if found:
        return _describe(info, lambda op: op.name == found.group(1))
    found = _NODE_FAILED.search(loaded.log)
    if found:
        name, number = found.group(1), int(found.group(2))
        return _describe(
            info, lambda op: op.index == number and op.name.removeprefix("CUSTOM:") == name
        )
    if "op code CUSTOM" in loaded.log:
        return _describe(info, lambda op: micro_ops.resolver_method(op.name) is None, None)
    return None


def _describe(info: TFLiteReport, matches: Any) -> FailingOp | None:
    for subgraph in info.subgraphs:
        for op in subgraph.ops:
            if matches(op):
                return _failing(op, subgraph)
    return None


def _failing(op: Any, subgraph: Any) -> FailingOp:
    """A `FailingOp` for `op` of `subgraph`: its layer, and advice for its output's type."""
    output = subgraph.tensors[op.outputs[0]] if op.outputs else None
    tensor = output.name if output is not None else ""
    layer = layer_of(tensor)
    dtype = output.dtype if output is not None else ""
    return FailingOp(
        name=op.name,
        index=op.index,
        subgraph=subgraph.index,
        layer=layer,
        tensor=tensor,
        advice=micro_ops.advice(op.name, layer, dtype),
    )


def layer_of(tensor_name: str) -> str:
    """The Keras layer named in a converter tensor name (`"<model>_1/<layer>_1/<op>"`), or "".

    TF's name scopes carry a `_<n>` suffix in the traced graph, taken off here.

    Example:
        >>> from tfcompress.micro.report import layer_of
        >>> layer_of("sequential_1/up_sampling2d_1/Repeat/Tile"), layer_of("Identity")
        ('up_sampling2d', '')
    """
    for location in tensor_name.split(";"):
        parts = location.split("/")
        if len(parts) >= 3:
            return _SUFFIX.sub(r"\1", parts[1])
    return ""


def _inputs_of(data: np.ndarray | list[np.ndarray], info: TFLiteReport) -> list[np.ndarray]:
    arrays = list(data) if isinstance(data, list | tuple) else [data]
    if len(arrays) != len(info.inputs):
        raise ValueError(f"The model has {len(info.inputs)} inputs; got {len(arrays)} arrays.")
    result = []
    for position, (array, index) in enumerate(zip(arrays, info.inputs, strict=True)):
        tensor = info.tensors[index]
        array = np.asarray(array)
        if tuple(array.shape[1:]) != tuple(tensor.shape[1:]):
            raise ValueError(
                f"Input {position} ('{tensor.name}') expects samples of shape "
                f"{tuple(tensor.shape[1:])}; got an array of shape {array.shape}."
            )
        if len(array) == 0:
            raise ValueError("data holds no sample.")
        result.append(_quantize(array, tensor.dtype, tensor.quantization))
    if len({len(a) for a in result}) > 1:
        raise ValueError(
            f"The input arrays hold different numbers of samples: {[len(a) for a in result]}."
        )
    return result


def _quantize(array: np.ndarray, dtype: str, quantization: Any) -> np.ndarray:
    numpy_type = np.dtype(dtype.lower()) if dtype != "BOOL" else np.dtype(bool)
    if not np.issubdtype(numpy_type, np.integer) or array.dtype == numpy_type:
        return array.astype(numpy_type)  # integers of the file's own type: already quantized
    if quantization is None or not quantization.scale[0]:
        return array.astype(numpy_type)
    info = np.iinfo(numpy_type)
    scaled = np.round(array / quantization.scale[0] + quantization.zero_point[0])
    return np.clip(scaled, info.min, info.max).astype(numpy_type)


def _compressed_tensors(info: TFLiteReport) -> int:
    """How many distinct tensors the file's DECODE ops expand (their index inputs)."""
    encoded = set()
    for subgraph in info.subgraphs:
        for op in subgraph.ops:
            if op.name == f"CUSTOM:{DECODE_OP}":
                encoded.update((subgraph.index, index) for index in op.inputs[0::2])
    return len(encoded)


def _differences(
    content: bytes,
    info: TFLiteReport,
    inputs: list[np.ndarray],
    micro: list[np.ndarray],
    arena: int,
) -> tuple[list[OutputDifference], list[str]]:
    logits = _softmax_logits(info)
    notes: list[str] = []
    try:  # LiteRT has no DECODE kernel: it runs the file with its look-up tables decoded
        litert = _litert_outputs(decompress(content), inputs)
    except TFLiteFileError as error:
        return [], [f"LiteRT's builtin kernels could not run the file to compare: {error}"]
    logit_gaps: dict[int, np.ndarray] = {}
    if logits:
        logit_gaps, notes = _logit_gaps(content, info, inputs, logits, arena)
    differences = []
    for position, ours in enumerate(micro):
        kernels, gap = _nearest({k: outputs[position] for k, outputs in litert.items()}, ours)
        tensor = info.tensors[info.outputs[position]]
        logit_gap = logit_gaps.get(position)
        differences.append(
            OutputDifference(
                output=info.output_names[position] if info.output_names else tensor.name,
                dtype=tensor.dtype,
                max_difference=_largest(gap),
                unit="steps" if np.issubdtype(ours.dtype, np.integer) else "absolute",
                differing=float(np.mean(gap > 0)) if gap.size else 0.0,
                samples=len(inputs[0]),
                logits_max_difference=None if logit_gap is None else _largest(logit_gap),
                compared_with=kernels,
            )
        )
    return differences, notes


def _nearest(theirs: dict[str, np.ndarray], ours: np.ndarray) -> tuple[str, np.ndarray]:
    """The LiteRT kernel set whose values are nearest to TFLM's (the reference one on a tie),
    and the difference from it."""
    gaps = {kernels: _gap(ours, values) for kernels, values in theirs.items()}
    kernels = min(gaps, key=lambda k: (_largest(gaps[k]), k != REFERENCE_KERNELS))
    return kernels, gaps[kernels]


def _gap(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return np.abs(ours.astype(np.float64) - theirs.astype(np.float64))


def _largest(gap: np.ndarray) -> float:
    return float(gap.max()) if gap.size else 0.0


def _softmax_logits(info: TFLiteReport) -> dict[int, int]:
    """Output position -> the tensor a SOFTMAX op takes, for each output a SOFTMAX writes."""
    found = {}
    for op in info.subgraphs[0].ops if info.subgraphs else []:
        if op.name == "SOFTMAX" and op.outputs and op.outputs[0] in info.outputs:
            found[list(info.outputs).index(op.outputs[0])] = op.inputs[0]
    return found


def _logit_gaps(
    content: bytes, info: TFLiteReport, inputs: list[np.ndarray], logits: dict[int, int], arena: int
) -> tuple[dict[int, np.ndarray], list[str]]:
    """Run a copy of the file whose outputs include the logits on TFLM and on LiteRT's
    reference kernels: the difference of each SOFTMAX's input."""
    model = read_model(content)
    model.subgraphs[0].outputs = [*model.subgraphs[0].outputs, *logits.values()]
    widened = pack(model, len(content))
    counts = (len(info.inputs), len(info.outputs) + len(logits))
    ran = attempt(widened, 2 * arena, inputs, counts=counts)
    if not ran.ok:
        return {}, [f"TFLM did not run the file with its logits as outputs: {ran.message}"]
    try:
        litert = _litert_outputs(decompress(widened), inputs)
    except TFLiteFileError as error:
        return {}, [f"LiteRT could not run the file with its logits as outputs: {error}"]
    first = len(info.outputs)
    gaps = {}
    for extra, position in enumerate(logits):
        index = first + extra
        theirs = {kernels: outputs[index] for kernels, outputs in litert.items()}
        gaps[position] = _nearest(theirs, ran.outputs[index])[1]
    return gaps, []


def _litert_outputs(content: bytes, inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Raw outputs of LiteRT's reference kernels and of its optimized builtin kernels."""
    return {
        REFERENCE_KERNELS: _litert_run(content, inputs, reference=True),
        OPTIMIZED_KERNELS: _litert_run(content, inputs, reference=False),
    }


def _litert_run(
    content: bytes, inputs: list[np.ndarray], reference: bool = True
) -> list[np.ndarray]:
    """Raw outputs of LiteRT's reference kernels (BUILTIN_REF; else its optimized builtin
    kernels, without XNNPACK), one chunk per batch."""
    interpreter = make_interpreter(content, builtin_only=not reference, reference=reference)
    details = interpreter.get_input_details()
    batch = int(details[0]["shape"][0]) if details else 1
    count = len(inputs[0])
    collected: list[list[np.ndarray]] = []
    for start in range(0, count, batch):
        for detail, array in zip(details, inputs, strict=True):
            part = array[start : start + batch]
            if len(part) < batch:
                part = np.concatenate(
                    [part, np.zeros((batch - len(part), *part.shape[1:]), part.dtype)]
                )
            interpreter.set_tensor(detail["index"], part.reshape(detail["shape"]))
        interpreter.reset_all_variables()
        try:
            interpreter.invoke()
        except RuntimeError as error:
            raise TFLiteFileError(f"LiteRT failed to run the model: {error}") from error
        rows = min(batch, count - start)
        collected.append(
            [interpreter.get_tensor(d["index"])[:rows] for d in interpreter.get_output_details()]
        )
    return [np.concatenate([chunk[i] for chunk in collected]) for i in range(len(collected[0]))]


_RUN_ARENA = 1 << 26  # 64 MiB: room for any model run on TFLM on this machine


def run_on_tflm(flatbuffer: bytes, x: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The file's dequantized outputs on `x` (one array per input), computed by TFLM's kernels.

    Inputs are quantized and outputs dequantized with the file's own scales, as
    `tfcompress.converter.run_tflite` does on LiteRT. A file with TFLM look-up tables
    (`tfcompress.micro.compress`) runs as it is: TFLM decodes them. TFLM runs in a child
    process, so a crash inside it is an error here.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
        >>> flatbuffer = tfc.convert(build_digits_cnn(width=4), "int8", x)
        >>> [a.shape for a in run_on_tflm(flatbuffer, [x])]
        [(4, 10)]
    """
    # the tensors' scales; LiteRT reads a file with TFLM look-up tables only once decoded
    readable = decompress(flatbuffer) if DECODE_OP.encode() in flatbuffer else flatbuffer
    interpreter = make_interpreter(readable, builtin_only=True)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    quantized = [_quantize_for(np.asarray(a), d) for a, d in zip(x, inputs, strict=True)]
    ran = attempt(flatbuffer, _RUN_ARENA, quantized, counts=(len(inputs), len(outputs)))
    if not ran.ok:
        raise RuntimeError(f"TensorFlow Lite Micro could not run the file: {ran.message[:400]}")
    return [_dequantize(o, d) for o, d in zip(ran.outputs, outputs, strict=True)]
