"""A recipe run in a Python process of its own, for `compress` and `tfcompress compress`.

A recipe trains (pruning, clustering, distillation, QAT) and converts inside TensorFlow, whose
native kernels can crash the process (a segmentation fault in a gradient kernel). The run
therefore happens in a separate Python interpreter (`tflite.isolation.run_in_new_process`): its
progress lines come back as they happen, its result or exception comes back when it ends, and a
crash becomes an `IsolatedCrash` naming the step it happened in, with the output folder left as
it was (it is written only when complete). This module imports no TensorFlow, so the command
line stays light; the work itself is looked up in `tfcompress.recipe.runner` there.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from tfcompress.tflite.isolation import (
    IsolatedCrash,
    report_progress,
    run_in_new_process,
    signal_name,
)

ADVICE = (
    "A known cause: TensorFlow's oneDNN kernels crash on the gradient of some strided 1x1 "
    "convolutions; run again with TF_ENABLE_ONEDNN_OPTS=0 in the environment."
)


def call_runner(name: str, *args: Any, **kwargs: Any) -> Any:
    """`tfcompress.recipe.runner.<name>(*args, **kwargs)`: the entry point of the recipe's
    process (the runner imports TensorFlow, so it is loaded there, not where the run starts)."""
    runner = importlib.import_module("tfcompress.recipe.runner")
    return getattr(runner, name)(*args, **kwargs)


def run_isolated(
    name: str,
    *args: Any,
    output: str | os.PathLike,
    log: Callable[[str], None] | None,
    in_process_hint: str,
    **kwargs: Any,
) -> Any:
    """`runner.<name>(*args, log=..., **kwargs)` in a separate Python process.

    Each line the run logs reaches `log` here as it happens; what it returns or raises comes back.

    Args:
        name: the runner's function (`_compress_in_child`, `run_from_cli`); it takes `log`.
        *args, **kwargs: its arguments (picklable).
        output: the output folder, for the crash message.
        log: called with each progress line; `None` is silent.
        in_process_hint: how to run it in this process instead (`isolate=False`, `--in-process`).

    Raises:
        IsolatedCrash: the process died inside TensorFlow or another native library; the message
            names the step it was running, and nothing was written to `output`.
    """
    step = "loading the model and data"

    def relay(line: str) -> None:
        nonlocal step
        if line.startswith("["):  # "[2/3] qat {...}": the step running now
            step = line.strip()
        if log is not None:
            log(line)

    try:
        return run_in_new_process(
            call_runner,
            name,
            *args,
            log=report_progress,
            what="the recipe",
            advice=f"{ADVICE} {in_process_hint}",
            timeout=None,
            progress=relay,
            **kwargs,
        )
    except IsolatedCrash as crash:
        raise IsolatedCrash(_crash_message(crash, step, output, in_process_hint)) from None


def _crash_message(crash: IsolatedCrash, step: str, output: Any, in_process_hint: str) -> str:
    number = crash.signal_number
    died = (
        "exited without an answer"
        if number is None
        else f"died inside TensorFlow or another native library ({signal_name(number)})"
    )
    return (
        f"the recipe's process {died} during '{step}'; nothing was written to '{output}' (it is "
        f"written only when complete), and this process lives on. {ADVICE} {in_process_hint}"
        + (f"\nThe last lines it printed:\n{crash.printed}" if crash.printed else "")
    )
