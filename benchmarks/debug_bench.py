"""Debugger figure of issue 12: a layer made int8-sensitive is ranked first, keeping it float
recovers the accuracy gap.

For each architecture (the zoo's digits CNN `cnn2d_bn`, the 1-D conv net `cnn1d` and the
depthwise-separable `dwsep`) and seed, the float model is trained, then one middle layer gets an
outlier row of weights (`tfcompress.diagnose.outliers.inject_weight_outlier`: the float function is
unchanged, its int8 weights are not). The script records where `debug_quantization` ranks that
layer, the float / int8 / keep_float accuracies on the test set, the share of the gap recovered
by keeping that one layer float, what `suggest_keep_float` picks for a 1 pp target (its accuracy
on the rows it holds out of the search: every third test row), and the debugger's wall time. `--timing` also times the debugger on MobileNetV2 (alpha 0.35, 96x96,
weights=None) with 200 samples.

Run: .venv/bin/python benchmarks/debug_bench.py [--timing]   (writes benchmarks/results/debug.json)
Timings are only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

from tfcompress.data import Split  # noqa: E402
from tfcompress.diagnose.outliers import inject_weight_outlier, quietest_channel  # noqa: E402
from tfcompress.examples import zoo as zoo_models  # noqa: E402
from tfcompress.export import calibrate  # noqa: E402
from tfcompress.ptq import debug_quantization, suggest_keep_float  # noqa: E402
from tfcompress.tflite.runtime import run_tflite  # noqa: E402

# the layer made sensitive in each architecture: a middle conv fed through ReLU by a BatchNorm
SENSITIVE = {"cnn2d_bn": "conv3", "cnn1d": "conv2", "dwsep": "block3_pw"}
FACTORS = (300.0, 1000.0)  # a moderate and a severe outlier
SEEDS = (0, 1, 2)
CALIBRATION = 200


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels))


def runs_of(arch: str, seed: int, factors: list[float]) -> list[dict]:
    split = zoo_models.load(arch)
    model = zoo_models.train(
        zoo_models.build(arch, seed), split, epochs=zoo_models.EPOCHS[arch], seed=seed
    )
    return [one_run(model, split, arch, seed, factor) for factor in factors]


def one_run(model: keras.Model, split: Split, arch: str, seed: int, factor: float) -> dict:
    layer = SENSITIVE[arch]
    calibration = split.x_train[:CALIBRATION]
    channel = quietest_channel(model, layer, calibration)
    sensitive = inject_weight_outlier(model, layer, factor, channel)
    float_change = float(
        np.max(np.abs(model.predict(split.x_test, verbose=0) - sensitive.predict(split.x_test, verbose=0)))
    )  # fmt: skip
    start = time.perf_counter()
    calibrated = calibrate(sensitive, "int8", calibration)
    report = debug_quantization(
        sensitive, split.x_test, calibrated=calibrated, num_samples=CALIBRATION
    )
    debug_s = time.perf_counter() - start
    float_accuracy = _accuracy(sensitive.predict(split.x_test, verbose=0), split.y_test)
    int8_accuracy = _accuracy(run_tflite(calibrated.quantize([]), split.x_test), split.y_test)
    kept_accuracy = _accuracy(run_tflite(calibrated.quantize([layer]), split.x_test), split.y_test)
    gap = float_accuracy - int8_accuracy
    suggestion = suggest_keep_float(
        sensitive,
        split.x_test,
        split.y_test,
        max_accuracy_drop=0.01,
        representative_data=calibration,
        report=report,
    )
    row = report.layer(layer)
    return {
        "arch": arch,
        "seed": seed,
        "factor": factor,
        "sensitive_layer": layer,
        "sensitive_row": row.layer,
        "outlier_channel": channel,
        "float_output_change_max_abs": float_change,
        "rank_of_sensitive_layer": report.ranking.index(row.layer) + 1,
        "ranking_top3": report.ranking[:3],
        "sensitive_isolated_sqnr_db": row.isolated_sqnr_db,
        "sensitive_output_sqnr_db": row.output_sqnr_db,
        "runner_up_output_sqnr_db": report.layers[1].output_sqnr_db,
        "float_accuracy": float_accuracy,
        "int8_accuracy": int8_accuracy,
        "keep_float_accuracy": kept_accuracy,
        "gap_pp": round(gap * 100, 2),
        "gap_recovered": None if gap <= 0 else round((kept_accuracy - int8_accuracy) / gap, 4),
        "suggested_keep_float": suggestion.keep_float,
        "suggested_accuracy": suggestion.held_out.outputs[0].value,  # on its held-out rows
        "suggestion_held_out": suggestion.held_out.describe(),
        "suggestion_target_met": suggestion.target_met,
        "debug_seconds": round(debug_s, 2),
        "debug_rows": len(report.layers),
    }


def mobilenet_timing(samples: int = 200) -> dict:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10
    )
    rng = np.random.default_rng(0)
    x = rng.random((samples, 96, 96, 3), dtype=np.float32) * 2 - 1
    start = time.perf_counter()
    calibrated = calibrate(model, "int8", x)
    calibrate_s = time.perf_counter() - start
    report = debug_quantization(model, x, calibrated=calibrated, num_samples=samples)
    total_s = time.perf_counter() - start
    return {
        "model": "MobileNetV2 alpha 0.35 96x96 weights=None",
        "samples": samples,
        "isolated_samples": report.isolated_samples,
        "rows": len(report.layers),
        "calibrate_seconds": round(calibrate_s, 2),
        "debug_total_seconds": round(total_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true", help="also time MobileNetV2")
    parser.add_argument("--archs", nargs="+", default=list(SENSITIVE), choices=list(SENSITIVE))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--factors", nargs="+", type=float, default=list(FACTORS))
    args = parser.parse_args()
    runs = [
        run
        for arch in args.archs
        for seed in args.seeds
        for run in runs_of(arch, seed, args.factors)
    ]
    summary = {}
    for factor in args.factors:
        mine = [run for run in runs if run["factor"] == factor]
        real = [run for run in mine if run["gap_pp"] >= 1.0]  # a gap worth recovering
        summary[f"factor_{factor:g}"] = {
            "runs": len(mine),
            "ranked_first": sum(run["rank_of_sensitive_layer"] == 1 for run in mine),
            "runs_with_gap_ge_1pp": len(real),
            "recovered_80pct_of_those": sum(run["gap_recovered"] >= 0.8 for run in real),
            "gap_pp_range": [
                min(run["gap_pp"] for run in mine),
                max(run["gap_pp"] for run in mine),
            ],
            "min_gap_recovered": min((run["gap_recovered"] for run in real), default=None),
            "suggestion_target_met": sum(run["suggestion_target_met"] for run in mine),
        }
    payload = {"calibration_samples": CALIBRATION, "summary": summary, "runs": runs}
    if args.timing:
        payload["timing_mobilenetv2"] = mobilenet_timing()
    write_results("debug", payload)


if __name__ == "__main__":
    main()
