"""Run the crash-prone part of a TFLite conversion in a forked child process.

TF's converter is C++: MLIR conversion to a float flatbuffer, then calibration on the TFLite
interpreter and quantization. When it crashes (TF 2.21 segfaults calibrating some recurrent
graphs with a static batch) it takes the whole Python process with it. Here the calibration and
quantization step runs in a child made with `os.fork()`: the child inherits the converter, the
float flatbuffer and the calibration generator, sends the result (or the exception, and its
warnings) back through a pipe and leaves with `os._exit`, so it never runs the parent's `atexit`
handlers nor flushes its buffers. A child killed by a signal, or one that outlives its timeout,
becomes a `ConversionError`.

Forking is used on Linux only. Elsewhere (macOS, where forking a process that has started
system frameworks is unsafe, and Windows, which cannot fork) the converter runs in-process.

Work that runs TensorFlow kernels (AdaRound's gradient steps, any training) cannot be forked: the
child would lack the thread pools those kernels wait on. `run_in_new_process` runs such a function
in a separate Python interpreter instead, on every platform (started once per process and kept
for the next call until a call kills it): the function and its arguments go there
pickled (a Keras 3 model pickles as its `.keras` file), the result comes back the same way, and a
child killed by a signal (TensorFlow's oneDNN kernels segfault on some shapes) becomes an
`IsolatedCrash` naming the work and what to do.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tfcompress.tflite.errors import ConversionError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 3600.0
_CHUNK = 1 << 20


def isolation_available() -> bool:
    """True where the converter can run in a forked child process (Linux).

    Returns:
        Whether `convert(..., isolate=True)` really isolates the converter on this platform.

    Example:
        >>> import sys
        >>> from tfcompress.tflite.isolation import isolation_available
        >>> isolation_available() == sys.platform.startswith("linux")
        True
    """
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def convert_isolated(converter: Any, *, name: str, mode: str, timeout: float | None) -> bytes:
    """`converter.convert()` with its calibration and quantization step run in a child process.

    Only that step is forked: it is where TF's converter crashes (after the MLIR conversion has
    exported the float flatbuffer), and it runs the TFLite interpreter and MLIR, which start
    their own threads. Freezing, Grappler and the MLIR conversion run TF kernels on the
    process's shared intra-op thread pool, whose threads a forked child does not have: forked,
    they would wait for ever. Modes without calibration have nothing forked.

    Args:
        converter: a configured `tf.lite.TFLiteConverter`.
        name: the model's name, for error messages.
        mode: the conversion mode, for error messages.
        timeout: seconds the child may run before it is killed; `None` waits for ever.

    Returns:
        The flatbuffer bytes, exactly as `converter.convert()` returns them.

    Raises:
        ConversionError: the child was killed by a signal or ran past `timeout`.
        Exception: what the converter raised in the child, re-raised as is.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> from tfcompress.tflite.isolation import convert_isolated
        >>> fn = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 4])])
        >>> converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        >>> converter.optimizations = [tf.lite.Optimize.DEFAULT]
        >>> converter.representative_dataset = lambda: ([np.ones((1, 4), "float32")] for _ in range(4))
        >>> len(convert_isolated(converter, name="double", mode="int8", timeout=120)) > 0
        True
    """
    optimize = getattr(converter, "_optimize_tflite_model", None)
    if optimize is None:  # a TF without this step: nothing can be isolated safely
        return converter.convert()

    def optimize_in_child(model: Any, quant_mode: Any, *args: Any, **kwargs: Any) -> Any:
        if not _calibrates(quant_mode):
            return optimize(model, quant_mode, *args, **kwargs)
        return run_in_child(
            lambda: bytes(optimize(model, quant_mode, *args, **kwargs)),
            name=name,
            mode=mode,
            timeout=timeout,
        )

    converter._optimize_tflite_model = optimize_in_child  # on this instance only
    try:
        return converter.convert()
    finally:
        del converter._optimize_tflite_model


def _calibrates(quant_mode: Any) -> bool:
    check = getattr(quant_mode, "is_post_training_integer_quantization", None)
    return True if check is None else bool(check())


def run_in_child(
    fn: Callable[[], T], *, name: str, mode: str, timeout: float | None = DEFAULT_TIMEOUT_S
) -> T:
    """Call `fn()` in a forked child process and return its (picklable) result.

    Warnings the child emits are re-emitted here; an exception it raises is re-raised here (as
    a `RuntimeError` carrying its text if it cannot be pickled). Off Linux, `fn()` runs
    in-process.

    Args:
        fn: the zero-argument function to run.
        name: the model's name, for error messages.
        mode: the conversion mode, for error messages.
        timeout: seconds the child may run before it is killed; `None` waits for ever.

    Returns:
        What `fn()` returned.

    Raises:
        ConversionError: the child was killed by a signal, exited without an answer, or ran past
            `timeout`.

    Example:
        >>> from tfcompress.tflite.isolation import run_in_child
        >>> run_in_child(lambda: sum(range(10)), name="demo", mode="float32", timeout=60)
        45
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}.")
    if not isolation_available():
        return fn()
    # Whatever sits in these buffers would otherwise be written twice: by the child too.
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    # Frozen objects are left alone by the child's garbage collector, which would otherwise
    # write to (and so copy) every page of the parent's heap it inherited.
    gc.freeze()
    try:
        pid = os.fork()
        if pid == 0:  # the child: never return from here
            os.close(read_end)
            _child_main(fn, write_end)
    finally:
        gc.unfreeze()  # the parent's objects go back to their generations (the child has exited)
    os.close(write_end)
    try:
        payload = _read_until_eof(read_end, timeout)
    except TimeoutError:
        _kill(pid)
        raise ConversionError(_timeout_message(name, mode, timeout)) from None
    except BaseException:  # KeyboardInterrupt while waiting: do not leave the child behind
        _kill(pid)
        raise
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return _answer(payload, status, name, mode)


def _child_main(fn: Callable[[], Any], write_end: int) -> None:
    code = 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                message: tuple = ("ok", fn())
            except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
                message = ("error", _picklable(error))
        message = (*message, [_warning_record(w) for w in caught])
        with os.fdopen(write_end, "wb") as stream:
            pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # noqa: BLE001 - the parent reports the missing answer
        code = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001, S110 - a closed stream must not keep us alive
                pass
        os._exit(code)


def _picklable(error: BaseException) -> Any:
    """The error as it can travel to the parent: itself, or its class, arguments and attributes
    when its class cannot be rebuilt from its arguments (an `__init__` taking other ones), or,
    failing that, a `RuntimeError` carrying its text. `_reraise` raises what this gives."""
    for candidate in (error, _ErrorParts(type(error), error.args, dict(vars(error)))):
        try:
            pickle.loads(pickle.dumps(candidate))
            return candidate
        except Exception:  # noqa: BLE001, S112 - try the next form
            continue
    return RuntimeError(f"{type(error).__name__}: {error}")


class _ErrorParts:
    """An exception's class, arguments and attributes, rebuilt by `_reraise` without `__init__`."""

    def __init__(self, cls: type, args: tuple, state: dict) -> None:
        self.cls, self.args, self.state = cls, args, state

    def rebuild(self) -> BaseException:
        error = self.cls.__new__(self.cls)
        error.args = self.args
        error.__dict__.update(self.state)
        return error


def _reraise(value: Any) -> NoReturn:
    raise value.rebuild() if isinstance(value, _ErrorParts) else value


def _warning_record(w: warnings.WarningMessage) -> tuple:
    category = w.category if _is_picklable(w.category) else UserWarning
    return (str(w.message), category, w.filename, w.lineno)


def _is_picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False


def _read_until_eof(fd: int, timeout: float | None) -> bytes:
    """Everything the child writes, until it closes the pipe (or dies, which closes it too)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks = []
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue  # the loop checks the deadline
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _answer(payload: bytes, status: int, name: str, mode: str) -> Any:
    if os.WIFSIGNALED(status):
        raise ConversionError(_crash_message(name, mode, os.WTERMSIG(status)))
    if not payload or os.waitstatus_to_exitcode(status) != 0:  # an answer that may be cut off
        raise ConversionError(
            f"TensorFlow's converter exited (status {os.waitstatus_to_exitcode(status)}) without "
            f"an answer while converting '{name}' to mode={mode!r}. Your process is unharmed. "
            "Retry with convert(..., isolate=False) to see what it printed."
        )
    kind, value, caught = pickle.loads(payload)
    for text, category, filename, lineno in caught:
        warnings.warn_explicit(text, category, filename, lineno)
    if kind == "error":
        _reraise(value)
    return value


def signal_name(number: int) -> str:
    """The name of signal `number` ("SIGSEGV"), or "signal N" for one Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _crash_message(name: str, mode: str, number: int) -> str:
    return (
        f"TensorFlow's TFLite converter crashed with {signal_name(number)} (signal {number}) while "
        f"converting '{name}' to mode={mode!r}. It ran in a child process, so your Python "
        "process is unharmed. This is a bug inside TensorFlow, not in your model. Try another "
        "mode (mode='dynamic' or 'float16' do not calibrate); for LSTM/GRU layers convert the "
        "Keras model object with tfcompress.convert, which rewrites recurrent layers for the "
        "integer modes, rather than a hand-built TFLiteConverter; or build the model without a "
        "fixed batch size."
    )


def _timeout_message(name: str, mode: str, timeout: float | None) -> str:
    return (
        f"TensorFlow's TFLite converter did not finish converting '{name}' to mode={mode!r} "
        f"within timeout={timeout} s; its child process was stopped and your process is "
        "unharmed. If the model is just big, pass a larger timeout (or timeout=None); if it "
        "hangs, try isolate=False or another mode."
    )


class IsolatedCrash(RuntimeError):
    """Work run in a process of its own (`run_in_new_process`, `tfcompress compress`) died: a
    signal, an exit without an answer, a timeout. `signal_number` is the signal that killed it
    (None: it exited, or ran past its timeout); `printed` the last lines it printed."""

    signal_number: int | None = None
    printed: str = ""


def run_in_new_process(
    fn: Callable[..., T],
    *args: Any,
    what: str,
    advice: str,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)` in a separate Python interpreter; its result (or exception) comes back.

    The interpreter is started afresh (not forked), so TensorFlow works there; it sees this
    process's `sys.path` (as it is at each call) and environment (`TF_ENABLE_ONEDNN_OPTS=0` set
    by the user applies).
    It stays up for the next call (TensorFlow is imported once, not per call); when a call kills
    it (a crash inside TensorFlow, a timeout), the error is raised here and the next call starts
    a new one. `fn` must be importable by name (a module-level function), and the arguments and
    result picklable. Warnings the child emits are re-emitted here, an exception it raises is
    re-raised here; what it prints is kept and shown only when it dies. A line the work passes
    to `report_progress` there reaches `progress` here as it happens.

    Args:
        fn: a module-level function.
        *args, **kwargs: its arguments.
        what: the work, for error messages ("AdaRound (optimize step 'adaround')").
        advice: what the user can do when the child dies.
        timeout: seconds the child may run; `None` waits for ever.
        progress: called here with each line the work reports with `report_progress`.

    Returns:
        What `fn` returned.

    Raises:
        IsolatedCrash: the child was killed by a signal, exited without an answer or ran past
            `timeout`; the message names `what`, the signal and `advice` (and its
            `signal_number` is the signal's).
        ValueError: `fn` or its arguments cannot be sent to a new process, or it cannot load
            them (a class it cannot import).

    Example:
        >>> import operator
        >>> from tfcompress.tflite.isolation import run_in_new_process
        >>> run_in_new_process(operator.add, 2, 3, what="adding", advice="none", timeout=120)
        5
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}.")
    with tempfile.TemporaryDirectory(prefix="tfcompress-child-") as folder:
        task, answer = (Path(folder) / name for name in ("task", "answer"))
        try:
            # this process's import path first: a worker started earlier learns its new entries
            work = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            task.write_bytes(pickle.dumps(list(sys.path)) + work)
        except Exception as error:  # noqa: BLE001 - anything unpicklable
            raise ValueError(
                f"{what} runs in a separate process, and its input cannot be sent there "
                f"({type(error).__name__}: {error}). {advice}"
            ) from error
        with _WORKER_LOCK:
            for attempt in range(2):
                worker = _worker()
                status = worker.run(task, answer, timeout, what, advice, progress)
                if status is not None or not answer.exists():
                    tail = "\n".join(worker.printed().strip().splitlines()[-8:])
                    crash = IsolatedCrash(_new_process_message(what, advice, status or 0, tail))
                    crash.signal_number = -status if status is not None and status < 0 else None
                    crash.printed = tail
                    raise crash
                kind, value, caught = pickle.loads(answer.read_bytes())
                if kind != "unloadable" or attempt == 1:
                    break
                # started before a module it needs was importable: a fresh interpreter
                worker.stop()
                answer.unlink()
    if kind == "unloadable":
        raise ValueError(
            f"{what} runs in a separate Python process, which could not load its input "
            f"({value}): a custom layer must be importable there (defined in a module, not in "
            "__main__, and registered with keras.saving.register_keras_serializable); or run it "
            "in this process (isolate=False)."
        )
    for text, category, filename, lineno in caught:
        warnings.warn_explicit(text, category, filename, lineno)
    if kind == "error":
        _reraise(value)
    return value


_SERVER_CODE = "from tfcompress.tflite.isolation import _serve; _serve()"
_PROTOCOL: list[Any] = []  # in a worker: the stream its answers and progress lines go to


def report_progress(line: str) -> None:
    """Send one line of progress to the process that runs this work (`run_in_new_process`'s
    `progress`); outside such a worker, print it to stderr.

    Example:
        >>> from tfcompress.tflite.isolation import report_progress
        >>> report_progress("[1/2] prune")  # here: printed to stderr
    """
    if not _PROTOCOL:
        print(line, file=sys.stderr, flush=True)
        return
    _PROTOCOL[0].write(f"say {json.dumps(str(line))}\n")
    _PROTOCOL[0].flush()


def _serve() -> None:
    """The worker of `run_in_new_process`: one task per line of its input (the task and answer
    paths), progress lines ("say ...") and "done" on its own output after each; what the tasks
    print goes to its log."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints of the tasks go where stderr goes: the log, never the protocol
    _PROTOCOL[:] = [protocol]
    for line in sys.stdin:
        task, answer = line.rstrip("\n").split("\t")
        _new_process_main(task, answer)
        if "keras" in sys.modules:  # the next task starts from a clean Keras state
            sys.modules["keras"].backend.clear_session()
        gc.collect()
        protocol.write("done\n")
        protocol.flush()


class _Worker:
    """A Python interpreter started afresh that runs `run_in_new_process`'s tasks one by one:
    TensorFlow is imported once per worker, not once per task. A task that kills it (a signal,
    a timeout) takes only it down; the next task starts a new one."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="tfcompress-worker-", suffix=".log")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
        )
        self.pid = os.getpid()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.process.poll() is None

    def run(
        self,
        task: Path,
        answer: Path,
        timeout: float | None,
        what: str,
        advice: str,
        progress: Callable[[str], None] | None = None,
    ) -> int | None:
        """Run one task; None when it answered, else the worker's exit status (it died)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(f"{task}\t{answer}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return self.process.wait()
        try:
            return self._wait(timeout, what, advice, progress)
        except BaseException:  # an interrupt here: do not leave the task running
            self.stop()
            raise

    def _wait(
        self,
        timeout: float | None,
        what: str,
        advice: str,
        progress: Callable[[str], None] | None,
    ) -> int | None:
        assert self.process.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if not ready:  # the timeout: do not leave the worker running the task
                self.stop()
                raise IsolatedCrash(
                    f"{what} did not finish within timeout={timeout} s; its process was "
                    f"stopped and yours is unharmed. {advice}"
                )
            line = self.process.stdout.readline()
            if line == "done\n":
                return None
            if not line:  # it died
                return self.process.wait()
            if line.startswith("say ") and progress is not None:
                progress(json.loads(line[4:]))

    def printed(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_bytes().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


_WORKER_LOCK = threading.Lock()
_WORKERS: list[_Worker] = []


def _worker() -> _Worker:
    """This process's worker, started when there is none (or the last one died)."""
    if _WORKERS and _WORKERS[0].alive():
        return _WORKERS[0]
    if _WORKERS and _WORKERS[0].pid == os.getpid():
        _WORKERS[0].stop()
    _WORKERS[:] = [_Worker()]
    return _WORKERS[0]


@atexit.register
def _stop_worker() -> None:
    for worker in _WORKERS:
        if worker.pid == os.getpid():
            worker.stop()


def _new_process_main(task: str, answer: str) -> None:
    """The child of `run_in_new_process`: run the task, write the answer file atomically."""
    try:
        with open(task, "rb") as stream:
            paths = pickle.load(stream)
            sys.path.extend(path or os.getcwd() for path in paths if path not in sys.path)
            fn, args, kwargs = pickle.load(stream)
    except Exception as error:  # noqa: BLE001 - a class this interpreter cannot import
        message: tuple = ("unloadable", f"{type(error).__name__}: {error}", [])
        Path(answer).write_bytes(pickle.dumps(message))
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            message = ("ok", fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - everything goes back to the parent
            message = ("error", _picklable(error))
    message = (*message, [_warning_record(w) for w in caught])
    partial = Path(answer + ".partial")
    partial.write_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    partial.rename(answer)


def _new_process_message(what: str, advice: str, status: int, tail: str) -> str:
    if status < 0:
        died = f"crashed with {signal_name(-status)} (signal {-status})"
    else:
        died = f"exited (status {status}) without an answer"
    return (
        f"{what} {died} inside TensorFlow. It ran in a separate process, so your Python process "
        f"is unharmed. {advice}" + (f"\nThe last lines it printed:\n{tail}" if tail else "")
    )
