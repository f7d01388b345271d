"""Which ops TensorFlow Lite Micro runs in int16x8 (16-bit activations, 8-bit weights).

For each row of tests/coverage/cases.py with float inputs (a tiny model around one
`keras.layers` layer; seeded, untrained weights: whether TFLM runs a file does not depend on
them) the model is converted with `tfc.convert(model, "int16x8", data, target="micro")`, which
rewrites what it can, fixes the batch to 1 and refuses a file TFLM cannot run, naming the op
and the layer. A
file that runs is compared with LiteRT on held-out inputs (`tfc.micro.check(file, x)`: the
largest difference in int16 steps of the output, from the nearer of LiteRT's reference and
optimized builtin kernels). The table
`ops` says, per TFLite op, in which rows it ran (with the largest output difference of those
rows) and in which it was refused; a refusal is `no_tflm_kernel`, `kernel_refuses_types` (TFLM's
kernel does not take the op's int16 tensors).

Run: .venv/bin/python benchmarks/micro_int16_bench.py [--rows Conv2D,Dense]
(writes benchmarks/results/micro_int16.json; about 5 minutes on 2 cores)
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
import micro_coverage_bench  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.micro import ops as micro_ops  # noqa: E402

CALIBRATION = 64
HELD_OUT = 64
_REFUSED = re.compile(
    r"does not run on TensorFlow Lite Micro[^:]*: (?:op (\S+)(?: \(layer '([^']*)'\))?)?"
)


def refusal_reason(op: str) -> str:
    """`no_tflm_kernel`, or `kernel_refuses_types` (TFLM's kernel does not take the op's int16
    tensors).

    Example:
        >>> refusal_reason("TILE"), refusal_reason("REDUCE_MAX")
        ('no_tflm_kernel', 'kernel_refuses_types')
    """
    return "no_tflm_kernel" if micro_ops.resolver_method(op) is None else "kernel_refuses_types"


def run_one(model: keras.Model, x: np.ndarray, x_test: np.ndarray) -> dict[str, Any]:
    """Convert one model to int16x8 for TFLM and check the file, or say why it is refused."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flatbuffer = tfc.convert(model, "int16x8", x, target="micro")
    except tfc.ConversionError as error:
        text = str(error)
        found = _REFUSED.search(text)
        if not found:
            return {"status": "no_int16x8", "detail": text.splitlines()[0][:300]}
        return {
            "status": "refused",
            "why": refusal_reason(found.group(1) or ""),
            "op": found.group(1) or "",
            "layer": found.group(2) or "",
            "message": text[:600],
        }
    except Exception as error:  # noqa: BLE001 - a crash of the conversion is a result too
        return {"status": "no_int16x8", "detail": f"{type(error).__name__}: {error}"[:300]}
    report = tfc.micro.check(flatbuffer, x_test)
    info = tfc.inspect(flatbuffer)
    return {
        "status": "runs" if report.runs else "fails_after_check",
        "ops": sorted(report.op_counts),
        "activation_types": sorted(
            {t.dtype for t in info.tensors if not t.is_constant and t.dtype != "INT32"}
        ),
        "arena_bytes": report.arena_bytes,
        "flash_bytes": report.flash_bytes,
        "max_steps_vs_litert": max((o.max_difference for o in report.outputs), default=0.0),
        "output_types": [o.dtype for o in report.outputs],
        "seconds": round(time.perf_counter() - start, 1),
    }


def op_table(rows: dict[str, dict]) -> dict[str, dict]:
    """Per TFLite op: the rows whose int16x8 file TFLM ran with it, those refused at it, and
    the largest difference from LiteRT's reference kernels (int16 steps) of the rows it ran in.

    Example:
        >>> rows = {"a": {"status": "runs", "ops": ["ADD"], "max_steps_vs_litert": 1.0},
        ...         "b": {"status": "refused", "op": "EXP"}}
        >>> op_table(rows)["ADD"]["runs_in"], op_table(rows)["EXP"]["refused_in"]
        (['a'], ['b'])
    """
    table: dict[str, dict] = {}

    def entry(op: str) -> dict:
        return table.setdefault(op, {"runs_in": [], "refused_in": [], "max_steps_vs_litert": None})

    for key, row in rows.items():
        if row["status"] == "runs":
            for op in row["ops"]:
                found = entry(op)
                found["runs_in"].append(key)
                steps = row["max_steps_vs_litert"]
                found["max_steps_vs_litert"] = max(found["max_steps_vs_litert"] or 0.0, steps)
        elif row["status"] == "refused" and row.get("op"):
            entry(row["op"])["refused_in"].append(key)
    return dict(sorted(table.items()))


def summary(rows: dict[str, dict]) -> dict[str, Any]:
    """Counts over the rows, and which ops TFLM runs and refuses in int16x8."""
    table = op_table(rows)
    runs = {k: r for k, r in rows.items() if r["status"] == "runs"}
    return {
        "rows": len(rows),
        "convert_to_int16x8": sum(1 for r in rows.values() if r["status"] != "no_int16x8"),
        "run_on_tflm": len(runs),
        "refused": sorted(k for k, r in rows.items() if r["status"] == "refused"),
        "ops_run": sorted(op for op, e in table.items() if e["runs_in"]),
        "ops_refused": sorted(op for op, e in table.items() if e["refused_in"]),
        "max_steps_vs_litert": max((r["max_steps_vs_litert"] for r in runs.values()), default=0),
        "over_one_step": {
            k: r["max_steps_vs_litert"] for k, r in runs.items() if r["max_steps_vs_litert"] > 1
        },
        "float_islands": sorted(k for k, r in runs.items() if "FLOAT32" in r["activation_types"]),
        "no_int16x8": sorted(k for k, r in rows.items() if r["status"] == "no_int16x8"),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated layer names or row ids (default: all)")
    parser.add_argument("--name", default="micro_int16", help="results/<name>.json")
    args = parser.parse_args(argv)
    from _common import write_results

    from tfcompress.micro.runner import tflm_version

    selected = set(args.rows.split(",")) if args.rows else None
    start = time.perf_counter()
    rows = micro_coverage_bench.coverage_rows(selected, run_one, float_only=True)
    payload = {
        "settings": {
            "mode": "int16x8",
            "calibration_rows": CALIBRATION,
            "held_out_rows": HELD_OUT,
            "weights": "seeded, untrained",
            "tflm": f"tflite-micro {tflm_version()}",
            "seconds": round(time.perf_counter() - start, 1),
        },
        "summary": summary(rows),
        "ops": op_table(rows),
        "rows": rows,
    }
    write_results(args.name, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
