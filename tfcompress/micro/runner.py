"""Run a flatbuffer on TensorFlow Lite Micro's interpreter, each attempt in a forked child.

The `tflite-micro` package builds TFLM's C++ interpreter and reference kernels for the host
(`tflite_micro.runtime.Interpreter`). TFLM trusts the file and its arena: a damaged file, or an
arena a little too small, can end in a segmentation fault rather than an error. Every attempt
therefore runs in a child process made by `tfcompress.tflite.isolation.run_in_child` (the
machinery the converter uses); a child that dies becomes an `Attempt` with `crashed=True`, and
the caller's process lives on. What TFLM prints (on file descriptor 2) is captured into
`Attempt.log`, crash or not, so the caller can tell which op failed.

Off Linux `run_in_child` cannot fork and runs the attempt in-process: a crash of TFLM there
ends the process.
"""

from __future__ import annotations

import faulthandler
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress.micro.errors import INSTALL_HINT, MicroUnavailableError
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.isolation import run_in_child

DEFAULT_TIMEOUT_S = 120.0
MAX_ARENA = 1 << 30  # 1 GiB: far past any microcontroller; an arena that big is a failure
_FIRST_GAP = 256  # bytes above the recorded use tried first (the planner's scratch is small)
_ALIGNMENT = 16  # bytes below the recorded use tried first when it works (TFLM's alignment)
_RECORDED = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")


def tflm_runtime() -> Any:
    """The `tflite_micro.runtime` module, or a `MicroUnavailableError` saying how to install it.

    Example:
        >>> from tfcompress.micro.runner import tflm_runtime
        >>> tflm_runtime().Interpreter.__name__
        'Interpreter'
    """
    try:
        from tflite_micro import runtime
    except ImportError as error:
        raise MicroUnavailableError(
            "TensorFlow Lite Micro's Python package (tflite-micro, which runs TFLM's kernels on "
            f"this machine) is not installed: {INSTALL_HINT}"
        ) from error
    return runtime


def tflm_version() -> str:
    """The installed `tflite-micro` version (`0.dev<date>-g<commit>`)."""
    tflm_runtime()
    import tflite_micro

    return str(getattr(tflite_micro, "__version__", "unknown"))


@dataclass
class Attempt:
    """One load (and invoke) of a file on TFLM with a given arena.

    `ok`: it allocated and every invoke succeeded. `message`: the error TFLM's wrapper raised,
    or what stopped the child. `log`: what TFLM printed. `outputs`: each output's raw values
    over the samples, when samples were given. `recorded`: the arena in use after allocation as
    TFLM's `RecordingMicroAllocator` reports it (head + tail; the memory planner's scratch, used
    only while planning, is not in it).
    """

    ok: bool
    message: str = ""
    log: str = ""
    crashed: bool = False
    outputs: list[np.ndarray] = field(default_factory=list)
    recorded: int | None = None


def attempt(
    model: bytes,
    arena: int,
    inputs: list[np.ndarray] | None = None,
    *,
    record: bool = False,
    counts: tuple[int, int] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Attempt:
    """Load `model` on TFLM with an arena of `arena` bytes and invoke it, in a child process.

    Args:
        model: the flatbuffer.
        arena: the tensor arena size in bytes.
        inputs: one array per model input, already in the input's dtype, batch first; the
            model is invoked once per chunk of its own batch size. None: one invoke on zeros.
        record: also read the arena use that TFLM's recording allocator reports.
        counts: the model's (inputs, outputs); read from the file (which validates it first)
            when not given.
        timeout: seconds the child may run.

    Returns:
        An `Attempt`; never raises for what TFLM does (errors and crashes are in it).

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.micro.runner import attempt
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> flatbuffer = tfc.convert(build_digits_cnn(width=4), "int8", x)
        >>> attempt(flatbuffer, 1 << 20).ok, attempt(flatbuffer, 64).ok
        (True, False)
    """
    tflm_runtime()  # a missing package is the caller's error, raised here rather than in a child
    if counts is None:
        report = inspect(model)  # a damaged file gets a clear TFLiteFileError before TFLM sees it
        counts = (len(report.inputs), len(report.outputs))
    n_inputs, n_outputs = counts
    with tempfile.TemporaryFile() as log:

        def run() -> Attempt:
            os.dup2(log.fileno(), 2)  # TFLM's MicroPrintf writes to stderr, unbuffered
            faulthandler.disable()  # a crash is the parent's to report, not a Python traceback
            return _attempt_here(model, arena, inputs, record, n_inputs, n_outputs)

        try:
            result = run_in_child(run, name="the TFLM check", mode="tflm", timeout=timeout)
        except ConversionError as error:  # the child died or hung: TFLM crashed
            result = Attempt(ok=False, message=_stopped(str(error), timeout), crashed=True)
        log.seek(0)
        result.log = log.read().decode(errors="replace").replace("\r\n", "\n")
    if record and result.ok:
        found = _RECORDED.search(result.log)
        result.recorded = int(found.group(1)) if found else None
    return result


def _attempt_here(
    model: bytes,
    arena: int,
    inputs: list[np.ndarray] | None,
    record: bool,
    n_inputs: int,
    n_outputs: int,
) -> Attempt:
    runtime = tflm_runtime()
    try:
        interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(arena))
        details = [interpreter.get_input_details(i) for i in range(n_inputs)]
        batch = int(details[0]["shape"][0]) if details else 1
        samples = (
            inputs if inputs is not None else [np.zeros(d["shape"], d["dtype"]) for d in details]
        )
        count = len(samples[0]) if samples else 1
        collected: list[list[np.ndarray]] = []
        for start in range(0, count, batch):
            for position, (detail, array) in enumerate(zip(details, samples, strict=True)):
                interpreter.set_input(_chunk(array, start, batch, detail), position)
            interpreter.reset()  # variable tensors (recurrent state) start afresh each chunk
            interpreter.invoke()
            outputs = [np.array(interpreter.get_output(i)) for i in range(n_outputs)]
            collected.append([o[: min(batch, count - start)] for o in outputs])
        if record:
            interpreter.print_allocations()
    except (RuntimeError, ValueError) as error:
        return Attempt(ok=False, message=str(error).strip())
    result = [np.concatenate([chunk[i] for chunk in collected]) for i in range(len(collected[0]))]
    return Attempt(ok=True, outputs=result if inputs is not None else [])


def _chunk(array: np.ndarray, start: int, batch: int, detail: dict) -> np.ndarray:
    part = np.asarray(array[start : start + batch], dtype=detail["dtype"])
    if len(part) < batch:  # the last chunk of a static batch: pad with zeros, trimmed later
        padding = np.zeros((batch - len(part), *part.shape[1:]), part.dtype)
        part = np.concatenate([part, padding])
    return part.reshape(detail["shape"])


def _stopped(text: str, timeout: float) -> str:
    found = re.search(r"crashed with (\w+) \(signal (\d+)\)", text)
    if found:
        return f"TFLM crashed with {found.group(1)} (signal {found.group(2)})"
    if "did not finish" in text:
        return f"TFLM did not finish within {timeout} s"
    return "TFLM's child process exited without an answer"


def smallest_arena(
    model: bytes, works_at: int, recorded: int | None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[int, int]:
    """The smallest arena with which TFLM allocates and invokes `model`, and the attempts made.

    Bisection between an arena known to fail and one known to work (`works_at`), each probe a
    fresh interpreter in a child process (a too-small arena may crash TFLM, not only fail). The
    search starts just below `recorded` (the use the recording allocator reports) and doubles a
    gap above it until an arena works, or, where an arena just below it works too, a gap below it
    until one fails. The answer `n` is exact in that an arena of `n` bytes was seen to work and
    one of `n - 1` bytes to fail.

    Returns:
        (smallest arena in bytes, number of child processes run).

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.micro.runner import attempt, smallest_arena
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> flatbuffer = tfc.convert(build_digits_cnn(width=4), "int8", x)
        >>> first = attempt(flatbuffer, 1 << 20, record=True)
        >>> arena, _ = smallest_arena(flatbuffer, 1 << 20, first.recorded)
        >>> attempt(flatbuffer, arena).ok, attempt(flatbuffer, arena - 1).ok
        (True, False)
    """
    report = inspect(model)
    counts = (len(report.inputs), len(report.outputs))
    probes = 0

    def works(size: int) -> bool:
        nonlocal probes
        probes += 1
        return attempt(model, size, counts=counts, timeout=timeout).ok

    high = works_at
    low = max((recorded or 0) - 1, 0)  # known to fail once probed; 0 always fails
    if low and works(low):  # the answer lies a little below the recorded use: step down
        high = low
        gap = _ALIGNMENT
        while True:
            below = high - gap
            if below <= 0:
                low = 0
                break
            if not works(below):
                low = below
                break
            high, gap = below, gap * 2
    gap = _FIRST_GAP
    while low + gap < high:
        if works(low + gap):
            high = low + gap
            break
        low += gap
        gap *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if works(middle):
            high = middle
        else:
            low = middle
    return high, probes
