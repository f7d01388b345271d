"""Pruning figures of issue 4, side by side with tfmot in one run.

- digits CNN (width 32), same float weights, schedule and epochs for tfcompress and tfmot: int8
  accuracy on LiteRT at 50% and 80% sparsity, measured kernel sparsity in the int8 flatbuffer,
  raw and gzip sizes, sparse (`EXPERIMENTAL_SPARSITY`) export size and the delegate it runs on;
- structured pruning of 50% of the channels: parameters, FLOPs, int8 size, accuracy;
- pruning-wrapper training step time on MobileNetV2 alpha 0.35 (96x96, 10 classes).

tfmot only runs on legacy Keras 2, so its half runs in a subprocess with TF_USE_LEGACY_KERAS=1.

Run: .venv/bin/python benchmarks/pruning_bench.py   (writes benchmarks/results/pruning.json)
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOAT_EPOCHS = 12
PRUNE_EPOCHS = 10
BATCH = 64
SPARSITIES = (0.5, 0.8)
STEP_TIME_STEPS = 25
STEP_TIME_WARMUP = 3
STEP_TIME_ROUNDS = 4
FREQUENCIES = (100, 1)  # the default mask-update frequency, and a mask update at every step


def mobilenet_data():
    import numpy as np

    images = np.random.default_rng(0).uniform(-1, 1, (16 * STEP_TIME_STEPS, 96, 96, 3))
    labels = np.random.default_rng(0).integers(0, 10, len(images))
    return images.astype("float32"), labels


def step_times(keras_module, build, prune, callback, same_layers_build=None) -> dict:
    """Median training step (ms) of MobileNetV2 0.35, plain and pruned at each frequency.

    `same_layers_build` builds the unpruned model with the layers the pruned one trains with
    (tfcompress swaps in FusedBatchNormalization): the wrapper's own overhead is measured
    against it, the total speed against the plain model.
    """
    images, labels = mobilenet_data()

    def timed(model, callbacks) -> float:
        times: list = []
        model.compile("sgd", keras_module.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, batch_size=16, epochs=1, verbose=0,
                  callbacks=[*callbacks, timing_callback(keras_module, times)])  # fmt: skip
        return median_step_ms(times)

    timings = {"plain": timed(build(), [])}
    if same_layers_build is not None:
        timings["plain_same_layers"] = timed(same_layers_build(), [])
    for frequency in FREQUENCIES:
        model, timings["wrapped_layers"] = prune(build(), frequency)
        timings[f"pruned_frequency_{frequency}"] = timed(model, [callback()])
    return timings


def with_overheads(timings: dict) -> dict:
    """The pruned steps relative to the unpruned model with the same layers (or the plain one)."""
    baseline = timings.get("plain_same_layers", timings["plain"])
    overheads = {
        f"overhead_frequency_{f}": timings[f"pruned_frequency_{f}"] / baseline for f in FREQUENCIES
    }
    return {**timings, **overheads}


def timing_worker(side: str) -> None:
    """One timing round of one library (run by `alternating_best` in a fresh process)."""
    print(json.dumps(tfcompress_step_times() if side == "tfcompress" else tfmot_step_times()))


def schedule_kwargs(sparsity: float, steps_per_epoch: int) -> dict:
    """The same PolynomialDecay for both libraries: reach the target after half the epochs."""
    return {
        "initial_sparsity": 0.0,
        "final_sparsity": sparsity,
        "begin_step": 0,
        "end_step": steps_per_epoch * PRUNE_EPOCHS // 2,
        "frequency": 10,
    }


def steps_per_epoch(count: int) -> int:
    return -(-count // BATCH)


def timing_callback(keras_module, times: list) -> object:
    class StepTimer(keras_module.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self._start)

    return StepTimer()


def median_step_ms(times: list) -> float:
    import statistics

    return 1000 * statistics.median(times[STEP_TIME_WARMUP:])


# -- tfmot half (legacy Keras 2, subprocess) ---------------------------------------------------
def tfmot_worker(work: Path) -> None:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    from _common import legacy_digits_cnn

    keras2 = tf.keras
    data = np.load(work / "inputs.npz")
    x, y = data["x_train"], data["y_train"]
    weights = [data[f"w{i}"] for i in range(int(data["count"]))]
    sparsity_api = tfmot.sparsity.keras
    results: dict = {"tfmot_version": tfmot.__version__}

    def digits_model():
        model = legacy_digits_cnn(keras2)
        model.set_weights(weights)
        return model

    def representative():
        for sample in x[:200]:
            yield [sample[None]]

    for sparsity in SPARSITIES:
        tf.random.set_seed(0)
        schedule = sparsity_api.PolynomialDecay(
            **schedule_kwargs(sparsity, steps_per_epoch(len(x)))
        )
        pruned = sparsity_api.prune_low_magnitude(digits_model(), pruning_schedule=schedule)
        pruned.compile(
            keras2.optimizers.Adam(1e-3),
            keras2.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        pruned.fit(x, y, batch_size=BATCH, epochs=PRUNE_EPOCHS, verbose=0,
                   callbacks=[sparsity_api.UpdatePruningStep()])  # fmt: skip
        final = sparsity_api.strip_pruning(pruned)
        converter = tf.lite.TFLiteConverter.from_keras_model(final)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        (work / f"tfmot_{int(sparsity * 100)}.tflite").write_bytes(converter.convert())

    (work / "tfmot.json").write_text(json.dumps(results))


def tfmot_step_times() -> dict:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    keras2, sparsity_api = tf.keras, tfmot.sparsity.keras

    def build():
        return keras2.applications.MobileNetV2(
            input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10,
            classifier_activation=None,
        )  # fmt: skip

    def prune(model, frequency):
        schedule = sparsity_api.ConstantSparsity(0.5, 0, frequency=frequency)
        pruned = sparsity_api.prune_low_magnitude(model, pruning_schedule=schedule)
        wrapped = sum(type(layer).__name__ == "PruneLowMagnitude" for layer in pruned.layers)
        return pruned, wrapped

    return step_times(keras2, build, prune, sparsity_api.UpdatePruningStep)


def run_tfmot(work: Path) -> dict:
    environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [sys.executable, __file__, "--tfmot-worker", str(work)],
        env=environment,
        check=True,
    )
    return json.loads((work / "tfmot.json").read_text())


# -- tfcompress half (Keras 3) -----------------------------------------------------------------
def kernel_sparsity(flatbuffer: bytes) -> float:
    import numpy as np

    import tfcompress as tfc

    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None and t.buffer.dtype == np.int8 and len(t.shape) >= 2
    ]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def file_figures(flatbuffer: bytes, split, builtin_only: bool = False) -> dict:
    import tfcompress as tfc

    return {
        "accuracy": tfc.evaluate_tflite(
            flatbuffer, split.x_test, split.y_test, builtin_only=builtin_only
        ),  # fmt: skip
        "bytes": len(flatbuffer),
        "gzip_bytes": len(gzip.compress(flatbuffer, compresslevel=9)),
    }


def tfcompress_digits(split, float_model, calibration, stripped: dict) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.models import compile_classifier

    rows = {}
    for sparsity in SPARSITIES:
        keras.utils.set_random_seed(0)
        clone = keras.models.clone_model(float_model)
        clone.set_weights(float_model.get_weights())
        schedule = tfc.pruning.PolynomialDecay(
            **schedule_kwargs(sparsity, steps_per_epoch(len(split.x_train)))
        )
        pruned = compile_classifier(tfc.prune_low_magnitude(clone, schedule=schedule), 1e-3)
        pruned.fit(split.x_train, split.y_train, batch_size=BATCH, epochs=PRUNE_EPOCHS, verbose=0,
                   callbacks=[tfc.pruning.UpdatePruningStep()])  # fmt: skip
        final = stripped[sparsity] = tfc.strip_pruning(pruned)
        flatbuffer = tfc.convert(final, "int8", calibration)
        sparse = tfc.pruning.convert_sparse(final, "int8", calibration)
        runtime = tfc.pruning.check_sparse_runtime(sparse, split.x_test)
        rows[str(sparsity)] = {
            "int8": {
                **file_figures(flatbuffer, split),
                "kernel_sparsity": kernel_sparsity(flatbuffer),
            },
            "int8_sparse_encoding": {
                **file_figures(sparse, split, builtin_only=runtime.builtin_only),
                "delegate": runtime.delegate,
                "xnnpack_error": runtime.xnnpack_error,
            },
        }
    return rows


def structured_figures(split, float_model, calibration, dense_int8: bytes) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.models import compile_classifier
    from tfcompress.pruning import count_flops, prune_channels

    keras.utils.set_random_seed(0)
    small = compile_classifier(prune_channels(float_model, 0.5), 1e-3)
    before = file_figures(tfc.convert(small, "int8", calibration), split)["accuracy"]
    small.fit(split.x_train, split.y_train, batch_size=BATCH, epochs=PRUNE_EPOCHS, verbose=0)
    flatbuffer = tfc.convert(small, "int8", calibration)
    return {
        "fraction_of_channels_removed": 0.5,
        "params_ratio": small.count_params() / float_model.count_params(),
        "flops_ratio": count_flops(small) / count_flops(float_model),
        "int8_bytes_ratio": len(flatbuffer) / len(dense_int8),
        "int8_accuracy_before_finetune": before,
        "int8": file_figures(flatbuffer, split),
    }


def qat_figures(split, calibration, sparse_model) -> dict:
    """QAT of the stripped 80%-sparse model, with and without PreserveSparsity."""
    import keras

    import tfcompress as tfc
    from tfcompress.models import compile_classifier
    from tfcompress.quantization import quantize_model

    rows = {}
    for name, callbacks in (("plain_qat", []), ("sparsity_preserving_qat", [
        tfc.pruning.PreserveSparsity()
    ])):  # fmt: skip
        keras.utils.set_random_seed(0)
        qat = compile_classifier(quantize_model(sparse_model), 1e-3)
        qat.fit(split.x_train, split.y_train, batch_size=BATCH, epochs=2, verbose=0,
                callbacks=callbacks)  # fmt: skip
        flatbuffer = tfc.convert(qat, "int8")
        rows[name] = {
            **file_figures(flatbuffer, split),
            "kernel_sparsity": kernel_sparsity(flatbuffer),
        }
    return rows


def tfcompress_step_times() -> dict:
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(0)

    def build():
        return keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10,
            classifier_activation=None,
        )  # fmt: skip

    def prune(model, frequency):
        schedule = tfc.pruning.ConstantSparsity(0.5, 0, frequency=frequency)
        pruned = tfc.prune_low_magnitude(model, schedule=schedule)
        return pruned, len(tfc.pruning.pruned_layers(pruned))

    def same_layers_build():
        from tfcompress.core.graph import fresh_copy, rebuild
        from tfcompress.layers import FusedBatchNormalization

        def fused(layer):
            if type(layer) is keras.layers.BatchNormalization:
                return fresh_copy(layer, as_class=FusedBatchNormalization)
            return None

        return rebuild(build(), fused)

    return step_times(keras, build, prune, tfc.pruning.UpdatePruningStep, same_layers_build)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    from _common import alternating_best, write_results

    import tfcompress as tfc
    from tfcompress.data import calibration_sample, load_digits
    from tfcompress.demo import train_float_model

    split = load_digits()
    float_model = train_float_model(split, FLOAT_EPOCHS)
    calibration = calibration_sample(split.x_train, 200)
    dense_int8 = tfc.convert(float_model, "int8", calibration)
    float_accuracy = float(np.mean(float_model.predict(split.x_test, verbose=0).argmax(-1)
                                   == split.y_test))  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        arrays = {f"w{i}": w for i, w in enumerate(float_model.get_weights())}
        np.savez(work / "inputs.npz", x_train=split.x_train, y_train=split.y_train,
                 count=len(arrays), **arrays)  # fmt: skip
        tfmot = run_tfmot(work)
        best = alternating_best(__file__, ("tfcompress", "tfmot"), STEP_TIME_ROUNDS)
        steps = {side: with_overheads(times) for side, times in best.items()}
        tfmot_rows = {}
        for sparsity in SPARSITIES:
            flatbuffer = (work / f"tfmot_{int(sparsity * 100)}.tflite").read_bytes()
            tfmot_rows[str(sparsity)] = {
                **file_figures(flatbuffer, split),
                "kernel_sparsity": kernel_sparsity(flatbuffer),
            }
    stripped: dict = {}
    ours = tfcompress_digits(split, float_model, calibration, stripped)
    qat = qat_figures(split, calibration, stripped[0.8])
    dense = file_figures(dense_int8, split)
    structured = structured_figures(split, float_model, calibration, dense_int8)
    accuracy_50 = ours["0.5"]["int8"]["accuracy"]
    accuracy_80 = ours["0.8"]["int8"]["accuracy"]
    targets = {
        "int8_50pct_accuracy_ge_float_minus_1pp": accuracy_50 >= float_accuracy - 0.01,
        "int8_80pct_accuracy_ge_tfmot_80pct": accuracy_80 >= tfmot_rows["0.8"]["accuracy"],
        "kernel_sparsity_within_1pct": all(
            abs(ours[str(s)]["int8"]["kernel_sparsity"] - s) <= 0.01 for s in SPARSITIES
        ),
        "gzip_80pct_le_half_of_dense_int8": ours["0.8"]["int8"]["gzip_bytes"]
        <= 0.5 * dense["gzip_bytes"],
        "sparsity_preserving_qat_keeps_zeros": abs(
            qat["sparsity_preserving_qat"]["kernel_sparsity"] - 0.8
        )
        <= 0.01,
        "structured_params_le_0_55": structured["params_ratio"] <= 0.55,
        "structured_int8_bytes_le_0_55": structured["int8_bytes_ratio"] <= 0.55,
        "step_time_le_tfmot_default_frequency": steps["tfcompress"]["pruned_frequency_100"]
        <= steps["tfmot"]["pruned_frequency_100"],
        "step_time_le_tfmot_every_step": steps["tfcompress"]["pruned_frequency_1"]
        <= steps["tfmot"]["pruned_frequency_1"],
    }
    write_results("pruning", {
        "settings": {"float_epochs": FLOAT_EPOCHS, "prune_epochs": PRUNE_EPOCHS, "batch": BATCH,
                     "schedule": "PolynomialDecay 0 -> target over half the epochs, frequency 10"},
        "float_keras_accuracy": float_accuracy,
        "dense_int8": dense,
        "tfcompress": ours,
        "tfmot": {"version": tfmot["tfmot_version"], **tfmot_rows},
        "structured": structured,
        "qat_of_80pct_sparse_model": qat,
        "mobilenetv2_035_step_ms": {**steps, "rounds": STEP_TIME_ROUNDS},
        "targets": targets,
    })  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tfmot-worker":
        tfmot_worker(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--timing":
        timing_worker(sys.argv[2])
    else:
        main()
