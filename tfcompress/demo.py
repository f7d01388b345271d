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
from typing import Any

import keras

from tfcompress.core.optional import available, require
from tfcompress.data import Split, calibration_sample, load_digits
from tfcompress.demos import distillation, pruning, qat, sharing
from tfcompress.export import convert, save_tflite
from tfcompress.models import build_digits_cnn, compile_classifier
from tfcompress.tflite.convert import CALIBRATED_MODES, MODES
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.runtime import benchmark_tflite, evaluate_tflite

# A row maker trains from the float model (for its own number of epochs, or the given one) and
# returns (name, trained model) or (name, trained model, extra convert() options).
RowMaker = Callable[[Split, keras.Model, int | None], list[tuple]]


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
    fine_tune_epochs: int | None = None,
) -> dict:
    """Run the demo and write its outputs under `out_dir`; returns the report as a dict.

    `epochs` trains the float model; `fine_tune_epochs` trains every compression method's model
    (None: each method's own schedule, the one the published table uses). `epochs=1,
    fine_tune_epochs=1` runs every row quickly, with lower accuracies.

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
        for name, variant, *options in maker(split, model, fine_tune_epochs):
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
    plotted = available("matplotlib")
    if plotted:
        _plot(rows, keras_accuracy, out / "accuracy_vs_size.png")
    log("")
    log(markdown_table(report))
    plot = " and accuracy_vs_size.png" if plotted else ""
    files = "report.json, report.md" + plot if plot else "report.json and report.md"
    log(f"Wrote {len(rows)} .tflite files, {files} to {out}/")
    if not plotted:
        log("No plot: it needs matplotlib (pip install 'tfcompress[plots]').")
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


def place_labels(axis: Any, points: list[tuple[float, float]], labels: list[str]) -> list[Any]:
    """Annotate each point with its label where the label overlaps no other label and no point.

    Labels of points that sit on top of each other (int8, dynamic and int16x8 files are almost the
    same size and accuracy) are pushed outwards, ring by ring, with a thin line back to their
    point, so every label stays readable. Placement uses the renderer's real text extents.

    Args:
        axis: the matplotlib axes the points are drawn in (scales and limits already set).
        points: `(x, y)` in data coordinates, one per label.
        labels: the text of each label.

    Returns:
        The matplotlib `Annotation` of each label, in the order of `labels`.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> figure, axis = plt.subplots()
        >>> _ = axis.scatter([1, 1.01], [2, 2.01])
        >>> first, second = place_labels(axis, [(1, 2), (1.01, 2.01)], ["int8", "dynamic"])
        >>> renderer = figure.canvas.get_renderer()
        >>> bool(first.get_window_extent(renderer).overlaps(second.get_window_extent(renderer)))
        False
        >>> plt.close(figure)
    """
    from matplotlib.transforms import Bbox

    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    to_pixels = axis.transData.transform
    scale = figure.dpi / 72.0  # offsets are in points, extents in pixels
    pixels = [tuple(to_pixels(point)) for point in points]
    taken = [
        Bbox.from_extents(x - 4 * scale, y - 4 * scale, x + 4 * scale, y + 4 * scale)
        for x, y in pixels
    ]
    frame = axis.get_window_extent(renderer)
    order = sorted(range(len(points)), key=lambda i: -points[i][1])  # top first: it has room
    placed: dict[int, Any] = {}
    for index in order:
        annotation = None
        for ring, (dx, dy) in _candidate_offsets():
            annotation = axis.annotate(
                labels[index],
                points[index],
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=8,
                ha="left" if dx >= 0 else "right",
                va="bottom" if dy >= 0 else "top",
                arrowprops={"arrowstyle": "-", "color": "0.35", "lw": 0.8} if ring else None,
            )
            box = annotation.get_window_extent(renderer).padded(1.5 * scale)
            inside = frame.containsx(box.x0) and frame.containsx(box.x1)
            inside = inside and frame.containsy(box.y0) and frame.containsy(box.y1)
            free = inside and not any(box.overlaps(other) for other in taken)
            if free and _nearest_is_own(box, index, pixels):
                taken.append(box)
                break
            annotation.remove()
            annotation = None
        if annotation is None:  # nowhere free: fall back to the first spot rather than dropping it
            annotation = axis.annotate(
                labels[index], points[index], textcoords="offset points", xytext=(5, 5), fontsize=8
            )
            taken.append(annotation.get_window_extent(renderer))
        placed[index] = annotation
    return [placed[i] for i in range(len(points))]


def _nearest_is_own(box: Any, index: int, pixels: list[tuple[float, float]]) -> bool:
    """True when no other point is clearly nearer the label than its own (no mislabelling)."""

    def distance(point: tuple[float, float]) -> float:
        dx = max(box.x0 - point[0], 0.0, point[0] - box.x1)
        dy = max(box.y0 - point[1], 0.0, point[1] - box.y1)
        return (dx * dx + dy * dy) ** 0.5

    own = pixels[index]
    mine = distance(own)
    return all(
        distance(other) + 2.0 >= mine
        for other in pixels
        if abs(other[0] - own[0]) + abs(other[1] - own[1]) > 6.0  # same spot: leader line decides
    )


def _candidate_offsets() -> list[tuple[int, tuple[float, float]]]:
    """(ring, (dx, dy)) in points: right/left/above/below first, then ever wider rings."""
    candidates = []
    for ring, radius in enumerate((5, 14, 24, 36, 50, 66)):
        for dx, dy in ((1, 0.4), (-1, 0.4), (1, -1), (-1, -1), (0.2, 1.6), (0.2, -1.6),
                       (1.6, 1.6), (-1.6, 1.6), (1.6, -1.6), (-1.6, -1.6)):  # fmt: skip
            candidates.append((ring, (dx * radius, dy * radius)))
    return candidates


def plot_accuracy_vs_size(
    points: list[tuple[str, float, float]], reference_accuracy: float | None, title: str
) -> Any:
    """A figure of accuracy (%) against gzip size (KiB, log scale), one labelled point per file.

    Args:
        points: `(label, gzip bytes, accuracy in [0, 1])` for each file.
        reference_accuracy: accuracy of the Keras float model, drawn as a dashed line (or None).
        title: the figure's title.

    Returns:
        The matplotlib `Figure` (the caller saves and closes it).

    Example:
        >>> figure = plot_accuracy_vs_size([("int8", 20_000, 0.9), ("float32", 80_000, 0.91)], 0.91, "t")
        >>> len(figure.axes[0].texts)
        2
    """
    matplotlib = require("matplotlib", "plot_accuracy_vs_size")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    xy = [(size / 1024, accuracy * 100) for _, size, accuracy in points]
    for x, y in xy:
        axis.scatter(x, y)
    axis.set_xscale("log")
    if reference_accuracy is not None:
        axis.axhline(reference_accuracy * 100, linestyle="--", color="grey", label="Keras float")
        axis.legend(loc="lower right")
    axis.set_xlabel("gzip-compressed file size (KiB, log scale)")
    axis.set_ylabel("test accuracy on LiteRT (%)")
    axis.set_title(title)
    axis.margins(x=0.25, y=0.2)  # room around the outer points for their labels
    figure.tight_layout()
    place_labels(axis, xy, [label for label, _, _ in points])
    return figure


def save_figure(figure: Any, path: Path) -> None:
    """Write a figure as PNG atomically (temp file, then rename) and close it."""
    import matplotlib.pyplot as plt

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _plot(rows: list[DemoRow], keras_accuracy: float, path: Path) -> None:
    points = [(row.name.removeprefix("digits_"), row.gzip_bytes, row.accuracy) for row in rows]
    figure = plot_accuracy_vs_size(points, keras_accuracy, "digits CNN: accuracy against size")
    save_figure(figure, path)
