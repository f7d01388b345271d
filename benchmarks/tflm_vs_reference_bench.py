"""Where TensorFlow Lite Micro's int8 outputs part from LiteRT's: op by op, on MLPerf Tiny models.

For each task (ResNet-8 `ic` and MobileNetV1 0.25 `vww` by default), the reference model of
`tfcompress.examples.mlperf_tiny` is trained as `benchmarks/mlperf_tiny_bench.py` trains it and
converted with `tfc.convert(model, "int8", calibration, target="micro")`. On the first 200
held-out rows, TFLM's outputs are compared with LiteRT's reference kernels (`BUILTIN_REF`, what
`tfc.micro.check` compares with) and with LiteRT's optimized builtin kernels
(`BUILTIN_WITHOUT_DEFAULT_DELEGATES`). Then every op's output tensor is read on both TFLM
(`kPreserveAllTensors`) and LiteRT's reference kernels (`experimental_preserve_all_tensors`),
and the same for LiteRT's optimized kernels against its reference ones: `own_rows` counts the
rows where an op's inputs agree and its output does not (the op itself differs),
`inherited_rows` those where it only carries a difference from before. For a FULLY_CONNECTED
op that differs on its own, its int8 output is recomputed from its input in Python with the two
roundings of TFLite's `MultiplyByQuantizedMultiplier` (gemmlowp's double rounding, and the
single rounding of `TFLITE_SINGLE_ROUNDING`), to say which one each runtime uses.

Run: .venv/bin/python benchmarks/tflm_vs_reference_bench.py [--tasks ic,vww] [--epochs N]
(writes benchmarks/results/tflm_vs_reference.json; about 8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.core import compat  # noqa: E402
from tfcompress.examples import mlperf_tiny  # noqa: E402
from tfcompress.micro.runner import attempt, tflm_runtime  # noqa: E402
from tfcompress.tflite.runtime import make_interpreter  # noqa: E402

CALIBRATION = 200
HELD_OUT = 200
SEED = 0


def quantized(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Real inputs as the file's int8 input takes them."""
    info = tfc.inspect(flatbuffer)
    quantization = info.tensors[info.inputs[0]].quantization
    scaled = np.round(x / quantization.scale[0] + quantization.zero_point[0])
    return np.clip(scaled, -128, 127).astype(np.int8)


def litert(flatbuffer: bytes, rows: np.ndarray, **kind: bool) -> np.ndarray:
    """Raw outputs of LiteRT (`reference=True` or `builtin_only=True`), one row at a time."""
    interpreter = make_interpreter(flatbuffer, **kind)
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for row in rows:
        interpreter.set_tensor(given["index"], row[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(taken["index"])[0])
    return np.stack(outputs).astype(int)


def double_rounding(acc: int, multiplier: int, shift: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT: two roundings.

    Example:
        >>> double_rounding(1, 1 << 30, -1), single_rounding(1, 1 << 30, -1)
        (1, 0)
    """
    left, right = max(shift, 0), max(-shift, 0)
    product = (acc << left) * multiplier
    nudged = product + ((1 << 30) if product >= 0 else 1 - (1 << 30))
    high = abs(nudged) // (1 << 31) * (1 if nudged >= 0 else -1)  # C's division: toward zero
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def single_rounding(acc: int, multiplier: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier with TFLITE_SINGLE_ROUNDING: one rounding."""
    total = 31 - shift
    return (acc * multiplier + (1 << (total - 1))) >> total


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: a Q31 multiplier and a power-of-two shift."""
    fraction, shift = math.frexp(real)
    multiplier = round(fraction * (1 << 31))
    if multiplier == 1 << 31:
        multiplier, shift = multiplier // 2, shift + 1
    return multiplier, shift


class _Micro:
    """TFLM's interpreter keeping every tensor: each op's output after an invoke."""

    def __init__(self, flatbuffer: bytes) -> None:
        runtime = tflm_runtime()
        self.interpreter = runtime.Interpreter.from_bytes(
            flatbuffer,
            arena_size=1 << 24,
            intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors,
        )

    def run(self, row: np.ndarray) -> None:
        self.interpreter.set_input(row[None], 0)
        self.interpreter.invoke()

    def get(self, index: int) -> np.ndarray:
        return np.array(self.interpreter.GetTensor(index, 0)["tensor_data"]).astype(np.int64)


class _LiteRT:
    """LiteRT's reference (`reference=True`) or optimized builtin kernels, keeping every tensor."""

    def __init__(self, flatbuffer: bytes, reference: bool) -> None:
        self.interpreter = compat.litert_interpreter_class()(
            model_content=flatbuffer,
            experimental_op_resolver_type=compat.litert_op_resolver(not reference, reference),
            experimental_preserve_all_tensors=True,
        )
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]

    def run(self, row: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input, row[None])
        self.interpreter.invoke()

    def get(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index).astype(np.int64)


def per_op(flatbuffer: bytes, rows: np.ndarray, ours: Any, theirs: Any) -> list[dict[str, Any]]:
    """For each op: the largest difference of its output between two runtimes, in how many rows
    it arises in the op itself (`own_rows`: its inputs agree) or comes from its inputs
    (`inherited_rows`); for a FULLY_CONNECTED op, in how many of its own rows each runtime's
    output is the double or the single rounding of its accumulators."""
    graph = tfc.inspect(flatbuffer).subgraphs[0]
    found = [
        {"op": op.name, "index": op.index, "max_steps": 0, "own_rows": 0, "inherited_rows": 0}
        for op in graph.ops
    ]
    for row in rows:
        ours.run(row)
        theirs.run(row)

        def pair(index: int) -> tuple[np.ndarray, np.ndarray]:
            expected = theirs.get(index)
            return ours.get(index).reshape(expected.shape), expected

        for entry, op in zip(found, graph.ops, strict=True):
            variable = [t for t in op.inputs if t >= 0 and not graph.tensors[t].is_constant]
            same_inputs = all(np.array_equal(*pair(t)) for t in variable)
            values = pair(op.outputs[0])
            steps = int(np.abs(values[0] - values[1]).max())
            entry["max_steps"] = max(entry["max_steps"], steps)
            if steps:
                entry["own_rows" if same_inputs else "inherited_rows"] += 1
            if op.name == "FULLY_CONNECTED" and same_inputs and steps:
                computed = _fc_roundings(graph, op, theirs)
                for side, output in zip(("ours", "theirs"), values, strict=True):
                    for kind, candidate in computed.items():
                        key = f"{side}_{kind}_rounding"
                        entry[key] = entry.get(key, 0) + int(
                            np.array_equal(output.ravel(), candidate)
                        )
    return found


def _fc_roundings(graph: Any, op: Any, side: Any) -> dict[str, np.ndarray]:
    """The FULLY_CONNECTED op's int8 output recomputed with each rounding (per-tensor weights)."""
    given, weights, bias = op.inputs[:3]
    quantization = {t: graph.tensors[t].quantization for t in (given, weights, op.outputs[0])}
    x = side.get(given).ravel()
    kernel = side.get(weights)
    offset = side.get(bias) if bias >= 0 else 0
    accumulators = kernel @ (x - quantization[given].zero_point[0]) + offset
    real = (
        float(quantization[given].scale[0])
        * float(quantization[weights].scale[0])
        / float(quantization[op.outputs[0]].scale[0])
    )
    multiplier, shift = quantize_multiplier(real)
    zero = quantization[op.outputs[0]].zero_point[0]
    return {
        kind: np.clip([rounding(int(a), multiplier, shift) + zero for a in accumulators], -128, 127)
        for kind, rounding in (("double", double_rounding), ("single", single_rounding))
    }


def _nonzero(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in ops if entry["max_steps"]]


def run_task(task: str, epochs: int | None) -> dict[str, Any]:
    """Train, convert for TFLM and compare TFLM with both LiteRT kernel sets, op by op."""
    start = time.perf_counter()
    split = mlperf_tiny.load(task)
    epochs = mlperf_tiny.EPOCHS[task] if epochs is None else epochs
    model = mlperf_tiny.build(task, SEED)
    if epochs:
        model = mlperf_tiny.train(model, task, split, epochs, SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flatbuffer = tfc.convert(model, "int8", split.x_train[:CALIBRATION], target="micro")
    x = split.x_test[:HELD_OUT]
    rows = quantized(flatbuffer, x)
    on_tflm = attempt(flatbuffer, 1 << 24, [rows], timeout=600).outputs[0].astype(int)
    reference = litert(flatbuffer, rows, reference=True)
    builtin = litert(flatbuffer, rows, builtin_only=True)
    [output] = tfc.micro.check(flatbuffer, x).outputs
    return {
        "model": mlperf_tiny.NAMES[task],
        "epochs": epochs,
        "rows": len(x),
        "steps_tflm_vs_reference": int(np.abs(on_tflm - reference).max()),
        "steps_tflm_vs_builtin": int(np.abs(on_tflm - builtin).max()),
        "steps_reference_vs_builtin": int(np.abs(reference - builtin).max()),
        "logits_steps_tflm_vs_reference": output.logits_max_difference,
        # ours: TFLM, theirs: LiteRT's reference kernels; only the ops whose outputs differ
        "ops_tflm_vs_reference": _nonzero(
            per_op(flatbuffer, rows, _Micro(flatbuffer), _LiteRT(flatbuffer, reference=True))
        ),
        # ours: LiteRT's optimized builtin kernels, theirs: its reference kernels
        "ops_builtin_vs_reference": _nonzero(
            per_op(
                flatbuffer,
                rows,
                _LiteRT(flatbuffer, reference=False),
                _LiteRT(flatbuffer, reference=True),
            )
        ),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="ic,vww", help="comma-separated MLPerf Tiny tasks")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the benchmark's)")
    parser.add_argument("--name", default="tflm_vs_reference", help="results/<name>.json")
    args = parser.parse_args(argv)
    from _common import write_results

    from tfcompress.micro.runner import tflm_version

    tasks = {}
    for task in args.tasks.split(","):
        tasks[task] = run_task(task, args.epochs)
        print(f"{task}: {tasks[task]}", file=sys.stderr, flush=True)
    payload = {
        "settings": {
            "seed": SEED,
            "calibration_rows": CALIBRATION,
            "held_out_rows": HELD_OUT,
            "tflm": f"tflite-micro {tflm_version()}",
        },
        "tasks": tasks,
    }
    write_results(args.name, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
