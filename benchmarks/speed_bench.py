"""Speed and size of the deployed model, and of our own steps (issue 13).

Sections (each timing in a fresh process, the compared sides alternating over `--rounds`):

- `convert`: int8 calibration + conversion time of `tfc.convert` against the plain
  `tf.lite.TFLiteConverter` (int8 I/O, same representative data) on MobileNetV2 1.0 224.
- `train`: median train step time (batch 16) of float, QAT (`quantize_model`) and magnitude
  pruning (`prune_low_magnitude`) on MobileNetV2 1.0 224, EfficientNetB0 224 and ResNet50, with
  and without `jit_compile`, and the same with tf_keras + tfmot (TF_USE_LEGACY_KERAS=1).
- `channels`: `prune_channels(latency_ratio=..., latency_mode="int8")` of MobileNetV2 1.0 224
  (weights=None; the search times int8 files, as the target is about the int8 file), then int8
  LiteRT latency of the pruned against the dense file at 1 and 2 threads, alternating; accuracy
  cost on the trained digits CNN (pruned to the same int8 latency ratio, fine-tuned, int8 on
  LiteRT) and the
  same CNN trained with `StructuredPruning` (channel masks on a schedule, then `strip_channels`);
  `prune_channels(macs_ratio=0.6)` of MobileNetV3Small, EfficientNetB0 and ResNet50 (224,
  weights=None): MACs reached, parameters, int8 output shape, groups left whole and why.
- `sparse`: a 75%-sparse MobileNetV2 (`PruneForLatencyOnXNNPack`, 1x1 convs) as a float32 file
  with sparse weights (`convert(..., sparsity=True)`) against the dense float32 file, XNNPACK.
  The XNNPACK delegate asks XNNPACK for sparse inference itself when a float model holds
  sparse weights (no Python flag exists); XNNPACK takes it only on CPUs with its CHW kernels.
- `int4`: a 4-bit QAT MobileNetV2 as int8 levels and as packed INT4: bytes, where they go
  (`byte_breakdown`: filters, scales, zero points, names, tables) and latency.

Run: .venv/bin/python benchmarks/speed_bench.py [--quick] [--only SECTION ...]
(writes benchmarks/results/speed.json; `--quick` uses MobileNetV2 alpha 0.35 96x96 only, few
steps and one round, and takes a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

BATCH = 16
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("convert", "train", "channels", "sparse", "int4")


def _spec(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "models": ["mobilenet_v2_0.35_96"],
            "main": "mobilenet_v2_0.35_96",
            "steps": 6,
            "calibration": 20,
            "runs": 30,
            "jit": (False,),
            "architectures": ["mobilenet_v3_small_96"],
        }
    return {
        "models": ["mobilenet_v2_1.0_224", "efficientnet_b0_224", "resnet50_224"],
        "main": "mobilenet_v2_1.0_224",
        "steps": 12,
        "calibration": 100,
        "runs": 50,
        "jit": (False, True),
        "architectures": ["mobilenet_v3_small_224", "efficientnet_b0_224", "resnet50_224"],
    }


def _build(name: str, keras_module: Any) -> Any:
    """A model of the zoo (weights=None, so nothing is downloaded), in Keras 3 or tf_keras."""
    apps = keras_module.applications
    if name.startswith("mobilenet_v2"):
        _, _, alpha, size = name.split("_")
        return apps.MobileNetV2(
            alpha=float(alpha), input_shape=(int(size), int(size), 3), weights=None
        )
    if name.startswith("mobilenet_v3_small_"):
        size = int(name.rsplit("_", 1)[1])
        return apps.MobileNetV3Small(input_shape=(size, size, 3), weights=None)
    if name == "efficientnet_b0_224":
        return apps.EfficientNetB0(input_shape=(224, 224, 3), weights=None)
    if name == "resnet50_224":
        return apps.ResNet50(input_shape=(224, 224, 3), weights=None)
    raise ValueError(f"unknown model {name!r}")


def _inputs(model: Any, count: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (count, *shape)).astype(np.float32)


# ---------------------------------------------------------------- child processes (one timing)


def child_convert(side: str, model_name: str, count: int) -> dict[str, float]:
    import keras
    import tensorflow as tf

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    model = _build(model_name, keras)
    data = _inputs(model, count)

    def plain() -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()

    def ours() -> bytes:
        return tfc.convert(model, "int8", data)

    run = ours if side == "ours" else plain
    run()  # warm-up: tracing, first MLIR run
    start = time.perf_counter()
    run()
    return {"convert_s": time.perf_counter() - start}


def child_train(side: str, model_name: str, steps: int, jit: bool) -> dict[str, float]:
    """Median train step (s) of `side` in {float, qat, prune} x {ours, tfmot}."""
    framework, kind = side.split("_")
    if framework == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras_module
    else:
        import keras as keras_module

        import tfcompress as tfc
    keras_module.utils.set_random_seed(0)
    model = _build(model_name, keras_module)
    callbacks: list = []
    if kind == "qat":
        model = (
            tfmot.quantization.keras.quantize_model(model)
            if framework == "tfmot"
            else tfc.quantize_model(model)
        )
    elif kind == "prune":
        if framework == "tfmot":
            schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1)
            model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
            callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
        else:
            schedule = tfc.pruning.ConstantSparsity(0.5, 0, frequency=1)
            model = tfc.prune_low_magnitude(model, schedule)
            callbacks = [tfc.pruning.UpdatePruningStep()]
    compile_kwargs = {"jit_compile": jit} if framework == "ours" or jit else {}
    model.compile(
        optimizer="sgd",
        loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=False),
        **compile_kwargs,
    )
    x = _inputs(model, BATCH * steps)
    y = np.random.default_rng(1).integers(0, 1000, BATCH * steps)

    class Timer(keras_module.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[*callbacks, timer])
    return {"step_s": float(np.median(timer.times[2:]))}  # the first steps trace and compile


def _run_child(args: list[str], legacy: bool) -> dict[str, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _alternate(jobs: dict[str, tuple[list[str], bool]], rounds: int) -> dict[str, dict]:
    """Run each job once per round, the jobs alternating; keep the smallest value of each key."""
    best: dict[str, dict] = {name: {} for name in jobs}
    for _ in range(rounds):
        for name, (args, legacy) in jobs.items():
            for key, value in _run_child(args, legacy).items():
                if isinstance(value, str):
                    best[name][key] = value
                else:
                    best[name][key] = min(best[name].get(key, value), value)
    return best


# ---------------------------------------------------------------- sections


def section_convert(spec: dict, rounds: int) -> dict:
    name = spec["main"]
    jobs = {
        side: (["convert", side, name, str(spec["calibration"])], False)
        for side in ("ours", "plain")
    }
    best = _alternate(jobs, rounds)
    ratio = best["ours"].get("convert_s", np.nan) / best["plain"].get("convert_s", np.nan)
    return {"model": name, "seconds": best, "ours_over_plain": ratio}


def section_train(spec: dict, rounds: int) -> dict:
    out = {}
    for name in spec["models"]:
        for jit in spec["jit"]:
            jobs = {}
            for framework in ("ours", "tfmot"):
                for kind in ("float", "qat", "prune"):
                    side = f"{framework}_{kind}"
                    args = ["train", side, name, str(spec["steps"]), str(int(jit))]
                    jobs[side] = (args, framework == "tfmot")
            best = _alternate(jobs, rounds)
            steps = {side: value.get("step_s", value.get("error")) for side, value in best.items()}
            ratios = {}
            for framework in ("ours", "tfmot"):
                base = steps[f"{framework}_float"]
                for kind in ("qat", "prune"):
                    value = steps[f"{framework}_{kind}"]
                    if isinstance(base, float) and isinstance(value, float):
                        ratios[f"{framework}_{kind}_over_float"] = value / base
            out[f"{name}{'_jit' if jit else ''}"] = {"step_s": steps, "ratios": ratios}
    return out


def section_channels(spec: dict, ratio: float = 0.55) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.pruning import prune_channels

    keras.utils.set_random_seed(0)
    model = _build(spec["main"], keras)
    data = _inputs(model, spec["calibration"])
    start = time.perf_counter()
    small, report = prune_channels(
        model,
        latency_ratio=ratio,
        latency_mode="int8",
        representative_data=data,
        return_report=True,
    )
    search_s = time.perf_counter() - start
    dense8 = tfc.convert(model, "int8", data)
    small8 = tfc.convert(small, "int8", data)
    latency = {}
    for threads in (1, 2):
        times: dict[str, list[float]] = {"dense": [], "pruned": []}
        for _ in range(3):  # the two files alternate; best median of 3
            for label, flat in (("dense", dense8), ("pruned", small8)):
                ms = tfc.benchmark_tflite(flat, threads, spec["runs"]).median_ms
                times[label].append(ms)
        d, s = min(times["dense"]), min(times["pruned"])
        latency[f"{threads}_threads"] = {"dense_ms": d, "pruned_ms": s, "ratio": s / d}
    return {
        "model": spec["main"],
        "latency_ratio_target": ratio,
        "search_s": search_s,
        "int8_search_report": {k: v for k, v in report.to_dict().items() if k != "kept"},
        "params": {"dense": model.count_params(), "pruned": small.count_params()},
        "int8_bytes": {"dense": len(dense8), "pruned": len(small8)},
        "int8_latency": latency,
        "accuracy_cost": _accuracy_cost(ratio),
        "architectures": {name: _architecture(name, spec) for name in spec["architectures"]},
    }


def _architecture(name: str, spec: dict, macs_ratio: float = 0.6) -> dict:
    """`prune_channels(macs_ratio=...)` of another zoo net: builds, right output shape, int8,
    what is left whole and why (no timing: the MACs target is deterministic)."""
    import keras

    import tfcompress as tfc
    from tfcompress.converter import run_tflite
    from tfcompress.pruning import prune_channels

    keras.utils.set_random_seed(0)
    model = _build(name, keras)
    data = _inputs(model, spec["calibration"])
    start = time.perf_counter()
    try:
        small, report = prune_channels(model, macs_ratio=macs_ratio, return_report=True)
    except ValueError as error:
        return {"error": str(error)[:500]}
    search_s = time.perf_counter() - start
    flat = tfc.convert(small, "int8", data)
    shape = run_tflite(flat, data[:2]).shape
    return {
        "macs_ratio_target": macs_ratio,
        "macs_reached": report.reached,
        "search_s": search_s,
        "params": {"dense": model.count_params(), "pruned": small.count_params()},
        "groups_pruned": len(report.kept),
        "left_whole": report.left_whole,
        "output_shape_ok": tuple(shape) == (2, *model.outputs[0].shape[1:]),
        "int8_bytes": len(flat),
    }


def _accuracy_cost(ratio: float) -> dict:
    """Digits CNN: trained, channel-pruned to `ratio` of its LiteRT latency, fine-tuned, int8."""
    import keras

    import tfcompress as tfc
    from tfcompress.data import load_digits
    from tfcompress.models import build_digits_cnn, compile_classifier
    from tfcompress.pruning import prune_channels

    keras.utils.set_random_seed(0)
    split = load_digits()
    model = compile_classifier(build_digits_cnn(width=32))
    model.fit(split.x_train, split.y_train, epochs=30, batch_size=64, verbose=0)
    calib = split.x_train[:200]
    small, report = prune_channels(
        model,
        latency_ratio=ratio,
        latency_mode="int8",
        representative_data=calib,
        return_report=True,
    )
    out: dict[str, Any] = {"int8_search_reached": report.reached}
    small = compile_classifier(small)
    small.fit(split.x_train, split.y_train, epochs=10, batch_size=64, verbose=0)
    gradual = _gradual(split, 1.0 - (small.count_params() / model.count_params()) ** 0.5)
    for label, net in (("dense", model), ("pruned", small), ("gradual", gradual)):
        flat = tfc.convert(net, "int8", calib)
        out[label] = {
            "int8_accuracy": tfc.evaluate_tflite(flat, split.x_test, split.y_test),
            "int8_ms": tfc.benchmark_tflite(flat, runs=200).median_ms,
            "params": net.count_params(),
        }
    return out


def _gradual(split: Any, sparsity: float) -> Any:
    """Digits CNN trained with `StructuredPruning` to `sparsity` per channel group, stripped."""
    import keras

    from tfcompress.models import build_digits_cnn, compile_classifier
    from tfcompress.pruning import PolynomialDecay
    from tfcompress.pruning.gradual import StructuredPruning, strip_channels

    keras.utils.set_random_seed(0)
    model = compile_classifier(build_digits_cnn(width=32))
    steps = int(np.ceil(len(split.x_train) / 64))
    schedule = PolynomialDecay(0.0, round(sparsity, 3), 10 * steps, 30 * steps, frequency=steps)
    pruning = StructuredPruning(schedule, max_fraction=0.9)
    model.fit(
        split.x_train, split.y_train, epochs=40, batch_size=64, verbose=0, callbacks=[pruning]
    )
    return strip_channels(model)


def _one_by_one_policy() -> Any:
    import tfcompress as tfc

    class OneByOne(tfc.sparsity.PruneForLatencyOnXNNPack):
        """The policy's 1x1-conv rule; Keras 3's MobileNetV2 starts with a 'same' stride-2 conv
        instead of tfmot's ZeroPadding2D + 'valid' one, which XNNPACK's NCHW rewrite also
        accepts, so the stem check is skipped."""

        def ensure_model_supports_pruning(self, model: Any) -> None:
            pass

    return OneByOne()


def section_sparse(spec: dict) -> dict:
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    model = _build(spec["main"], keras)
    schedule = tfc.pruning.ConstantSparsity(0.75, 0, frequency=1)
    pruned = tfc.sparsity.prune_low_magnitude(model, schedule, pruning_policy=_one_by_one_policy())
    pruned.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = _inputs(model, 2)
    pruned.fit(x, np.zeros(2), epochs=1, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
    stripped = tfc.strip_pruning(pruned)
    dense = tfc.convert(stripped, "float32")
    sparse = tfc.convert(stripped, "float32", sparsity=True)
    report = tfc.inspect(sparse)
    out: dict[str, Any] = {
        "model": spec["main"],
        "sparse_tensors": sum(1 for t in report.tensors if t.sparse is not None),
        "densify_ops": report.op_counts.get("DENSIFY", 0),
        "bytes": {"dense": len(dense), "sparse": len(sparse)},
    }
    for threads in (1, 2):
        d = min(tfc.benchmark_tflite(dense, threads, spec["runs"]).median_ms for _ in range(3))
        s = min(tfc.benchmark_tflite(sparse, threads, spec["runs"]).median_ms for _ in range(3))
        out[f"{threads}_threads"] = {"dense_ms": d, "sparse_ms": s, "speedup": d / s}
    return out


def section_int4(spec: dict) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.tflite.int4 import byte_breakdown, pack_int4

    keras.utils.set_random_seed(0)
    model = _build(spec["main"], keras)
    data = _inputs(model, spec["calibration"])
    qat = tfc.quantize_model(model, weight_bits=4)
    levels = tfc.convert(qat, "int8", data)
    packing = pack_int4(levels, require=True)
    packed = packing.flatbuffer
    eight = tfc.convert(tfc.quantize_model(model), "int8", data)
    out: dict[str, Any] = {
        "model": spec["main"],
        "bytes": {"int8_8bit": len(eight), "int8_levels_4bit": len(levels), "int4": len(packed)},
        "int4_over_int8_levels": len(packed) / len(levels),
        "int4_over_int8_8bit": len(packed) / len(eight),
        "packed_tensors": len(packing.packed),
        "kept_int8": len(packing.kept),
        "breakdown": {"int8_levels_4bit": byte_breakdown(levels), "int4": byte_breakdown(packed)},
    }
    for threads in (1, 2):
        a = min(tfc.benchmark_tflite(levels, threads, spec["runs"]).median_ms for _ in range(3))
        b = min(tfc.benchmark_tflite(packed, threads, spec["runs"]).median_ms for _ in range(3))
        out[f"{threads}_threads"] = {"int8_levels_ms": a, "int4_ms": b, "ratio": b / a}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--models", help="comma-separated train/convert models (default: the spec's)"
    )
    parser.add_argument("--steps", type=int, help="train steps per process (default: the spec's)")
    parser.add_argument(
        "--no-jit", action="store_true", help="train without jit_compile only (XLA compiles slowly)"
    )
    parser.add_argument(
        "--jit-only", action="store_true", help="train with jit_compile only (the XLA rows)"
    )
    parser.add_argument(
        "--name", help="results file name (default: speed, or speed_quick with --quick)"
    )
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        task, side, name, *rest = args.child
        if task == "convert":
            result = child_convert(side, name, int(rest[0]))
        else:
            result = child_train(side, name, int(rest[0]), bool(int(rest[1])))
        print(json.dumps(result))
        return
    spec = _spec(args.quick)
    if args.models:
        spec["models"] = args.models.split(",")
    if args.steps:
        spec["steps"] = args.steps
    if args.no_jit and args.jit_only:
        parser.error("--no-jit and --jit-only exclude each other")
    if args.no_jit:
        spec["jit"] = (False,)
    if args.jit_only:
        spec["jit"] = (True,)
    rounds = args.rounds or (1 if args.quick else 2)
    results: dict[str, Any] = {"quick": args.quick, "rounds": rounds, "batch": BATCH}
    name = args.name or ("speed_quick" if args.quick else "speed")
    previous = RESULTS_DIR / f"{name}.json"
    if previous.exists():  # a --only run keeps the other sections' figures
        kept = json.loads(previous.read_text())
        results.update({k: v for k, v in kept.items() if k in SECTIONS and k not in args.only})
    runners = {
        "convert": lambda: section_convert(spec, rounds),
        "train": lambda: section_train(spec, rounds),
        "channels": lambda: section_channels(spec),
        "sparse": lambda: section_sparse(spec),
        "int4": lambda: section_int4(spec),
    }
    for section in args.only:
        start = time.perf_counter()
        try:
            results[section] = runners[section]()
        except Exception as error:  # noqa: BLE001 - one failing section must not hide the others
            results[section] = {"error": f"{type(error).__name__}: {error}"[:500]}
        results[section]["section_s"] = time.perf_counter() - start
        write_results(name, {**results, "spec": spec})  # kept if stopped later
    write_results(name, {**results, "spec": spec})


if __name__ == "__main__":
    main()
