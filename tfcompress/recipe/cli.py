"""The `tfcompress compress` command: arguments (light, no TensorFlow) and the run.

The recipe trains (pruning, clustering, distillation, QAT) and converts inside TensorFlow, whose
native kernels can crash the process (a segmentation fault in a gradient kernel). The command
therefore runs the recipe in a Python process of its own (`recipe.isolated`) and relays its
progress: a crash there becomes a clear error naming the step it happened in, the output folder
is left as it was (it is written only when complete), and the calling process lives on.
`--in-process` runs it in this process instead (for a debugger).
"""

from __future__ import annotations

import argparse
import sys

from tfcompress.recipe.isolated import call_runner, run_isolated
from tfcompress.recipe.schema import load_recipe


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
    load_recipe(args.recipe)  # a bad recipe fails here, before any process starts
    if args.in_process:
        return call_runner("run_from_cli", args, log=_stderr)
    return run_isolated(
        "run_from_cli",
        args,
        output=args.output,
        log=_stderr,
        in_process_hint="--in-process runs the recipe in this process, for a debugger.",
    )


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
