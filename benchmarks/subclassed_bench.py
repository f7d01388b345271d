"""Subclassed models through QAT and pruning to int8 files (issue 23), three seeds.

A research-style subclassed CNN (a stem convolution, a list of two residual blocks written as
custom layers with `keras.ops` between their layers, pooling, a dense head) is trained in float
on the digits training split, then:

- QAT: `tfc.quantize_model(model)`, one epoch of fit, `tfc.convert(qat, "int8")` with no
  calibration data; the int8 file's top-1 agreement with the Keras QAT model and its largest
  output difference in output steps, on the 450 held-out test digits;
- pruning: `tfc.prune_low_magnitude(model, ConstantSparsity(0.5))`, one epoch with
  `UpdatePruningStep`, `strip_pruning`, `tfc.convert(stripped, "int8", 200 training rows)`; the
  sparsity and the same agreement against the stripped Keras model.

Accuracies are on the held-out test digits. No figure is judged on the data it trained or
calibrated on.

Run: .venv/bin/python benchmarks/subclassed_bench.py   (writes benchmarks/results/subclassed.json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

import tfcompress as tfc
from tfcompress.data import load_digits
from tfcompress.tflite.runtime import run_tflite

SEEDS = (0, 1, 2)
FLOAT_EPOCHS = 6
EPOCHS = 1
BATCH = 64
L = keras.layers


class Residual(L.Layer):
    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv = L.Conv2D(filters, 3, padding="same")
        self.norm = L.BatchNormalization(momentum=0.9)

    def call(self, x: Any, training: bool = False) -> Any:
        return x + ops.relu(self.norm(self.conv(x), training=training))


class Net(keras.Model):
    def __init__(self, width: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stem = L.Conv2D(width, 3, activation="relu")
        self.blocks = [Residual(width), Residual(width)]
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(10)

    def call(self, x: Any, training: bool = False) -> Any:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(self.pool(x))


def _compile(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=["accuracy"])
    return model


def _compare(model: keras.Model, flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    keras_out = keras.ops.convert_to_numpy(model(x, training=False))
    tflite_out = run_tflite(flatbuffer, x)
    step = (keras_out.max() - keras_out.min()) / 255
    return {
        "keras_accuracy": float(np.mean(keras_out.argmax(1) == y)),
        "int8_accuracy": float(np.mean(tflite_out.argmax(1) == y)),
        "top1_agreement": float(np.mean(keras_out.argmax(1) == tflite_out.argmax(1))),
        "max_difference_in_output_steps": float(np.abs(keras_out - tflite_out).max() / step),
        "float_ops": tfc.inspect(flatbuffer).float_ops,
        "bytes": len(flatbuffer),
    }


def run_seed(seed: int) -> dict:
    split = load_digits()
    keras.utils.set_random_seed(seed)
    model = Net()
    model(split.x_train[:1])
    _compile(model, learning_rate=1e-2).fit(
        split.x_train, split.y_train, epochs=FLOAT_EPOCHS, batch_size=BATCH, verbose=0
    )
    float_accuracy = float(
        np.mean(model.predict(split.x_test, verbose=0).argmax(1) == split.y_test)
    )

    keras.utils.set_random_seed(seed)
    qat = _compile(tfc.quantize_model(model))
    qat.fit(split.x_train, split.y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    qat_row = _compare(qat, tfc.convert(qat, "int8"), split.x_test, split.y_test)

    keras.utils.set_random_seed(seed)
    pruned = _compile(
        tfc.prune_low_magnitude(model, tfc.pruning.ConstantSparsity(0.5, begin_step=0))
    )
    pruned.fit(
        split.x_train,
        split.y_train,
        epochs=EPOCHS,
        batch_size=BATCH,
        verbose=0,
        callbacks=[tfc.pruning.UpdatePruningStep()],
    )
    stripped = tfc.strip_pruning(pruned)
    flatbuffer = tfc.convert(stripped, "int8", split.x_train[:200])
    pruned_row = _compare(stripped, flatbuffer, split.x_test, split.y_test)
    pruned_row["sparsity"] = float(tfc.sparsity.get_model_sparsity(stripped))
    return {"seed": seed, "float_accuracy": float_accuracy, "qat": qat_row, "pruning": pruned_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/subclassed.json")
    args = parser.parse_args()
    rows = [run_seed(seed) for seed in SEEDS]
    result = {
        "model": "subclassed CNN: stem conv, a list of 2 residual custom layers, GAP, dense",
        "held_out": "digits test split (450)",
        "float_epochs": FLOAT_EPOCHS,
        "qat_and_pruning_epochs": EPOCHS,
        "seeds": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
