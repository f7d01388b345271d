"""Which int8 files run on TensorFlow Lite Micro: every coverage-matrix row and every zoo model.

For each row of tests/coverage/cases.py (a tiny model around one `keras.layers` layer) and each
architecture of `tfcompress.examples.zoo`, the model (seeded, untrained: what TFLM runs does not
depend on the weights) is converted with `tfc.convert(model, "int8", data, target="micro")`, which
rewrites what it can, fixes the batch to 1 and refuses a file TFLM cannot run, naming the op.
A file that runs is compared with LiteRT's reference kernels on held-out inputs
(`tfc.micro.check(file, x)`, the largest difference in int8 steps). A refusal is sorted by what
would fix it: `rewrite` (equivalent layers TFLM runs exist), `keep_float` (TFLM has the op's
float kernel: keep the layer in float), or `tflm_limit` (TFLM has no kernel for what the layer
computes). Rows that do not convert to int8 at all are counted apart.

Run: .venv/bin/python benchmarks/micro_coverage_bench.py [--rows Conv2D,Dense] [--no-zoo]
(writes benchmarks/results/micro_coverage.json; about 8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.examples import zoo  # noqa: E402
from tfcompress.micro import ops as micro_ops  # noqa: E402

CALIBRATION = 64
HELD_OUT = 64
# what fixes a refused op: equivalent layers TFLM runs, or keeping the layer in float
REWRITES = {"TILE", "REDUCE_PROD", "SHAPE", "BROADCAST_TO"}
_REFUSED = re.compile(
    r"does not run on TensorFlow Lite Micro: (?:op (\S+)(?: \(layer '([^']*)'\))?)?"
)


def sort_refusal(op: str) -> str:
    """`rewrite`, `keep_float` or `tflm_limit` for an op TFLM refused.

    Example:
        >>> sort_refusal("TILE"), sort_refusal("EXP"), sort_refusal("CONV_3D")
        ('rewrite', 'keep_float', 'tflm_limit')
    """
    if op in REWRITES:
        return "rewrite"
    if op in micro_ops.KNOWN_REFUSALS and "keep_float" in micro_ops.advice(op):
        return "keep_float"
    return "tflm_limit"


def run_one(model: keras.Model, x: np.ndarray, x_test: np.ndarray) -> dict[str, Any]:
    """Convert for TFLM and check the file, or say why not."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flatbuffer = tfc.convert(model, "int8", x, target="micro")
    except tfc.ConversionError as error:
        text = str(error)
        found = _REFUSED.search(text)
        if not found:
            return {"status": "no_int8", "detail": text.splitlines()[0][:300]}
        op, layer = found.group(1) or "", found.group(2) or ""
        return {
            "status": "refused",
            "op": op,
            "layer": layer,
            "fix": sort_refusal(op) if op else "tflm_limit",
            "advice": micro_ops.advice(op, layer) if op else text.splitlines()[0][:300],
        }
    except Exception as error:  # noqa: BLE001 - a crash of the conversion is a result too
        return {"status": "no_int8", "detail": f"{type(error).__name__}: {error}"[:300]}
    report = tfc.micro.check(flatbuffer, x_test)
    steps = max((o.max_difference for o in report.outputs), default=0.0)
    return {
        "status": "runs" if report.runs else "fails_after_check",
        "arena_bytes": report.arena_bytes,
        "flash_bytes": report.flash_bytes,
        "max_steps_vs_litert": steps,
        "float_ops": sorted(op for op in report.op_counts if op in ("DEQUANTIZE", "QUANTIZE")),
        "seconds": round(time.perf_counter() - start, 1),
    }


def coverage_rows(
    selected: set[str] | None, run: Any = None, float_only: bool = False
) -> dict[str, dict]:
    """`run(model, x, x_test)` (by default `run_one`) on each selected coverage-matrix row
    (`float_only`: the rows with float inputs only)."""
    from tests.coverage.cases import all_cases
    from tests.coverage.runner import _data

    results = {}
    for case in all_cases():
        if selected and case.layer not in selected and case.id not in selected:
            continue
        if float_only and case.input_kind != "float":
            continue
        keras.utils.set_random_seed(0)
        model = case.build()
        x, _, x_test = _data(case, model)
        results[case.id] = (run or run_one)(model, x[:CALIBRATION], x_test[:HELD_OUT])
        print(f"{case.id:36s} {results[case.id]}", file=sys.stderr, flush=True)
    return results


def zoo_rows() -> dict[str, dict]:
    results = {}
    for arch in zoo.ARCHITECTURES:
        split = zoo.load(arch)
        model = zoo.build(arch, 0)
        x, x_test = split.x_train[:CALIBRATION], split.x_test[:HELD_OUT]
        results[f"zoo:{arch}"] = run_one(model, x, x_test)
        print(f"zoo:{arch:32s} {results[f'zoo:{arch}']}", file=sys.stderr, flush=True)
    return results


def summary(rows: dict[str, dict]) -> dict[str, Any]:
    converted = {k: r for k, r in rows.items() if r["status"] != "no_int8"}
    runs = {k: r for k, r in converted.items() if r["status"] == "runs"}
    refused = {k: r for k, r in converted.items() if r["status"] != "runs"}
    steps = [r["max_steps_vs_litert"] for r in runs.values()]
    by_op: dict[str, dict] = {}
    for key, row in refused.items():
        entry = by_op.setdefault(
            row.get("op") or "?", {"fix": row.get("fix"), "advice": row.get("advice"), "rows": []}
        )
        entry["rows"].append(key)
    return {
        "rows": len(rows),
        "convert_to_int8": len(converted),
        "run_on_tflm": len(runs),
        "refused": len(refused),
        "refused_by_fix": {
            fix: sum(1 for r in refused.values() if r.get("fix") == fix)
            for fix in ("rewrite", "keep_float", "tflm_limit")
        },
        "refused_by_op": by_op,
        "max_steps_vs_litert": max(steps, default=0.0),
        "within_one_step": sum(1 for s in steps if s <= 1),
        "over_one_step": {
            k: r["max_steps_vs_litert"] for k, r in runs.items() if r["max_steps_vs_litert"] > 1
        },
        "no_int8": sorted(k for k, r in rows.items() if r["status"] == "no_int8"),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated layer names or row ids (default: all)")
    parser.add_argument("--no-zoo", action="store_true", help="leave the zoo models out")
    parser.add_argument("--name", default="micro_coverage", help="results/<name>.json")
    args = parser.parse_args(argv)
    from _common import write_results

    from tfcompress.micro.runner import tflm_version

    start = time.perf_counter()
    rows = coverage_rows(set(args.rows.split(",")) if args.rows else None)
    if not args.no_zoo:
        rows.update(zoo_rows())
    payload = {
        "settings": {
            "calibration_rows": CALIBRATION,
            "held_out_rows": HELD_OUT,
            "weights": "seeded, untrained",
            "tflm": f"tflite-micro {tflm_version()}",
            "seconds": round(time.perf_counter() - start, 1),
        },
        "summary": summary(rows),
        "rows": rows,
    }
    write_results(args.name, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
