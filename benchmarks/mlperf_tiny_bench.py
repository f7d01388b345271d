"""MLPerf Tiny reference models on TensorFlow Lite Micro (issue 24, item 5): tfcompress's int8 file
against the plain TF converter's, on flash, measured arena and agreement.

For each MLPerf Tiny reference architecture (`tfcompress.examples.mlperf_tiny`: DS-CNN keyword
spotting, MobileNetV1 0.25 visual wake words, ResNet-8 image classification, the fully-connected
anomaly-detection autoencoder) and each seed, one float model is trained on its stand-in data,
calibrated on 200 training rows and judged on the held-out rows. Files:

- `tfcompress`: `tfc.convert(model, "int8", calibration, target="micro")`;
- `plain`: `tf.lite.TFLiteConverter.from_keras_model` with the same calibration rows,
  `TFLITE_BUILTINS_INT8`, int8 input and output (what a TFLM user runs);
- `plain_per_tensor_dense`: the same with per-tensor FULLY_CONNECTED weights, the scheme of the
  TF 2.3-era files MLPerf Tiny ships (the arena study:
  docs/dev/decisions/2026-12-06-mlperf-tiny.md);
- `compressed`: the model clustered to 16 values per kernel (`tfc.cluster_weights`, fine-tuned
  one epoch, stripped), converted like `tfcompress`, then `tfc.micro.compress` (look-up tables
  that TFLM's DECODE op expands).

Per file: flash bytes, the smallest TFLM arena (`tfc.micro.check`, bisected), the largest
difference between TFLM and LiteRT's reference kernels in int8 steps, and TFLM's agreement with
the float Keras model, both on the first 200 held-out rows (the Keras score: all of them): top-1 agreement and accuracy
for the classifiers; for the autoencoder the anomaly AUC, the correlation of TFLM's anomaly scores
with Keras's, and the relative error of the reconstruction.

`--reference-dir DIR` also measures MLPerf Tiny's own pretrained int8 files (TF 2.3-era, from
mlcommons/tiny `benchmark/training/*/trained_models/`, not shipped here) for their arena and flash.

Run: .venv/bin/python benchmarks/mlperf_tiny_bench.py [--quick] [--tasks kws,ad] [--seeds 0,1,2]
[--reference-dir DIR] (writes benchmarks/results/mlperf_tiny.json)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.data import Split  # noqa: E402
from tfcompress.examples import mlperf_tiny  # noqa: E402
from tfcompress.micro.runner import attempt, tflm_version  # noqa: E402
from tfcompress.tflite.runtime import make_interpreter  # noqa: E402

SEEDS = (0, 1, 2)
CALIBRATION = 200
HELD_OUT = 200  # held-out rows each file runs on TFLM and LiteRT (the first of the split)
CLUSTERS = 16
CLUSTER_EPOCHS = 1
CLUSTER_LR = 1e-3
FILES = ("tfcompress", "plain", "plain_per_tensor_dense", "compressed")
# MLPerf Tiny's pretrained int8 files (TF 2.3-era) in mlcommons/tiny benchmark/training/
REFERENCE_FILES = {
    "kws": "keyword_spotting/trained_models/kws_ref_model.tflite",
    "vww": "visual_wake_words/trained_models/vww_96_int8.tflite",
    "ic": "image_classification/trained_models/pretrainedResnet_quant.tflite",
    "ad": "anomaly_detection/trained_models/ad01_int8.tflite",
}


def plain_int8(model: Any, calibration: np.ndarray, *, per_tensor_dense: bool = False) -> bytes:
    """TF's converter as a TFLM user runs it: full integer, int8 input and output."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if per_tensor_dense:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter.convert()


def _io(flatbuffer: bytes) -> tuple[Any, Any]:
    report = tfc.inspect(flatbuffer)
    return report.tensors[report.inputs[0]], report.tensors[report.outputs[0]]


def quantized(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Real inputs as the file's int8 input takes them."""
    tensor, _ = _io(flatbuffer)
    scale, zero = tensor.quantization.scale[0], tensor.quantization.zero_point[0]
    return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)


def dequantized(flatbuffer: bytes, raw: np.ndarray) -> np.ndarray:
    _, tensor = _io(flatbuffer)
    scale, zero = tensor.quantization.scale[0], tensor.quantization.zero_point[0]
    return (raw.astype(np.float64) - zero) * scale


def tflm_outputs(flatbuffer: bytes, x: np.ndarray, arena: int) -> np.ndarray:
    """TFLM's real-valued outputs for every row of `x` (one invoke per row, in a child)."""
    done = attempt(flatbuffer, arena, [quantized(flatbuffer, x)], timeout=600)
    if not done.ok:
        raise RuntimeError(f"TFLM failed on the held-out rows: {done.message}")
    return dequantized(flatbuffer, done.outputs[0])


def litert_outputs(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Raw int8 outputs of LiteRT's reference kernels (BUILTIN_REF: what TFLM's kernels follow),
    one row at a time."""
    interpreter = make_interpreter(flatbuffer, reference=True)
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for row in quantized(flatbuffer, x):
        interpreter.set_tensor(inputs["index"], row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(outputs["index"])[0])
    return np.stack(rows)


def agreement(task: str, split: Split, keras_outputs: np.ndarray, outputs: np.ndarray) -> dict:
    """How closely a file's TFLM outputs follow the float Keras model on the held-out rows."""
    if task != "ad":
        ours, theirs = outputs.argmax(-1), keras_outputs.argmax(-1)
        return {
            "top1_agreement": round(float(np.mean(ours == theirs)), 4),
            "accuracy": round(float(np.mean(ours == split.y_test)), 4),
        }
    scores = mlperf_tiny.anomaly_scores(split.x_test, outputs)
    reference = mlperf_tiny.anomaly_scores(split.x_test, keras_outputs)
    error = np.linalg.norm(outputs - keras_outputs) / np.linalg.norm(keras_outputs)
    return {
        "auc": round(mlperf_tiny.auc(scores, split.y_test), 4),
        "score_correlation": round(float(np.corrcoef(scores, reference)[0, 1]), 4),
        "relative_error": round(float(error), 4),
    }


def measure(task: str, flatbuffer: bytes, split: Split, keras_outputs: np.ndarray) -> dict:
    """Flash, arena, TFLM against LiteRT's reference kernels, and agreement with Keras."""
    report = tfc.micro.check(flatbuffer)
    if not report.runs:
        return {"flash_bytes": len(flatbuffer), "runs": False, "error": report.error[:300]}
    start = time.perf_counter()
    raw = attempt(flatbuffer, 4 * report.arena_bytes, [quantized(flatbuffer, split.x_test)])
    if not raw.ok:
        return {"flash_bytes": len(flatbuffer), "runs": False, "error": raw.message[:300]}
    tflm_seconds = time.perf_counter() - start
    row = {
        "flash_bytes": len(flatbuffer),
        "constant_bytes": report.constant_bytes,
        "runs": True,
        "arena_bytes": report.arena_bytes,
        "op_counts": report.op_counts,
        "tflm_ms_per_row": round(1000 * tflm_seconds / len(split.x_test), 2),
    }
    if "CUSTOM:TFLM_DECODE" not in report.op_counts:  # LiteRT has no DECODE kernel
        steps = np.abs(raw.outputs[0].astype(int) - litert_outputs(flatbuffer, split.x_test))
        row["max_steps_vs_litert"] = int(steps.max())
    else:
        litert = litert_outputs(tfc.micro.decompress(flatbuffer), split.x_test)
        row["max_steps_vs_litert"] = int(np.abs(raw.outputs[0].astype(int) - litert).max())
    outputs = dequantized(flatbuffer, raw.outputs[0])
    row.update(agreement(task, split, keras_outputs, outputs))
    return row


def clustered(model: Any, task: str, split: Split, seed: int) -> Any:
    """`model` clustered to CLUSTERS values per kernel, fine-tuned, and stripped."""
    wrapped = tfc.cluster_weights(model, number_of_clusters=CLUSTERS)
    mlperf_tiny.train(
        wrapped, task, split, epochs=CLUSTER_EPOCHS, seed=seed, learning_rate=CLUSTER_LR
    )
    return tfc.strip_clustering(wrapped)


def run_seed(task: str, seed: int, epochs: int, split: Split) -> dict:
    start = time.perf_counter()
    model = mlperf_tiny.train(mlperf_tiny.build(task, seed), task, split, epochs, seed)
    train_seconds = time.perf_counter() - start
    held_out = Split(split.x_train, split.y_train, split.x_test[:HELD_OUT], split.y_test[:HELD_OUT])
    keras_outputs = model.predict(held_out.x_test, batch_size=128, verbose=0).astype(np.float64)
    calibration = split.x_train[:CALIBRATION]
    files = {
        "tfcompress": lambda: tfc.convert(model, "int8", calibration, target="micro"),
        "plain": lambda: plain_int8(model, calibration),
        "plain_per_tensor_dense": lambda: plain_int8(model, calibration, per_tensor_dense=True),
        "compressed": lambda: tfc.micro.compress(
            tfc.convert(clustered(model, task, split, seed), "int8", calibration, target="micro")
        ),
    }
    row: dict[str, Any] = {
        "seed": seed,
        "keras_score": round(mlperf_tiny.score(model, task, split), 4),
        "train_seconds": round(train_seconds, 1),
    }
    for name, make in files.items():
        try:
            row[name] = measure(task, make(), held_out, keras_outputs)
        except Exception as error:  # noqa: BLE001 - a failure is a result, the run goes on
            row[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
        print(f"  {task} seed {seed} {name}: {row[name]}", file=sys.stderr, flush=True)
    return row


def summary(task: str, runs: list[dict]) -> dict:
    """Per file: the arena and flash (the same for every seed but the compressed file's), and
    the mean of each agreement figure over the seeds."""
    keys = ("flash_bytes", "arena_bytes", "max_steps_vs_litert")
    keys += ("auc", "score_correlation", "relative_error") if task == "ad" else ("top1_agreement",)
    if task != "ad":
        keys += ("accuracy",)
    result: dict[str, Any] = {
        "keras_score": round(statistics.mean(r["keras_score"] for r in runs), 4)
    }
    for name in FILES:
        rows = [r[name] for r in runs if r[name].get("runs")]
        if not rows:
            result[name] = {"runs": f"0 of {len(runs)}"}
            continue
        entry = {"runs": f"{len(rows)} of {len(runs)}"}
        for key in keys:
            values = [r[key] for r in rows]
            if key in ("max_steps_vs_litert", "arena_bytes", "flash_bytes"):
                entry[key] = max(values)
            else:
                entry[key] = round(statistics.mean(values), 4)
        result[name] = entry
    return result


def reference_files(directory: Path) -> dict:
    """Arena and flash of MLPerf Tiny's own pretrained int8 files, where `directory` holds them."""
    found = {}
    for task, relative in REFERENCE_FILES.items():
        path = directory / relative
        if not path.exists():
            path = directory / Path(relative).name
        if not path.exists():
            continue
        content = path.read_bytes()
        report = tfc.micro.check(content)
        found[task] = {
            "file": f"mlcommons/tiny benchmark/training/{relative}",
            "sha256": hashlib.sha256(content).hexdigest(),
            "flash_bytes": len(content),
            "arena_bytes": report.arena_bytes,
            "op_counts": report.op_counts,
        }
    return found


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated tasks (default: kws,vww,ic,ad)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="one seed, one epoch (a smoke run)")
    parser.add_argument("--reference-dir", type=Path, help="mlcommons/tiny benchmark/training")
    parser.add_argument("--name", default="mlperf_tiny", help="results/<name>.json")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",") if args.tasks else list(mlperf_tiny.TASKS)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS)
    if args.quick:
        seeds = seeds[:1]
    from _common import write_results

    results: dict[str, Any] = {}
    for task in tasks:
        split = mlperf_tiny.load(task)
        epochs = 1 if args.quick else mlperf_tiny.EPOCHS[task]
        runs = [run_seed(task, seed, epochs, split) for seed in seeds]
        results[task] = {
            "model": mlperf_tiny.NAMES[task],
            "parameters": mlperf_tiny.PARAMETERS[task],
            "epochs": epochs,
            "train_rows": len(split.x_train),
            "held_out_rows": len(split.x_test),
            "summary": summary(task, runs),
            "runs": runs,
        }
    payload: dict[str, Any] = {
        "settings": {
            "seeds": seeds,
            "calibration_rows": CALIBRATION,
            "held_out_rows_on_tflm": HELD_OUT,
            "clusters": CLUSTERS,
            "cluster_epochs": CLUSTER_EPOCHS,
            "quick": args.quick,
            "tflm": f"tflite-micro {tflm_version()}",
        },
        "tasks": results,
    }
    if args.reference_dir:
        payload["mlperf_reference_files"] = reference_files(args.reference_dir)
    write_results(args.name, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
