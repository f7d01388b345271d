"""Quantization-aware training figures of issue 3, side by side with tfmot in one run.

- coverage: 11 keras.applications models (weights=None, small inputs): quantize -> fit a few
  steps -> int8 TFLite, and the float ops left in the flatbuffer (goal: none);
- digits CNN (width 32), same float weights for both: QAT int8 accuracy on LiteRT, float Keras
  accuracy, and top-1 agreement between the Keras QAT model and its int8 flatbuffer;
- the QAT options on the same digits CNN: 1/2/4/8-bit weights with min/max or learned (LSQ)
  step sizes, and 16-bit activations exported to int16x8;
- training step time of QAT vs float on MobileNetV2 alpha 0.35 (96x96, 10 classes).

tfmot only runs on legacy Keras 2, so its half runs in a subprocess with TF_USE_LEGACY_KERAS=1.

Run: .venv/bin/python benchmarks/qat_bench.py   (writes benchmarks/results/qat.json)
     .venv/bin/python benchmarks/qat_bench.py --models MobileNetV2,ResNet50   (a subset)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

APPS = {  # name -> input side (the smallest each builder accepts, to keep the run short)
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "ResNet50": 32,
    "EfficientNetB0": 32,
    "DenseNet121": 32,
    "NASNetMobile": 32,
    "InceptionV3": 75,
    "Xception": 71,
    "ConvNeXtTiny": 32,
    "EfficientNetV2B0": 32,
}
FLOAT_EPOCHS = 12
QAT_EPOCHS = 3
BATCH = 64
STEP_TIME_STEPS = 12
STEP_TIME_WARMUP = 3
STEP_TIME_ROUNDS = 3


def _app(applications, name: str, side: int):  # noqa: ANN001, ANN202
    kwargs = {"input_shape": (side, side, 3), "weights": None, "classes": 10}
    if name == "MobileNetV2":
        kwargs["alpha"] = 0.35
    return getattr(applications, name)(**kwargs)


def _images(count: int, side: int):  # noqa: ANN202
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (count, side, side, 3)).astype("float32"), rng.integers(0, 10, count)


def _step_time(model, x, y) -> float:  # noqa: ANN001
    model.fit(x[: BATCH * STEP_TIME_WARMUP], y[: BATCH * STEP_TIME_WARMUP], batch_size=16,
              epochs=1, verbose=0)  # fmt: skip
    start = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return (time.perf_counter() - start) / (len(x) // 16)


# -- tfcompress (Keras 3) ---------------------------------------------------------------------
def tfcompress_side(models: list[str], weights_path: str) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress.converter import run_tflite
    from tfcompress.data import load_digits
    from tfcompress.models import build_digits_cnn, compile_classifier

    coverage = {}
    for name in models:
        coverage[name] = _tfcompress_coverage(name)
    split = load_digits()
    keras.utils.set_random_seed(0)
    float_model = compile_classifier(build_digits_cnn(width=32))
    float_model.fit(split.x_train, split.y_train, epochs=FLOAT_EPOCHS, batch_size=BATCH, verbose=0)
    np.savez(weights_path, *float_model.get_weights())
    float_accuracy = float(float_model.evaluate(split.x_test, split.y_test, verbose=0)[1])
    qat = compile_classifier(tfc.quantize_model(float_model), learning_rate=1e-3)
    qat.fit(split.x_train, split.y_train, epochs=QAT_EPOCHS, batch_size=BATCH, verbose=0)
    flatbuffer = tfc.convert(qat, mode="int8")
    agreement = np.mean(
        qat.predict(split.x_test, verbose=0).argmax(1)
        == run_tflite(flatbuffer, split.x_test).argmax(1)
    )
    options = _option_rows(float_model, split)
    return {
        "coverage": coverage,
        "digits": {
            "float_keras_accuracy": float_accuracy,
            "qat_int8_litert_accuracy": tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test),
            "keras_vs_tflite_top1_agreement": float(agreement),
            "float_ops": tfc.inspect(flatbuffer).float_ops,
        },
        "options": options,
    }


def _tfcompress_step_times() -> dict:
    import keras

    import tfcompress as tfc

    x, y = _images(16 * STEP_TIME_STEPS, 96)
    timing_model = _app(keras.applications, "MobileNetV2", 96)
    timing_model.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    float_step = _step_time(timing_model, x, y)
    qat_timing = tfc.quantize_model(timing_model)
    qat_timing.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    return {"float": float_step, "qat": _step_time(qat_timing, x, y)}


OPTIONS = [  # (weight bits, learned step sizes, activation bits)
    (8, False, 8), (8, True, 8), (4, False, 8), (4, True, 8),
    (2, False, 8), (2, True, 8), (1, False, 8), (1, True, 8), (8, False, 16),
]  # fmt: skip


def _option_rows(float_model, split) -> list[dict]:  # noqa: ANN001
    """The same float digits CNN through each QAT option, measured on LiteRT."""
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress.converter import run_tflite
    from tfcompress.models import compile_classifier

    rows = []
    for bits, learned, activation_bits in OPTIONS:
        keras.utils.set_random_seed(0)
        qat = tfc.quantize_model(
            float_model, weight_bits=bits, learned_step=learned, activation_bits=activation_bits
        )
        compile_classifier(qat, learning_rate=1e-3)
        qat.fit(split.x_train, split.y_train, epochs=QAT_EPOCHS, batch_size=BATCH, verbose=0)
        mode = "int16x8" if activation_bits == 16 else "int8"
        flatbuffer = tfc.convert(qat, mode=mode, representative_data=split.x_train[:200])
        keras_top1 = qat.predict(split.x_test, verbose=0).argmax(1)
        rows.append({
            "weight_bits": bits, "learned_step": learned, "activation_bits": activation_bits,
            "mode": mode,
            "keras_accuracy": float(np.mean(keras_top1 == split.y_test)),
            "litert_accuracy": tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test),
            "keras_vs_tflite_top1_agreement": float(
                np.mean(keras_top1 == run_tflite(flatbuffer, split.x_test).argmax(1))
            ),
            "gzip_bytes": len(gzip.compress(flatbuffer, 9)),
            "float_ops": tfc.inspect(flatbuffer).float_ops,
        })  # fmt: skip
    return rows


def _tfcompress_coverage(name: str) -> dict:
    import keras

    import tfcompress as tfc

    side = APPS[name]
    try:
        keras.utils.set_random_seed(0)
        qat = tfc.quantize_model(_app(keras.applications, name, side))
        x, y = _images(16, side)
        qat.compile("adam", keras.losses.SparseCategoricalCrossentropy())
        qat.fit(x, y, batch_size=8, epochs=1, verbose=0)
        flatbuffer = tfc.convert(qat, mode="int8", representative_data=x)
        float_ops = tfc.inspect(flatbuffer).float_ops
        return {"ok": not float_ops, "float_ops": sorted(set(float_ops)), "bytes": len(flatbuffer)}
    except Exception as error:  # noqa: BLE001 - a failing model is a result, not a crash
        return {"ok": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}


# -- tfmot (legacy Keras 2, run in a subprocess) ------------------------------------------------
def tfmot_side(models: list[str], weights_path: str) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from tfcompress.data import load_digits

    coverage = {}
    for name in models:
        coverage[name] = _tfmot_coverage(tf, tfmot, name)
    split = load_digits()
    tf.keras.utils.set_random_seed(0)
    model = _tf_keras_digits_cnn(tf)
    stored = np.load(weights_path)
    model.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
    qat = tfmot.quantization.keras.quantize_model(model)
    _compile(tf, qat, 1e-3)
    qat.fit(split.x_train, split.y_train, epochs=QAT_EPOCHS, batch_size=BATCH, verbose=0)
    accuracy = _tflite_accuracy(tf, qat, split)
    return {
        "coverage": coverage,
        "digits": {"qat_int8_litert_accuracy": accuracy},
    }


def _tfmot_step_times() -> dict:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    x, y = _images(16 * STEP_TIME_STEPS, 96)
    timing = _app(tf.keras.applications, "MobileNetV2", 96)
    _compile(tf, timing, 1e-3)
    float_step = _step_time(timing, x, y)
    qat_timing = tfmot.quantization.keras.quantize_model(timing)
    _compile(tf, qat_timing, 1e-3)
    return {"float": float_step, "qat": _step_time(qat_timing, x, y)}


def _alternating_step_times() -> dict:
    """Best of rounds that alternate between the libraries, each in a fresh process (load on a
    shared machine drifts over minutes; alternating shares the quiet minutes)."""
    best: dict = {"tfcompress": {}, "tfmot": {}}
    for _ in range(STEP_TIME_ROUNDS):
        for side, times in best.items():
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("TF_USE_LEGACY_KERAS", None)
            if side == "tfmot":
                env["TF_USE_LEGACY_KERAS"] = "1"
            command = [sys.executable, __file__, "--timing", side]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[key] = min(times.get(key, value), value)
    return {
        side: {**times, "ratio": times["qat"] / times["float"], "rounds": STEP_TIME_ROUNDS}
        for side, times in best.items()
    }


def _compile(tf, model, learning_rate: float) -> None:  # noqa: ANN001
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip


def _tf_keras_digits_cnn(tf, width: int = 32):  # noqa: ANN001, ANN202
    """The same architecture as tfcompress.models.build_digits_cnn, in tf_keras."""
    layers = tf.keras.layers
    inputs = tf.keras.Input((8, 8, 1))
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.Conv2D(width * 2, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(width * 2, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return tf.keras.Model(inputs, layers.Dense(10)(x))


def _int8_flatbuffer(tf, model, samples) -> bytes:  # noqa: ANN001
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _tflite_accuracy(tf, model, split) -> float:  # noqa: ANN001
    import tfcompress as tfc

    flatbuffer = _int8_flatbuffer(tf, model, split.x_train[:100])
    return tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test)


def _tfmot_coverage(tf, tfmot, name: str) -> dict:  # noqa: ANN001
    import tfcompress as tfc

    side = APPS[name]
    try:
        tf.keras.utils.set_random_seed(0)
        qat = tfmot.quantization.keras.quantize_model(_app(tf.keras.applications, name, side))
        x, y = _images(16, side)
        qat.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy())
        qat.fit(x, y, batch_size=8, epochs=1, verbose=0)
        float_ops = tfc.inspect(_int8_flatbuffer(tf, qat, x)).float_ops
        return {"ok": not float_ops, "float_ops": sorted(set(float_ops))}
    except Exception as error:  # noqa: BLE001 - a failing model is a result, not a crash
        last = traceback.format_exception_only(error)[-1].strip()
        return {"ok": False, "error": last[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(APPS), help="comma-separated subset")
    parser.add_argument("--side", choices=["tfcompress", "tfmot"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--timing", choices=["tfcompress", "tfmot"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timing:
        timer = _tfcompress_step_times if args.timing == "tfcompress" else _tfmot_step_times
        print(json.dumps(timer()))
        return
    models = [name for name in args.models.split(",") if name]
    unknown = sorted(set(models) - set(APPS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(APPS)}")
    if args.side == "tfmot":
        print(json.dumps(tfmot_side(models, args.weights)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results

    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "digits_float.npz")
        ours = tfcompress_side(models, weights)
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        command = [sys.executable, __file__, "--side", "tfmot", "--weights", weights,
                   "--models", ",".join(models)]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        try:
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            theirs = {"error": done.stderr[-2000:]}
    steps = _alternating_step_times()
    ours["step_time_s"], theirs["step_time_s"] = steps["tfcompress"], steps["tfmot"]
    summary = {
        "tfcompress_zero_float_ops": sum(r.get("ok", False) for r in ours["coverage"].values()),
        "tfmot_zero_float_ops": sum(
            r.get("ok", False) for r in theirs.get("coverage", {}).values()
        ),
        "models": len(models),
    }
    write_results("qat", {"summary": summary, "tfcompress": ours, "tfmot": theirs})


if __name__ == "__main__":
    main()
