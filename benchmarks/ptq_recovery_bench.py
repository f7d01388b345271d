"""PTQ accuracy recovery on a trained depthwise-separable net (issue 12, tfcompress.ptq.recovery).

MobileNetV2 (alpha 0.35, `keras.applications.MobileNetV2(weights=None)`, BatchNorm momentum 0.9
so its statistics settle in a short training) is trained on the digits upsampled to 32x32 (nearest
neighbour, grey repeated on 3 channels), then converted with 200 calibration samples and scored
on the LiteRT interpreter (`tfc.evaluate_tflite`, the 450 test digits):

- per-tensor int8 (`per_channel=False`): naive, against fold + equalize + bias correction
  (ReLU6 replaced by ReLU as in the DFQ paper: the float accuracy of that model is reported), and
  with `relu6="skip"` (nothing to equalize in MobileNetV2: every pair has a ReLU6);
- 4-bit weights (INT4 file, 8-bit activations, per-channel): round-to-nearest
  (`("adaround", {"iterations": 0})`) against AdaRound, both followed by bias correction, and
  AdaRound alone; per-channel int8 as the reference.

Each step's wall time is measured once (a loaded machine: rerun on a quiet one for figures).

Run: .venv/bin/python benchmarks/ptq_recovery_bench.py [--seeds 3] [--epochs 15]
     (writes benchmarks/results/ptq_recovery.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.data import load_digits  # noqa: E402
from tfcompress.ptq.recovery import (  # noqa: E402
    adaround,
    bias_correction,
    equalize,
    fold_batch_norms,
)

SIZE = 32
CALIBRATION = 200


def _images(x: np.ndarray) -> np.ndarray:
    up = np.repeat(np.repeat(x, SIZE // 8, axis=1), SIZE // 8, axis=2)
    return np.repeat(up, 3, axis=-1).astype("float32")


def _train(seed: int, epochs: int, x: np.ndarray, y: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3),
        alpha=0.35,
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def _timed(function, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def run_seed(seed: int, epochs: int, iterations: int) -> dict:
    split = load_digits()
    x_train, x_test = _images(split.x_train), _images(split.x_test)
    y_test = split.y_test
    model, train_s = _timed(_train, seed, epochs, x_train, split.y_train)
    calib = x_train[:CALIBRATION]

    def keras_accuracy(m: keras.Model) -> float:
        return float(np.mean(np.asarray(m.predict(x_test, verbose=0)).argmax(-1) == y_test))

    def litert(m: keras.Model, **options) -> float:
        return tfc.evaluate_tflite(tfc.convert(m, "int8", calib, **options), x_test, y_test)

    row: dict = {"seed": seed, "train_s": train_s, "float": keras_accuracy(model)}
    folded, row["fold_s"] = _timed(fold_batch_norms, model)
    row["int8_per_channel"] = litert(folded)
    # per-tensor int8: the DFQ phenomenon
    row["per_tensor_naive"] = litert(folded, per_channel=False)
    skipped, report = equalize(model, return_report=True)
    row["equalize_relu6_skip_pairs"] = len(report.pairs)
    row["per_tensor_equalize_relu6_skip"] = litert(skipped, per_channel=False)
    (flat, report), row["equalize_s"] = _timed(equalize, model, relu6="replace", return_report=True)
    row["equalized_pairs"] = len(report.pairs)
    row["equalized_absorbed_layers"] = len(report.absorbed)
    row["float_relu6_replaced"] = keras_accuracy(flat)
    row["per_tensor_equalize"] = litert(flat, per_channel=False)
    corrected, row["bias_correction_s"] = _timed(bias_correction, flat, calib, per_channel=False)
    row["per_tensor_equalize_bias_correction"] = litert(corrected, per_channel=False)
    row["per_tensor_bias_correction_only"] = litert(
        bias_correction(folded, calib, per_channel=False), per_channel=False
    )
    # 4-bit weights, 8-bit activations, INT4 file
    nearest = adaround(folded, calib, bits=4, iterations=0)
    learned, row["adaround_s"] = _timed(adaround, folded, calib, bits=4, iterations=iterations)
    int4 = {"int4_weights": True}
    levels = tfc.ptq.recovery.four_bit_levels
    for name, rounded in (("w4_nearest", nearest), ("w4_adaround", learned)):
        flatbuffer = levels(tfc.convert(rounded, "int8", calib), require=True).flatbuffer
        row[name] = tfc.evaluate_tflite(flatbuffer, x_test, y_test)
        with_bc = bias_correction(rounded, calib, bits=4, reference=folded)
        flatbuffer = levels(tfc.convert(with_bc, "int8", calib), require=True).flatbuffer
        row[f"{name}_bias_correction"] = tfc.evaluate_tflite(flatbuffer, x_test, y_test)
    packed = tfc.convert(model, "int8", calib, optimize=["fold_bn", "adaround"], **int4)
    row["w4_adaround_convert_optimize_int4"] = tfc.evaluate_tflite(packed, x_test, y_test)
    row["int4_file_bytes"] = len(packed)
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=300, help="AdaRound steps per layer")
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):  # the file is rewritten after each seed: a long run keeps some
        rows.append(run_seed(seed, args.epochs, args.iterations))
        keys = [k for k in rows[0] if k != "seed"]
        mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
        payload = {
            "model": f"MobileNetV2 alpha 0.35, {SIZE}x{SIZE}x3, digits, {args.epochs} epochs",
            "calibration_samples": CALIBRATION,
            "adaround_iterations": args.iterations,
            "seeds_done": len(rows),
            "seeds_asked": args.seeds,
            "mean": mean,
            "rows": rows,
            "note": "timings from a loaded shared 2-core machine; rerun on a quiet one",
        }
        write_results("ptq_recovery", payload)


if __name__ == "__main__":
    main()
