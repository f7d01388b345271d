"""The `tfcompress compress` command: arguments (light, no TensorFlow) and the run.

The recipe trains (pruning, clustering, distillation, QAT) and converts inside TensorFlow, whose
native kernels can crash the process (a segmentation fault in a gradient kernel). The command
therefore runs the recipe in a child Python process and relays its progress: a crash there
becomes a clear error naming the step it happened in, the output folder is left as it was (it
is written only when complete), and the calling process lives on. `--in-process` runs it in
this process instead (for a debugger).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tfcompress.recipe.schema import load_recipe
from tfcompress.tflite.isolation import IsolatedCrash, signal_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tfcompress compress MODEL --data DATA.npz --recipe RECIPE.yaml -o OUT/`."""
    parser.add_argument(
        "model", help="the float model: a .keras or .h5 file, or a Keras 2 SavedModel folder"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="DATA.npz with arrays x and y (y_NAME for each output of a model with several), "
        "optionally x_test and y_test; or 'digits'",
    )
    parser.add_argument("--recipe", required=True, help="RECIPE.yaml: the steps and their options")
    parser.add_argument("-o", "--output", required=True, help="folder for the file and the report")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace files already in the output folder"
    )
    parser.add_argument(
        "--unsafe", action="store_true", help="load Lambda layers (turns off Keras safe mode)"
    )
    parser.add_argument(
        "--custom-objects",
        metavar="MODULE",
        help="a Python module defining the model's custom layers (imported; on PYTHONPATH)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the recipe in this process (no crash containment; for a debugger)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the recipe named by `args` (see `add_arguments`); returns the exit status."""
    if args.in_process:
        from tfcompress.recipe.runner import run_from_cli

        return run_from_cli(args)
    load_recipe(args.recipe)  # a bad recipe fails here, before a process starts
    return _run_contained(args)


def _child_argv(args: argparse.Namespace) -> list[str]:
    argv = ["compress", str(args.model), "--data", str(args.data), "--recipe", str(args.recipe)]
    argv += ["-o", str(args.output), "--in-process"]
    argv += ["--overwrite"] * args.overwrite + ["--unsafe"] * args.unsafe
    if args.custom_objects:
        argv += ["--custom-objects", args.custom_objects]
    return argv


def _run_contained(args: argparse.Namespace) -> int:
    """The recipe in a child process, its progress relayed line by line; a crash is an error."""
    environment = dict(os.environ)
    # the child imports what this process can: its custom-objects module, for one
    paths = [path for path in sys.path if path and os.path.isdir(path)]
    if environment.get("PYTHONPATH"):
        paths.append(environment["PYTHONPATH"])
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    command = [sys.executable, "-m", "tfcompress.cli", *_child_argv(args)]
    step = "loading the model and data"
    with subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("["):  # "[2/3] qat {...}": the step running now
                step = line.strip()
        status = child.wait()
    if status >= 0:
        return status
    raise IsolatedCrash(_crash_message(-status, step, args.output))


def _crash_message(number: int, step: str, output: str) -> str:
    return (
        f"the recipe's process died inside TensorFlow or another native library "
        f"({signal_name(number)}) "
        f"during '{step}'; nothing was written to '{output}' (it is written only when complete). "
        "A known cause: TensorFlow's oneDNN kernels crash on the gradient of some strided 1x1 "
        "convolutions; run again with TF_ENABLE_ONEDNN_OPTS=0 in the environment. "
        "--in-process runs the recipe in this process, for a debugger."
    )
