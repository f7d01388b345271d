"""Cost of containing TensorFlow's crashes: the converter in a forked child, the recipe in a
Python process of its own.

MobileNetV2 (alpha 0.35, 96x96, weights=None) converted to float32 and to int8 (100 random
calibration samples), isolated and in-process. Each timing round is a fresh process per side,
the sides alternating (`_common.alternating_best`); each process keeps its best of 2
conversions after one warm-up. `--stress N` also converts MobileNetV2 and the digits CNN to int8
N times each in one process, isolated, with a timeout: a fork that deadlocked would show there.

The recipe (`tfc.recipe.compress`, `isolate=True` or `False`): the digits CNN through one epoch
of QAT and an int8 conversion, run twice in each timing process: the first run of an isolated
process starts the recipe's Python process (TensorFlow imported there), the second finds it up.

Run: .venv/bin/python benchmarks/isolation_bench.py   (writes benchmarks/results/isolation.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import alternating_best, write_results  # noqa: E402

SIDES = ("isolated", "in_process")
MODES = ("float32", "int8")
REPEATS = 2  # timed conversions per timing process, after one warm-up


def _mobilenet() -> object:
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)


def _calibration(shape: tuple[int, ...], count: int = 100) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (count, *shape)).astype(np.float32)


def timing(side: str, repeats: int) -> dict[str, float]:
    """Best conversion time in seconds of each mode, isolated or in-process (one side)."""
    import tfcompress as tfc

    model = _mobilenet()
    data = _calibration((96, 96, 3))
    isolate = side == "isolated"
    times = {}
    for mode in MODES:
        calibration = data if mode == "int8" else None
        tfc.convert(model, mode, calibration, isolate=isolate)  # warm-up: tracing, first MLIR run
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tfc.convert(model, mode, calibration, isolate=isolate)
            best = min(best, time.perf_counter() - start)
        times[f"{mode}_s"] = best
    times.update(_recipe_times(isolate))
    if isolate:  # the fork, pipe and pickle round trip alone, with this process's memory
        from tfcompress.tflite.isolation import run_in_child

        flatbuffer = tfc.convert(model, "int8", data, isolate=False)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            run_in_child(lambda: flatbuffer, name="bench", mode="int8", timeout=60)
            best = min(best, time.perf_counter() - start)
        times["fork_round_trip_s"] = best
    return times


RECIPE = {"steps": [{"qat": {"epochs": 1}}, {"convert": {"mode": "int8"}}]}


def _recipe_times(isolate: bool) -> dict[str, float]:
    """Seconds of two runs of RECIPE on the digits CNN: the first, then the second."""
    import tempfile

    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn, compile_classifier

    model = compile_classifier(build_digits_cnn())
    times = {}
    with tempfile.TemporaryDirectory() as folder:
        for run in ("first", "second"):
            start = time.perf_counter()
            out = Path(folder) / run
            tfc.recipe.compress(model, "digits", RECIPE, out, log=None, isolate=isolate)
            times[f"recipe_{run}_s"] = time.perf_counter() - start
    return times


def stress(count: int, timeout: float) -> dict:
    """Convert MobileNetV2 and the digits CNN to int8 `count` times each, isolated."""
    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn

    models = {
        "mobilenet_v2": (_mobilenet(), _calibration((96, 96, 3))),
        "digits_cnn": (build_digits_cnn(), _calibration((8, 8, 1))),
    }
    done = {name: 0 for name in models}
    longest = {name: 0.0 for name in models}
    start_all = time.perf_counter()
    for _ in range(count):
        for name, (model, data) in models.items():
            start = time.perf_counter()
            tfc.convert(model, "int8", data, timeout=timeout)  # a hung child raises here
            longest[name] = max(longest[name], time.perf_counter() - start)
            done[name] += 1
    return {
        "conversions_per_model": done,
        "longest_s": longest,
        "timeout_s": timeout,
        "total_s": time.perf_counter() - start_all,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--stress", type=int, default=20, help="int8 conversions per model")
    parser.add_argument("--timing", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing:
        print(json.dumps(timing(args.timing, REPEATS)))
        return
    script = str(Path(__file__).resolve())
    best = alternating_best(script, SIDES, args.rounds)
    isolated, in_process = best["isolated"], best["in_process"]

    def row(key: str) -> dict[str, float]:
        return {
            "isolated_s": isolated[key],
            "in_process_s": in_process[key],
            "isolated_over_in_process": isolated[key] / in_process[key],
            "extra_s": isolated[key] - in_process[key],
        }

    rows = {mode: row(f"{mode}_s") for mode in MODES}
    recipe_runs = {run: row(f"recipe_{run}_s") for run in ("first", "second")}
    payload = {
        "model": "MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)",
        "calibration_samples": 100,
        "recipe": {
            "model": "build_digits_cnn()",
            "data": "digits",
            "recipe": RECIPE,
            "runs": recipe_runs,
        },
        "rounds": args.rounds,
        "repeats_per_process": REPEATS,
        "modes": rows,
        "fork_round_trip_s": isolated["fork_round_trip_s"],
    }
    if args.stress > 0:
        payload["stress"] = stress(args.stress, timeout=600.0)
    write_results("isolation", payload)


if __name__ == "__main__":
    main()
