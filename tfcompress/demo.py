"""The main job (`make demo` / `tfcompress demo`): one digits CNN, every deployment mode, one table.

It trains a small Keras 3 CNN on scikit-learn's digits, converts it to every TFLite mode (and
adds the rows each compression method contributes), measures each file on the LiteRT
interpreter, writes the `.tflite` files, a JSON and a Markdown report and a plot of accuracy
against size.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from tfcompress.converter import benchmark_tflite, convert, evaluate_tflite, inspect, save_tflite
from tfcompress.converter.convert import CALIBRATED_MODES, MODES
from tfcompress.data import Split, calibration_sample, load_digits
from tfcompress.models import build_digits_cnn, compile_classifier

# A row maker returns (name, trained model) or (name, trained model, extra convert() options).
RowMaker = Callable[[Split, keras.Model], list[tuple]]


@dataclass
class DemoRow:
    """One line of the demo table, measured on the LiteRT interpreter."""

    name: str
    mode: str
    file: str
    accuracy: float
    bytes: int
    gzip_bytes: int
    median_ms: float
    float_ops: int


def row_makers() -> list[tuple[str, RowMaker]]:
    """The compression methods that add rows to the demo (QAT, pruning, distillation, sharing)."""
    from tfcompress.demos import distillation, pruning, qat, sharing

    return [
        ("qat", qat.make_rows),
        ("pruning", pruning.make_rows),
        ("distillation", distillation.make_rows),
        ("sharing", sharing.make_rows),
    ]


def train_float_model(split: Split, epochs: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = compile_classifier(build_digits_cnn(width=32))
    model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def measure(name: str, mode: str, flatbuffer: bytes, split: Split, out_dir: Path) -> DemoRow:
    path = save_tflite(flatbuffer, out_dir / f"{name}.tflite", overwrite=True)
    return DemoRow(
        name=name,
        mode=mode,
        file=str(path),
        accuracy=evaluate_tflite(flatbuffer, split.x_test, split.y_test),
        bytes=len(flatbuffer),
        gzip_bytes=len(gzip.compress(flatbuffer, compresslevel=9)),
        median_ms=benchmark_tflite(flatbuffer, threads=1, runs=200, warmup=20).median_ms,
        float_ops=len(inspect(flatbuffer).float_ops),
    )


def run_demo(
    out_dir: str | os.PathLike = "tflite_models",
    epochs: int = 15,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the demo and write its outputs under `out_dir`; returns the report as a dict.

    Example:
        >>> report = run_demo(tempfile.mkdtemp(), epochs=1, log=lambda _: None)  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    split = load_digits()
    log(f"Training the digits CNN ({epochs} epochs, {len(split.x_train)} images)...")
    model = train_float_model(split, epochs)
    keras_accuracy = float(model.evaluate(split.x_test, split.y_test, verbose=0)[1])
    calibration = calibration_sample(split.x_train, 200)
    rows = []
    for mode in MODES:
        log(f"Converting to {mode}...")
        data = calibration if mode in CALIBRATED_MODES else None
        rows.append(measure(f"digits_{mode}", mode, convert(model, mode, data), split, out))
    for method, maker in row_makers():
        for name, variant, *options in maker(split, model):
            log(f"{method}: converting '{name}' to int8...")
            flatbuffer = convert(variant, "int8", calibration, **(options[0] if options else {}))
            rows.append(measure(f"digits_{_file_stem(name)}", "int8", flatbuffer, split, out))
    report = {
        "dataset": "scikit-learn digits (8x8, 10 classes)",
        "test_images": len(split.x_test),
        "keras_float_accuracy": keras_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [asdict(row) for row in rows],
    }
    _write_text(out / "report.json", json.dumps(report, indent=2))
    _write_text(out / "report.md", markdown_table(report))
    _plot(rows, keras_accuracy, out / "accuracy_vs_size.png")
    log("")
    log(markdown_table(report))
    log(
        f"Wrote {len(rows)} .tflite files, report.json, report.md and accuracy_vs_size.png to {out}/"
    )
    return report


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def markdown_table(report: dict) -> str:
    lines = [
        f"Keras float accuracy: {report['keras_float_accuracy']:.4f} on {report['test_images']} test images",
        "",
        "| model | mode | accuracy (LiteRT) | bytes | gzip bytes | median ms (1 thread) | float ops |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['name']} | {row['mode']} | {row['accuracy']:.4f} | {row['bytes']:,} | "
            f"{row['gzip_bytes']:,} | {row['median_ms']:.3f} | {row['float_ops']} |"
        )
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _plot(rows: list[DemoRow], keras_accuracy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, row in enumerate(rows):
        kib, accuracy = row.gzip_bytes / 1024, row.accuracy * 100  # gzip: what a download costs
        axis.scatter(kib, accuracy)
        axis.annotate(
            row.name.removeprefix("digits_"),
            (kib, accuracy),
            textcoords="offset points",
            xytext=(5, 6 + 9 * (index % 3)),
            fontsize=8,
        )
    axis.set_xscale("log")
    axis.axhline(keras_accuracy * 100, linestyle="--", color="grey", label="Keras float")
    axis.set_xlabel("gzip-compressed file size (KiB, log scale)")
    axis.set_ylabel("test accuracy on LiteRT (%)")
    axis.set_title("digits CNN: accuracy against size")
    axis.legend(loc="lower right")
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
