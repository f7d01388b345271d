"""Keras 2 / TF 2.x model files: which ones Keras 3 reads, which ones `tfc.load_model` reads.

Each `tf_keras.applications` architecture (random weights, seeded, BatchNormalization statistics
moved away from 0/1 so that copying them matters) is saved by tf_keras as `.h5` and as a
SavedModel, then loaded by plain `keras.saving.load_model` (Keras 3) and by `tfc.load_model`
(Keras 3, else tf_keras and the Keras 3 rebuild). The rebuilt model's outputs are compared with
tf_keras's on a held-out batch (another seed than the batch the rebuild checks itself on).

Run: .venv/bin/python benchmarks/legacy_files_bench.py   (writes benchmarks/results/legacy_files.json)
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_results  # noqa: E402

# architecture -> input size (the smallest each accepts, to keep the run short)
ARCHITECTURES = {
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "EfficientNetB0": 32,
    "ResNet50": 32,
    "DenseNet121": 32,
    "NASNetMobile": 32,
    "VGG16": 32,
    "Xception": 71,
    "InceptionV3": 75,
}


def _build(name: str, size: int):
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = getattr(tf_keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            weights = layer.get_weights()
            if len(weights) == 4:
                gamma, beta, mean, variance = weights
                layer.set_weights(
                    [
                        gamma * rng.uniform(0.5, 1.5, gamma.shape),
                        beta + rng.normal(0, 0.1, beta.shape),
                        mean + rng.normal(0, 0.1, mean.shape),
                        variance * rng.uniform(0.5, 2.0, variance.shape),
                    ]
                )
    return model


def _try_keras3(path: Path) -> str:
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - the outcome is the figure
        return f"refused: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return "read"


def _row(name: str, size: int, folder: Path) -> list[dict]:
    import tf_keras

    import tfcompress as tfc

    model = _build(name, size)
    held_out = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype("float32")
    expected = np.asarray(model(held_out, training=False))
    rows = []
    for kind in ("h5", "savedmodel"):
        path = folder / (f"{name}.h5" if kind == "h5" else f"{name}_savedmodel")
        if kind == "h5":
            model.save(path, include_optimizer=False)
        else:
            tf_keras.models.save_model(
                model, str(path), save_format="tf", include_optimizer=False, save_traces=False
            )
        row = {"architecture": name, "format": kind, "layers": len(model.layers)}
        row["keras3_load_model"] = "refused: not a file" if kind == "savedmodel" else None
        if kind == "h5":
            row["keras3_load_model"] = _try_keras3(path)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = tfc.load_model(path)
            got = np.asarray(loaded(held_out, training=False))
            row["tfc_load_model"] = "read"
            row["max_abs_difference"] = float(np.max(np.abs(got - expected)))
            row["output_scale"] = float(np.max(np.abs(expected)))
        except Exception as error:  # noqa: BLE001 - the outcome is the figure
            row["tfc_load_model"] = f"refused: {str(error)[:240]}"
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as name:
        for architecture, size in ARCHITECTURES.items():
            rows.extend(_row(architecture, size, Path(name)))
    read = [row for row in rows if row["tfc_load_model"] == "read"]
    write_results(
        "legacy_files",
        {
            "description": "Keras 2 (tf_keras) .h5 files and SavedModels of tf_keras.applications "
            "architectures: read by plain Keras 3, and by tfc.load_model (outputs against "
            "tf_keras's on a held-out batch)",
            "files": len(rows),
            "keras3_reads": sum(row["keras3_load_model"] == "read" for row in rows),
            "tfc_load_model_reads": len(read),
            "worst_max_abs_difference": max(
                (row["max_abs_difference"] for row in read), default=None
            ),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
