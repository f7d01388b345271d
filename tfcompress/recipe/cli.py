"""The `tfcompress compress` command: arguments (light, no TensorFlow) and the run."""

from __future__ import annotations

import argparse


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


def run(args: argparse.Namespace) -> int:
    """Run the recipe named by `args` (see `add_arguments`); returns the exit status."""
    from tfcompress.recipe.runner import run_from_cli

    return run_from_cli(args)
