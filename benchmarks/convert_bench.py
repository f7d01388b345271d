"""Conversion figures of issue 2: accuracy of every mode on the digits CNN, size and latency of
int8 against float32 on MobileNetV2 (alpha 0.35, 96x96, weights=None).

Run: .venv/bin/python benchmarks/convert_bench.py   (writes benchmarks/results/convert.json)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.converter import run_tflite  # noqa: E402
from tfcompress.data import calibration_sample, load_digits  # noqa: E402
from tfcompress.demo import train_float_model  # noqa: E402
from tfcompress.export import CALIBRATED_MODES, MODES  # noqa: E402


def digits_figures(epochs: int = 15) -> dict:
    split = load_digits()
    model = train_float_model(split, epochs)
    keras_logits = model.predict(split.x_test, verbose=0)
    keras_accuracy = float(np.mean(keras_logits.argmax(-1) == split.y_test))
    calibration = calibration_sample(split.x_train, 200)
    rows = {}
    for mode in MODES:
        flatbuffer = tfc.convert(model, mode, calibration if mode in CALIBRATED_MODES else None)
        logits = run_tflite(flatbuffer, split.x_test)
        accuracy = float(np.mean(logits.argmax(-1) == split.y_test))
        rows[mode] = {
            "accuracy": accuracy,
            "accuracy_drop_pp": round((keras_accuracy - accuracy) * 100, 3),
            "top1_agreement_with_keras": float(
                np.mean(logits.argmax(-1) == keras_logits.argmax(-1))
            ),
            "bytes": len(flatbuffer),
            "float_ops": len(tfc.inspect(flatbuffer).float_ops),
        }
    return {
        "keras_accuracy": keras_accuracy,
        "modes": rows,
        "int8_over_float32_bytes": rows["int8"]["bytes"] / rows["float32"]["bytes"],
    }


def mobilenet_figures(runs: int = 300) -> dict:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3),
        alpha=0.35,
        weights=None,  # the standard 1000-class head
    )
    calibration = np.random.default_rng(0).uniform(-1, 1, (64, 96, 96, 3)).astype(np.float32)
    result = {}
    for mode in ("float32", "int8"):
        flatbuffer = tfc.convert(model, mode, calibration if mode == "int8" else None)
        latency = tfc.benchmark_tflite(flatbuffer, threads=1, runs=runs, warmup=30)
        result[mode] = {"bytes": len(flatbuffer), **latency.to_dict()}
    result["int8_over_float32_bytes"] = result["int8"]["bytes"] / result["float32"]["bytes"]
    result["int8_over_float32_median_latency"] = (
        result["int8"]["median_ms"] / result["float32"]["median_ms"]
    )
    return result


def main() -> None:
    digits = digits_figures()
    mobilenet = mobilenet_figures()
    targets = {
        "int8_accuracy_within_1pp": digits["modes"]["int8"]["accuracy_drop_pp"] <= 1.0,
        "float32_top1_agreement_ge_99_5": digits["modes"]["float32"]["top1_agreement_with_keras"]
        >= 0.995,
        "float16_top1_agreement_ge_99_5": digits["modes"]["float16"]["top1_agreement_with_keras"]
        >= 0.995,
        "digits_int8_bytes_le_0_30x": digits["int8_over_float32_bytes"] <= 0.30,
        "mobilenet_int8_bytes_le_0_30x": mobilenet["int8_over_float32_bytes"] <= 0.30,
        "mobilenet_int8_latency_le_0_6x": mobilenet["int8_over_float32_median_latency"] <= 0.6,
    }
    write_results(
        "convert", {"digits_cnn": digits, "mobilenet_v2_035_96": mobilenet, "targets_met": targets}
    )


if __name__ == "__main__":
    main()
