"""`tfcompress` command line: demo, convert, inspect, evaluate, bench, micro."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfcompress.tflite.errors import ConversionError, TFLiteFileError
from tfcompress.tflite.isolation import IsolatedCrash

DESCRIPTION = """\
Compress Keras models and deploy them as TFLite flatbuffers measured on the LiteRT interpreter.

typical use:
  tfcompress demo                                   train a digits CNN, convert to every mode, print a table
  tfcompress convert model.keras --mode int8 --calibration data.npz -o model.tflite
  tfcompress inspect model.tflite --edgetpu         ops, dtypes, sizes and the Edge TPU mapping
  tfcompress evaluate model.tflite --data test.npz  accuracy on LiteRT
  tfcompress bench model.tflite --threads 1         median and p90 latency
  tfcompress debug model.keras --data data.npz      int8 error per Keras layer, worst first
  tfcompress micro model.tflite -o firmware/        TFLM: does it run, arena and flash, C++ files

DATA.npz files hold arrays named x (inputs) and y (labels); the word 'digits' instead of a
file uses scikit-learn's built-in digits data (8x8x1 images).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfcompress",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the main job on the digits dataset")
    demo.add_argument(
        "--out", default="tflite_models", help="output folder (default: tflite_models)"
    )
    demo.add_argument("--epochs", type=int, default=15, help="training epochs of the float model")
    demo.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=None,
        help="training epochs of every compressed model (default: each method's own schedule)",
    )

    conv = commands.add_parser("convert", help="convert a .keras file or SavedModel to .tflite")
    conv.add_argument("model", help="a .keras / .h5 file or a SavedModel directory")
    conv.add_argument(
        "--mode",
        default="float32",
        choices=["float32", "dynamic", "float16", "int8", "int16x8", "edgetpu"],
        help="float32 | dynamic (int8 weights) | float16 | int8 (full integer) | int16x8 | "
        "edgetpu (full integer, uint8 I/O, batch 1)",
    )
    conv.add_argument(
        "--calibration", help="DATA.npz (array x) or 'digits'; needed by int8, int16x8, edgetpu"
    )
    conv.add_argument(
        "--num-samples", type=int, default=200, help="calibration samples (default 200)"
    )
    conv.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    conv.add_argument(
        "--overwrite", action="store_true", help="replace the output file if it exists"
    )
    conv.add_argument(
        "--sparsity", action="store_true", help="encode sparse weights (pruned models)"
    )
    conv.add_argument(
        "--unsafe", action="store_true", help="load Lambda layers (turns off Keras safe mode)"
    )
    conv.add_argument(
        "--keep-float",
        nargs="+",
        metavar="LAYER",
        help="int8/edgetpu: Keras layers to keep in float inside the integer file",
    )
    conv.add_argument(
        "--int16-layers",
        nargs="+",
        metavar="LAYER",
        help="int8: Keras layers whose outputs stay 16-bit inside the int8 file",
    )

    insp = commands.add_parser(
        "inspect", help="ops, dtypes, quantization and sizes of a .tflite file"
    )
    insp.add_argument("file")
    insp.add_argument("--edgetpu", action="store_true", help="also predict the Edge TPU mapping")
    insp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    evaluate = commands.add_parser(
        "evaluate", help="accuracy (or mae/mse) of a .tflite file on LiteRT"
    )
    evaluate.add_argument("file")
    evaluate.add_argument("--data", required=True, help="DATA.npz with arrays x and y, or 'digits'")
    evaluate.add_argument(
        "--metric",
        default=None,
        choices=["accuracy", "mae", "mse"],
        help="default: accuracy for class labels, mae for real-valued targets",
    )
    evaluate.add_argument(
        "--output",
        help="which output to score when the model has several: its position or its name",
    )
    evaluate.add_argument(
        "--builtin", action="store_true", help="builtin kernels instead of XNNPACK"
    )

    bench = commands.add_parser("bench", help="latency of a .tflite file on LiteRT")
    bench.add_argument("file")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--runs", type=int, default=100)
    bench.add_argument("--warmup", type=int, default=10)
    bench.add_argument("--builtin", action="store_true", help="builtin kernels instead of XNNPACK")

    debug = commands.add_parser(
        "debug", help="quantization error of each Keras layer in the integer file, worst first"
    )
    debug.add_argument("model", help="a .keras file (float or quantization-aware)")
    debug.add_argument("--data", required=True, help="DATA.npz (array x) or 'digits'")
    debug.add_argument("--calibration", help="DATA.npz or 'digits' to calibrate (default: --data)")
    debug.add_argument("--mode", default="int8", choices=["int8", "edgetpu"])
    debug.add_argument("--tflite", help="debug this integer file (made from the model) instead")
    debug.add_argument("--num-samples", type=int, default=200, help="samples compared (200)")
    debug.add_argument(
        "--no-isolated", action="store_true", help="skip the per-layer isolated runs"
    )
    debug.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    debug.add_argument("--plot", metavar="OUT.png", help="also write a PNG bar chart")
    debug.add_argument(
        "--unsafe", action="store_true", help="load Lambda layers (turns off Keras safe mode)"
    )

    micro = commands.add_parser(
        "micro",
        help="check a .tflite file on TensorFlow Lite Micro and write its firmware files",
    )
    micro.add_argument("file")
    micro.add_argument(
        "-o", "--output", required=True, help="folder for NAME.cc, NAME.h and NAME_ops.h"
    )
    micro.add_argument(
        "--data",
        help="DATA.npz (array x) or 'digits': TFLM's outputs against LiteRT's reference kernels",
    )
    micro.add_argument(
        "--num-samples", type=int, default=100, help="samples of --data compared (default 100)"
    )
    micro.add_argument("--name", default="model", help="C name of the files and symbols (model)")
    micro.add_argument(
        "--margin", type=float, default=0.25, help="arena margin over the measured one (0.25)"
    )
    micro.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")

    from tfcompress.recipe import cli as recipe_cli  # light: argparse only, no TensorFlow

    recipe_cli.add_arguments(
        commands.add_parser(
            "compress", help="apply a recipe (QAT / prune / cluster / distill, then convert)"
        )
    )
    return parser


def load_arrays(spec: str, test_split: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays x and y from an .npz file, or the built-in digits split for 'digits'."""
    if spec == "digits":
        from tfcompress.data import load_digits

        split = load_digits()
        return (split.x_test, split.y_test) if test_split else (split.x_train, split.y_train)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"Data file '{path}' does not exist: pass an .npz file or 'digits'."
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            if "x" not in names:
                raise ValueError(
                    f"Data file '{path}' has arrays {names}; it needs one named 'x' (and 'y' for "
                    "evaluate): np.savez(path, x=inputs, y=labels)."
                )
            return arrays["x"], (arrays["y"] if "y" in names else None)
    except (OSError, EOFError) as error:
        raise ValueError(f"Could not read '{path}' as an .npz file: {error}") from error


def _demo(args: argparse.Namespace) -> int:
    from tfcompress.demo import run_demo

    run_demo(args.out, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs)
    return 0


def _convert(args: argparse.Namespace) -> int:
    import tfcompress as tfc

    output = Path(args.output)
    if output.exists() and not args.overwrite:  # fail before minutes of conversion, not after
        raise FileExistsError(f"'{output}' already exists; pass --overwrite to replace it.")
    data = load_arrays(args.calibration, test_split=False)[0] if args.calibration else None
    flatbuffer = tfc.convert(
        args.model,
        mode=args.mode,
        representative_data=data,
        num_samples=args.num_samples,
        sparsity=args.sparsity,
        safe_mode=not args.unsafe,
        progress=sys.stderr.isatty(),
        keep_float=args.keep_float,
        int16_layers=args.int16_layers,
    )
    tfc.save_tflite(flatbuffer, output, overwrite=args.overwrite)
    report = tfc.inspect(flatbuffer)
    print(
        f"wrote {output} ({len(flatbuffer):,} bytes, mode {args.mode}, "
        f"{len(report.float_ops)} float ops)"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    # inspect, evaluate and bench load only LiteRT and the flatbuffer schema, never TensorFlow
    from tfcompress.tflite.edgetpu import edgetpu_report
    from tfcompress.tflite.flatbuffer import inspect

    report = inspect(args.file)
    tpu = edgetpu_report(report) if args.edgetpu else None
    if args.json:
        payload = report.to_dict()
        if tpu is not None:
            payload["edgetpu"] = tpu.to_dict()
        print(json.dumps(payload, indent=2))
    else:
        print(report.summary())
        if tpu is not None:
            print()
            print(tpu.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tfcompress.tflite.runtime import evaluate_with_metric

    x, y = load_arrays(args.data)
    if y is None:
        raise ValueError(f"Data file '{args.data}' has no array 'y' with the labels or targets.")
    metric, score = evaluate_with_metric(
        args.file,
        x,
        y,
        metric=args.metric,
        progress=sys.stderr.isatty(),
        builtin_only=args.builtin,
        output=args.output,
    )
    which = f", output {args.output}" if args.output is not None else ""
    runtime = "LiteRT reference kernels" if args.builtin else "LiteRT XNNPACK"
    print(f"{metric}: {score:.4f} on {len(y)} samples ({args.file}{which}, {runtime})")
    return 0


def _debug(args: argparse.Namespace) -> int:
    from tfcompress.diagnose.debug import debug_quantization
    from tfcompress.tflite.source import load_source

    x = load_arrays(args.data)[0]
    calibration = load_arrays(args.calibration, test_split=False)[0] if args.calibration else None
    model = load_source(args.model, None, not args.unsafe, None).owner
    report = debug_quantization(
        model,
        x,
        args.mode,
        tflite=args.tflite,
        representative_data=calibration,
        num_samples=args.num_samples,
        isolated=not args.no_isolated,
    )
    print(report.summary())
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    if args.plot:
        print(f"wrote {report.plot(args.plot)}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from tfcompress.recipe import cli as recipe_cli

    return recipe_cli.run(args)


def _bench(args: argparse.Namespace) -> int:
    from tfcompress.tflite.runtime import benchmark_tflite

    latency = benchmark_tflite(
        args.file,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        builtin_only=args.builtin,
    )
    print(
        f"median {latency.median_ms:.3f} ms, p90 {latency.p90_ms:.3f} ms over {latency.runs} runs "
        f"({latency.threads} thread(s), {latency.delegate})"
    )
    return 0


def _micro(args: argparse.Namespace) -> int:
    # loads LiteRT and tflite-micro, never TensorFlow
    from tfcompress import micro

    x = load_arrays(args.data)[0][: args.num_samples] if args.data else None
    report = micro.check(args.file, x, arena_margin=args.margin)
    print(report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
        print(f"wrote {args.json}")
    if not report.runs:
        failing = report.failing_op
        where = f" (op {failing.index} {failing.name})" if failing is not None else ""
        raise micro.MicroError(
            f"TFLM cannot run {report.origin}{where}; no firmware files written: the report above "
            "says what to do."
        )
    files = micro.export(args.file, args.output, name=args.name, report=report)
    print("wrote " + ", ".join(str(path) for path in files.paths))
    return 0


_COMMANDS = {
    "demo": _demo,
    "convert": _convert,
    "inspect": _inspect,
    "evaluate": _evaluate,
    "bench": _bench,
    "compress": _compress,
    "debug": _debug,
    "micro": _micro,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tfcompress` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (
        ConversionError,
        TFLiteFileError,
        IsolatedCrash,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        IsADirectoryError,
        ValueError,
        TypeError,
    ) as error:
        print(f"tfcompress {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
