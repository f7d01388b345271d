"""File size of `convert`'s output with and without storing each repeated vector once.

TF's converter gives every tensor its own copy of its shape, scales and zero points: the unrolled
steps of a recurrent layer all read one bias with the same 4 x units per-channel quantization,
stored once per step. `convert` now repacks every file but the Edge TPU's with
`tfcompress.tflite.flatbuffer.share_vectors`. For each model and mode this converts twice, with
the step and without it (patched out), and records both sizes, whether LiteRT's outputs are
bit-identical on 64 inputs, and the seconds the step takes. Models: the digits-as-sequence LSTM,
GRU and Bidirectional-LSTM of `recurrent_bench.py` (untrained: sizes do not depend on training),
the digits CNN, and keras.applications' MobileNetV2 (96x96, weights=None).

Run: .venv/bin/python benchmarks/file_size_bench.py   (writes benchmarks/results/file_size.json)
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402
from recurrent_bench import build  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.converter import flatbuffer, run_tflite  # noqa: E402
from tfcompress.models import build_digits_cnn  # noqa: E402

convert_module = importlib.import_module("tfcompress.export")


def models() -> dict[str, tuple[keras.Model, np.ndarray]]:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    found = {}
    for kind in ("LSTM", "GRU", "Bidirectional-LSTM"):
        found[kind] = (build(kind), rng.uniform(0, 1, (64, 8, 8)).astype("float32"))
    found["digits CNN"] = (build_digits_cnn(), rng.uniform(0, 1, (64, 8, 8, 1)).astype("float32"))
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    found["MobileNetV2 96x96"] = (mobilenet, rng.uniform(-1, 1, (16, 96, 96, 3)).astype("float32"))
    return found


def main() -> None:
    rows = {}
    for name, (model, x) in models().items():
        for mode in ("float32", "int8"):
            data = x if mode == "int8" else None
            convert_module.share_vectors = lambda flat: flat  # the converter's own layout
            try:
                before = tfc.convert(model, mode, data)
            finally:
                convert_module.share_vectors = flatbuffer.share_vectors
            started = time.perf_counter()
            after = flatbuffer.share_vectors(before)
            seconds = time.perf_counter() - started
            assert after == tfc.convert(model, mode, data)  # what convert returns now
            row = {
                "bytes_before": len(before),
                "bytes_after": len(after),
                "smaller_by": round(1 - len(after) / len(before), 4),
                "identical_outputs": bool(
                    np.array_equal(run_tflite(before, x), run_tflite(after, x))
                ),
                "share_seconds": round(seconds, 4),
            }
            rows[f"{name} / {mode}"] = row
            print(name, mode, row, flush=True)
    write_results("file_size", {"models": rows})


if __name__ == "__main__":
    main()
