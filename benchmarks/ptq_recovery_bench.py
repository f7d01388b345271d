"""PTQ accuracy recovery on a trained depthwise-separable net (issue 12, tfcompress.recovery).

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

`--dfq` runs the study of the DFQ phenomenon instead (writes ptq_recovery_dfq.json): for each
training recipe and seed, the same net is scored at two points of one training run (`--dfq-epochs`,
e.g. 12 then 30 epochs), and each time it reports the spread of the BatchNorm-folded depthwise
kernels (per layer, max over min of the per-channel ranges max|w|; channels whose folded range is
0 are counted apart) next to per-tensor int8 naive and after equalization + bias correction.
Recipes: `adam` (Adam, no weight decay, as above) and `adamw` (AdamW, decoupled weight decay
`--weight-decay` on every weight, BatchNorm's gamma included: the decay that leaves unused
channels small, as in long ImageNet training). Nothing is edited by hand in these nets.

Run: .venv/bin/python benchmarks/ptq_recovery_bench.py [--seeds 3] [--epochs 15]
     (writes benchmarks/results/ptq_recovery.json)
     .venv/bin/python benchmarks/ptq_recovery_bench.py --dfq [--seeds 3] [--dfq-epochs 12,30]
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
from tfcompress.recovery import (  # noqa: E402
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


def _build(seed: int, optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
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
        optimizer or keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _train(seed: int, epochs: int, x: np.ndarray, y: np.ndarray) -> keras.Model:
    model = _build(seed)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def depthwise_spread(folded: keras.Model) -> dict:
    """Per-channel range spread of the folded depthwise kernels (what breaks a per-tensor grid)."""
    layers = {}
    for layer in folded.layers:
        if not isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        kernel = layer.get_weights()[0]
        ranges = np.abs(kernel.reshape(-1, kernel.shape[2] * kernel.shape[3])).max(axis=0)
        alive = ranges[ranges > 0]
        layers[layer.name] = {
            "spread": float(alive.max() / alive.min()) if alive.size else None,
            "zero_channels": int(np.sum(ranges == 0)),
            "channels": int(ranges.size),
        }
    spreads = [v["spread"] for v in layers.values() if v["spread"] is not None]
    worst = max(layers, key=lambda name: layers[name]["spread"] or 0.0)
    return {
        "max_spread": round(max(spreads), 1),
        "median_spread": round(float(np.median(spreads)), 1),
        "worst_layer": worst,
        "first_depthwise_spread": round(next(iter(layers.values()))["spread"], 1),
        "zero_channels": sum(v["zero_channels"] for v in layers.values()),
        "layers": {k: {**v, "spread": round(v["spread"] or 0.0, 2)} for k, v in layers.items()},
    }


def dfq_point(model: keras.Model, calib: np.ndarray, x_test: np.ndarray, y_test) -> dict:
    """Spread of the folded depthwise kernels; per-tensor int8 naive vs equalize + bias correction."""

    def litert(m: keras.Model, **options) -> float:
        return tfc.evaluate_tflite(tfc.convert(m, "int8", calib, **options), x_test, y_test)

    def keras_accuracy(m: keras.Model) -> float:
        return float(np.mean(np.asarray(m.predict(x_test, verbose=0)).argmax(-1) == y_test))

    folded = fold_batch_norms(model)
    flat = equalize(model, relu6="replace")
    row = {"float": keras_accuracy(model), "float_relu6_replaced": keras_accuracy(flat)}
    row.update(depthwise_spread(folded))
    row["equalized_max_spread"] = depthwise_spread(fold_batch_norms(flat))["max_spread"]
    row["int8_per_channel"] = litert(folded)
    row["per_tensor_naive"] = litert(folded, per_channel=False)
    corrected = bias_correction(flat, calib, per_channel=False)
    row["per_tensor_equalize_bias_correction"] = litert(corrected, per_channel=False)
    return row


def run_dfq(recipe: str, seed: int, epochs: list[int], weight_decay: float) -> dict:
    split = load_digits()
    x_train, x_test = _images(split.x_train), _images(split.x_test)
    calib = x_train[:CALIBRATION]
    optimizer = (
        keras.optimizers.AdamW(3e-3, weight_decay=weight_decay)
        if recipe == "adamw"
        else keras.optimizers.Adam(3e-3)
    )
    model = _build(seed, optimizer)
    points, done = {}, 0
    for epoch in epochs:
        model.fit(x_train, split.y_train, epochs=epoch - done, batch_size=64, verbose=0)
        done = epoch
        points[str(epoch)] = dfq_point(model, calib, x_test, split.y_test)
        short = {k: v for k, v in points[str(epoch)].items() if k != "layers"}
        print(
            json.dumps({"recipe": recipe, "seed": seed, "epochs": epoch, **short}), file=sys.stderr
        )
    return {"recipe": recipe, "seed": seed, "points": points}


def main_dfq(args: argparse.Namespace) -> None:
    epochs = sorted(int(e) for e in args.dfq_epochs.split(","))
    recipes = args.recipes.split(",")
    rows = []
    for seed in range(args.seeds):  # the file is rewritten after each run: a long run keeps some
        for recipe in recipes:
            rows.append(run_dfq(recipe, seed, epochs, args.weight_decay))
            collapsed = [
                (r["recipe"], r["seed"], e)
                for r in rows
                for e, p in r["points"].items()
                if p["per_tensor_naive"] < p["float"] - 0.05
            ]
            write_results(
                "ptq_recovery_dfq",
                {
                    "model": f"MobileNetV2 alpha 0.35, {SIZE}x{SIZE}x3, digits",
                    "recipes": {
                        "adam": "Adam 3e-3, no weight decay",
                        "adamw": f"AdamW 3e-3, weight_decay={args.weight_decay} (all weights)",
                    },
                    "epochs": epochs,
                    "calibration_samples": CALIBRATION,
                    "runs_done": len(rows),
                    "naive_per_tensor_collapsed_runs": collapsed,
                    "rows": rows,
                },
            )


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
    parser.add_argument("--dfq", action="store_true", help="the DFQ phenomenon study instead")
    parser.add_argument("--dfq-epochs", default="12,30", help="points of one training run")
    parser.add_argument("--recipes", default="adam,adamw", help="adam, adamw or both")
    parser.add_argument("--weight-decay", type=float, default=0.5, help="AdamW's (decoupled)")
    args = parser.parse_args()
    if args.dfq:
        main_dfq(args)
        return
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
