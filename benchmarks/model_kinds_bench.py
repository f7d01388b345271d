"""The model kinds users bring, through every tool: does each cell work, and does its file match?

Kinds: a U-Net (segmentation), a multi-output net (dict outputs: a class head and a regression
head), a regression net, a subclassed model, a custom layer with its own kernel, a `Lambda`,
audio front ends (STFT, Mel spectrogram, Conv1D on the waveform), Rescaling + augmentation on
uint8 images, and a keras.io-style transformer (token and position embedding).

Cells, each on the kind's float model trained a few epochs on a task built from package data
(scikit-learn digits, synthesized tones, token sequences):

- ptq: `tfc.convert(model, "int8", x_cal, validation_data=x_held)`;
- qat: `tfc.quantize_model`, one epoch of fit, `convert(qat, "int8", ...)`;
- pruning: `tfc.prune_low_magnitude` at 50 %, fit with `UpdatePruningStep`, strip, convert;
- clustering: `tfc.cluster_weights` with 16 clusters, fit, strip, convert per-tensor;
- micro: `convert(model, "int8", ..., target="micro")` (checked on TensorFlow Lite Micro);
- recipe: `tfcompress.recipe.compress` with a recipe that prunes to 50 % (1 epoch), trains
  quantization-aware (1 epoch) and converts to int8; the file is checked against the
  compressed Keras model on the recipe's held-out rows (`CompressResult.fidelity`).

A cell "works" when every call returns and the file matches its Keras model on the held-out
rows (`convert`'s own check: `ConvertedFile.fidelity.passed`, on LiteRT with XNNPACK; LiteRT's
reference kernels for micro). Otherwise it records the first line of the error or the figures of
the warning. Figures per seed and their minimum over seeds.

Run: .venv/bin/python benchmarks/model_kinds_bench.py [--quick] [--kinds unet,regression]
(writes benchmarks/results/model_kinds.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.data import load_digits
from tfcompress.recipe import compress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

L = keras.layers
CELLS = ("ptq", "qat", "pruning", "clustering", "micro", "recipe")
RECIPE = {
    "steps": [
        {"prune": {"final_sparsity": 0.5, "epochs": 1}},
        {"qat": {"epochs": 1}},
        {"convert": {"mode": "int8"}},
    ],
    "training": {"batch_size": 32, "holdout": 0.25},
}


@keras.saving.register_keras_serializable(package="model_kinds")
class ScaledDense(L.Layer):
    """A user's custom layer with its own kernel: x @ kernel * scale."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units), initializer="glorot_uniform"
        )
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, inputs: Any) -> Any:
        return keras.ops.matmul(inputs, self.kernel) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="model_kinds")
class SmallNet(keras.Model):
    """A subclassed model in the research style: layers in __init__, used in call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv = L.Conv2D(8, 3, padding="same", activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.hidden = L.Dense(32, activation="relu")
        self.head = L.Dense(10)

    def call(self, inputs: Any) -> Any:
        return self.head(self.hidden(self.pool(self.conv(inputs))))


@keras.saving.register_keras_serializable(package="model_kinds")
class TokenAndPositionEmbedding(L.Layer):
    """keras.io's text-classification transformer embedding: tokens plus positions."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
        self.token_emb = L.Embedding(vocab_size, embed_dim)
        self.pos_emb = L.Embedding(maxlen, embed_dim)

    def call(self, x: Any) -> Any:
        positions = keras.ops.arange(0, keras.ops.shape(x)[-1], 1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "maxlen": self.maxlen,
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
        }


def _images() -> tuple[np.ndarray, np.ndarray]:
    split = load_digits()
    x = np.concatenate([split.x_train, split.x_test])
    y = np.concatenate([split.y_train, split.y_test])
    return x.astype("float32"), y


def _tones(count: int = 900, length: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, count)
    t = np.arange(length) / length
    waves = np.sin(2 * np.pi * (8 + 16 * labels)[:, None] * t[None])
    waves = waves + 0.3 * rng.normal(size=(count, length))
    return waves.astype("float32"), labels


def _tokens(count: int = 900, length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, count)
    x = rng.integers(4, 64, size=(count, length))
    x[:, 3] = labels  # the class is one token at a fixed place
    return x.astype("int32"), labels


def _sparse_ce() -> Any:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def kind_unet() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, _ = _images()
    masks = (x[..., 0] > 0.5).astype("int32")
    inputs = keras.Input((8, 8, 1))
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    e2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.MaxPooling2D()(e1))
    up = L.UpSampling2D()(e2)
    d1 = L.Conv2D(8, 3, padding="same", activation="relu")(L.Concatenate()([up, e1]))
    model = keras.Model(inputs, L.Conv2D(2, 1)(d1), name="unet")
    return model, x, masks, _sparse_ce()


def kind_multi_output() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    size = x.reshape(len(x), -1).mean(axis=1, keepdims=True)
    inputs = keras.Input((8, 8, 1))
    h = L.Flatten()(L.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    h = L.Dense(32, activation="relu")(h)
    outputs = {"digit": L.Dense(10, name="digit")(h), "size": L.Dense(1, name="size")(h)}
    model = keras.Model(inputs, outputs, name="multi_output")
    return model, x, {"digit": y, "size": size}, {"digit": _sparse_ce(), "size": "mse"}


def kind_regression() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    target = (x.reshape(len(x), -1).mean(axis=1) * 10 + y).astype("float32")[:, None]
    inputs = keras.Input((8, 8, 1))
    h = L.Dense(32, activation="relu")(L.Flatten()(inputs))
    return keras.Model(inputs, L.Dense(1)(h), name="regression"), x, target, "mse"


def kind_subclassed() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    model = SmallNet(name="subclassed")
    model(x[:1])
    return model, x, y, _sparse_ce()


def kind_custom_layer() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    inputs = keras.Input((8, 8, 1))
    h = L.Activation("relu")(ScaledDense(32, name="scaled")(L.Flatten()(inputs)))
    return keras.Model(inputs, L.Dense(10)(h), name="custom_layer"), x, y, _sparse_ce()


def kind_lambda() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    inputs = keras.Input((8, 8, 1))
    h = L.Lambda(lambda t: t * 2.0 - 1.0, name="center")(inputs)
    h = L.Dense(32, activation="relu")(L.Flatten()(h))
    return keras.Model(inputs, L.Dense(10)(h), name="lambda"), x, y, _sparse_ce()


def kind_stft() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _tones()
    inputs = keras.Input((256, 1))
    front = L.STFTSpectrogram(frame_length=64, frame_step=32, fft_length=64, name="stft")
    h = L.Dense(16, activation="relu")(L.Flatten()(front(inputs)))
    return keras.Model(inputs, L.Dense(4)(h), name="stft"), x[..., None], y, _sparse_ce()


def kind_mel() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _tones()
    inputs = keras.Input((256,))
    front = L.MelSpectrogram(
        fft_length=64, sequence_stride=32, sequence_length=64, num_mel_bins=16, name="mel"
    )
    h = L.Dense(16, activation="relu")(L.Flatten()(front(inputs)))
    return keras.Model(inputs, L.Dense(4)(h), name="mel"), x, y, _sparse_ce()


def kind_conv1d_audio() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _tones()
    inputs = keras.Input((256, 1))
    h = L.Conv1D(8, 9, strides=4, activation="relu")(inputs)
    h = L.Conv1D(16, 5, strides=2, activation="relu")(h)
    h = L.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, L.Dense(4)(h), name="conv1d_audio"), x[..., None], y, _sparse_ce()


def kind_rescaling_augmentation() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _images()
    raw = np.round(x * 255).astype("uint8")
    inputs = keras.Input((8, 8, 1))
    h = L.RandomFlip("horizontal")(inputs)
    h = L.RandomTranslation(0.1, 0.1)(h)
    h = L.Rescaling(1 / 255.0)(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = L.Dense(32, activation="relu")(L.Flatten()(h))
    model = keras.Model(inputs, L.Dense(10)(h), name="rescaling_augmentation")
    return model, raw, y, _sparse_ce()


def kind_transformer() -> tuple[keras.Model, np.ndarray, Any, Any]:
    x, y = _tokens()
    inputs = keras.Input((16,), dtype="int32")
    h = TokenAndPositionEmbedding(16, 64, 16, name="embed")(inputs)
    attention = L.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = L.LayerNormalization()(h + attention)
    h = L.Dense(16, activation="relu")(L.Flatten()(h))
    return keras.Model(inputs, L.Dense(4)(h), name="transformer"), x, y, _sparse_ce()


KINDS: dict[str, Callable[[], tuple[keras.Model, np.ndarray, Any, Any]]] = {
    "unet": kind_unet,
    "multi_output": kind_multi_output,
    "regression": kind_regression,
    "subclassed": kind_subclassed,
    "custom_layer": kind_custom_layer,
    "lambda": kind_lambda,
    "stft": kind_stft,
    "mel": kind_mel,
    "conv1d_audio": kind_conv1d_audio,
    "rescaling_augmentation": kind_rescaling_augmentation,
    "transformer": kind_transformer,
}


def _rows(labels: Any, index: np.ndarray) -> Any:
    if isinstance(labels, dict):
        return {key: value[index] for key, value in labels.items()}
    return labels[index]


def _fit(model: keras.Model, x: np.ndarray, y: Any, loss: Any, epochs: int, **kw: Any) -> None:
    model.compile(keras.optimizers.Adam(3e-3), loss=loss)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, **kw)


def _figures(converted: Any) -> dict[str, Any]:
    fidelity = converted.fidelity  # a ConvertedFile, or the recipe's CompressResult
    if fidelity is None:
        return {"works": False, "error": "no fidelity figures"}
    outputs = {
        o.name: {"kind": o.kind, "agreement": o.agreement, "sqnr_db": round(o.sqnr_db, 2)}
        for o in fidelity.outputs
    }
    return {"works": fidelity.passed, "runtime": fidelity.runtime, "outputs": outputs}


def _cell(run: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _figures(run())
        mismatch = [str(w.message) for w in caught if "does not compute" in str(w.message)]
        if mismatch:
            result["warning"] = mismatch[0][:400]
    except Exception as error:  # noqa: BLE001 - a cell records its failure, the table goes on
        lines = [line for line in str(error).splitlines() if line.strip()]
        result = {
            "works": False,
            "error": f"{type(error).__name__}: {(lines[0] if lines else '')[:300]}",
            "where": traceback.extract_tb(error.__traceback__)[-1].name,
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def run_kind(
    name: str, seed: int, epochs: int, only: tuple[str, ...] = CELLS
) -> dict[str, dict[str, Any]]:
    keras.utils.set_random_seed(seed)
    model, x, y, loss = KINDS[name]()
    order = np.random.default_rng(seed).permutation(len(x))
    train, held = order[: int(0.75 * len(x))], order[int(0.75 * len(x)) :]
    x_train, y_train, x_held = x[train], _rows(y, train), x[held][:200]
    _fit(model, x_train, y_train, loss, epochs)
    calibration = x_train[:200]
    weights = model.get_weights()

    def fresh() -> keras.Model:
        model.set_weights(weights)
        return model

    def ptq() -> Any:
        return tfc.convert(fresh(), "int8", calibration, validation_data=x_held)

    def qat() -> Any:
        quantized = tfc.quantize_model(fresh())
        _fit(quantized, x_train, y_train, loss, 1)
        return tfc.convert(quantized, "int8", calibration, validation_data=x_held)

    def pruning() -> Any:
        pruned = tfc.prune_low_magnitude(fresh())
        _fit(pruned, x_train, y_train, loss, 1, callbacks=[tfc.pruning.UpdatePruningStep()])
        stripped = tfc.strip_pruning(pruned)
        return tfc.convert(stripped, "int8", calibration, validation_data=x_held)

    def clustering() -> Any:
        clustered = tfc.cluster_weights(fresh(), number_of_clusters=16)
        _fit(clustered, x_train, y_train, loss, 1)
        stripped = tfc.strip_clustering(clustered)
        return tfc.convert(stripped, "int8", calibration, validation_data=x_held, per_channel=False)

    def micro() -> Any:
        return tfc.convert(fresh(), "int8", calibration, validation_data=x_held, target="micro")

    def recipe() -> Any:
        fresh().compile(keras.optimizers.Adam(3e-3), loss=loss)  # the recipe reads the loss
        with tempfile.TemporaryDirectory() as folder:
            return compress(fresh(), (x_train, y_train), RECIPE, Path(folder) / "out", log=None)

    cells = {
        "ptq": ptq,
        "qat": qat,
        "pruning": pruning,
        "clustering": clustering,
        "micro": micro,
        "recipe": recipe,
    }
    return {cell: _cell(cells[cell]) for cell in only}


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    cells = [runs for kind in results.values() for runs in kind.values()]
    works = sum(all(run["works"] for run in runs) for runs in cells)
    agreements = [
        output["agreement"]
        for runs in cells
        for run in runs
        for output in run.get("outputs", {}).values()
        if output["agreement"] is not None
    ]
    return {
        "cells": len(cells),
        "cells_that_work_on_every_seed": works,
        "share_that_works": round(works / len(cells), 3) if cells else None,
        "lowest_agreement": min(agreements) if agreements else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one epoch")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", default=",".join(CELLS), help="the cells to run")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the kinds and cells run in results/model_kinds.json (same seeds and "
        "epochs)",
    )
    args = parser.parse_args()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    epochs = 1 if args.quick else 5
    kinds = args.kinds.split(",")
    only = tuple(args.cells.split(","))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in kinds:
        runs = [run_kind(name, seed, epochs, only) for seed in seeds]
        results[name] = {cell: [run[cell] for run in runs] for cell in only}
        done = {cell: all(r["works"] for r in results[name][cell]) for cell in only}
        print(name, done, flush=True)
    payload: dict[str, Any] = {"seeds": seeds, "epochs": epochs}
    if args.update:
        saved = json.loads((Path(__file__).parent / "results" / "model_kinds.json").read_text())
        if (saved["seeds"], saved["epochs"]) != (seeds, epochs):
            parser.error("--update needs the seeds and epochs of the saved results")
        results = {
            name: {**saved["kinds"].get(name, {}), **results.get(name, {})}
            for name in {**saved["kinds"], **results}
        }
        payload["updated"] = {"kinds": kinds, "cells": list(only)}
    write_results("model_kinds", {**payload, "summary": summarize(results), "kinds": results})


if __name__ == "__main__":
    main()
