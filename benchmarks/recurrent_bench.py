"""Recurrent models in full integer (issue 10, item 2): LSTM, GRU, SimpleRNN and Bidirectional-LSTM
on the digits-as-sequence task (each 8x8 image read as 8 steps of 8 features).

For each model: the float32 file (TF's own recurrent loop, batch 1, which that lowering needs), the
float32 file of the batch-None model (which `convert` unrolls, as TF's loop cannot take it), the
int8 file after post-training quantization (`convert(float_model, "int8", data)`, the recurrence
unrolled by tfcompress), the int16x8 file of the same (16-bit activations) and the int8 file after quantization-aware fine-tuning (`quantize_model`,
one epoch). Agreement is top-1 agreement with the Keras model the file came from; latency is the
median of batch-1 invocations on LiteRT (`tfc.benchmark_tflite`, 1 thread).

Run: .venv/bin/python benchmarks/recurrent_bench.py [--epochs 10] [--runs 200]
     (writes benchmarks/results/recurrent.json). Time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.converter import run_tflite  # noqa: E402
from tfcompress.data import load_digits  # noqa: E402

L = keras.layers
UNITS = 32


def build(kind: str, batch_size: int | None = None) -> keras.Model:
    inputs = keras.Input((8, 8), batch_size=batch_size)
    if kind == "Bidirectional-LSTM":
        hidden = L.Bidirectional(L.LSTM(UNITS))(inputs)
    else:
        hidden = getattr(L, kind)(UNITS)(inputs)
    return keras.Model(inputs, L.Dense(10)(hidden), name=kind.lower().replace("-", "_"))


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def lstm_kernel_file(model: keras.Model, calibration: np.ndarray | None = None) -> bytes:
    """`model` through TFLite's own LSTM kernel (UNIDIRECTIONAL_SEQUENCE_LSTM), the route
    tfcompress does not take: int8 with 16-bit internals when `calibration` is given, else float.

    TF 2.21's converter fuses only tf_keras's LSTM, so the Keras 3 weights (same layout) go into
    a tf_keras twin of `model` (Input, Masking, LSTM and Dense layers in a chain), traced at batch
    1. Calibration runs in a child process: TF's converter crashes on some of these graphs. The
    fused kernel keeps its state in variable tensors, which `run_tflite` resets before each call.
    """
    import tensorflow as tf
    import tf_keras

    from tfcompress.tflite.isolation import convert_isolated

    def twin_of(layer: keras.layers.Layer) -> tf_keras.layers.Layer:
        if isinstance(layer, L.Masking):
            return tf_keras.layers.Masking(layer.mask_value)
        if isinstance(layer, L.LSTM):
            return tf_keras.layers.LSTM(
                layer.units,
                activation=keras.activations.serialize(layer.activation),
                recurrent_activation=keras.activations.serialize(layer.recurrent_activation),
                use_bias=layer.use_bias,
                return_sequences=layer.return_sequences,
                go_backwards=layer.go_backwards,
            )
        if isinstance(layer, L.Dense):
            return tf_keras.layers.Dense(
                layer.units, keras.activations.serialize(layer.activation), layer.use_bias
            )
        raise ValueError(f"no tf_keras twin for {type(layer).__name__} layer '{layer.name}'")

    hidden = inputs = tf_keras.Input(model.input_shape[1:], batch_size=1)
    for layer in model.layers[1:]:
        twin = twin_of(layer)
        hidden = twin(hidden)
        twin.set_weights(layer.get_weights())
    twin_model = tf_keras.Model(inputs, hidden)
    function = tf.function(lambda x: twin_model(x)).get_concrete_function(
        tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], twin_model)
    if calibration is None:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8  # as tfcompress's
    return convert_isolated(converter, name=model.name, mode="int8", timeout=600)


def file_row(
    flatbuffer: bytes, model: keras.Model, x: np.ndarray, y: np.ndarray, runs: int
) -> dict:
    report = tfc.inspect(flatbuffer)
    logits = run_tflite(flatbuffer, x)
    reference = np.asarray(model.predict(x, verbose=0)).argmax(-1)
    return {
        "top1_agreement_with_keras": float(np.mean(logits.argmax(-1) == reference)),
        "accuracy": float(np.mean(logits.argmax(-1) == y)),
        "bytes": report.size_bytes,
        "float_ops": len(report.float_ops),
        "ops": report.op_counts,
        "median_ms": tfc.benchmark_tflite(flatbuffer, runs=runs).median_ms,
    }


def measure(kind: str, split, epochs: int, runs: int) -> dict:
    x_train, x_test = split.x_train.reshape(-1, 8, 8), split.x_test.reshape(-1, 8, 8)
    keras.utils.set_random_seed(0)
    model = compile_model(build(kind), 1e-2)
    model.fit(x_train, split.y_train, epochs=epochs, batch_size=64, verbose=0)
    keras_accuracy = float(
        np.mean(np.asarray(model.predict(x_test, verbose=0)).argmax(-1) == split.y_test)
    )
    # TF's float lowering of the Keras loop needs a static batch: the same weights at batch 1
    single = build(kind, batch_size=1)
    single.set_weights(model.get_weights())
    float_file = tfc.convert(single, "float32")
    unrolled_float_file = tfc.convert(model, "float32")  # batch None: convert unrolls the loop
    int8_file = tfc.convert(model, "int8", x_train[:200])
    int16x8_file = tfc.convert(model, "int16x8", x_train[:200])
    qat = compile_model(tfc.quantize_model(model), 1e-3)
    qat.fit(x_train, split.y_train, epochs=1, batch_size=64, verbose=0)
    qat_file = tfc.convert(qat, "int8")
    rows = {
        "float32": file_row(float_file, model, x_test, split.y_test, runs),
        **(
            {
                "int8_lstm_kernel": file_row(
                    lstm_kernel_file(model, x_train[:200]), model, x_test, split.y_test, runs
                )
            }
            if kind == "LSTM"
            else {}
        ),
        "float32_unrolled": file_row(unrolled_float_file, model, x_test, split.y_test, runs),
        "int8_ptq": file_row(int8_file, model, x_test, split.y_test, runs),
        "int16x8_ptq": file_row(int16x8_file, model, x_test, split.y_test, runs),
        "int8_qat": file_row(qat_file, qat, x_test, split.y_test, runs),
    }
    for name in set(rows) - {"float32"}:
        rows[name]["speedup_vs_float32"] = round(
            rows["float32"]["median_ms"] / rows[name]["median_ms"], 3
        )
    return {"keras_accuracy": keras_accuracy, "units": UNITS, **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    split = load_digits()
    models = {
        kind: measure(kind, split, args.epochs, args.runs)
        for kind in ("LSTM", "GRU", "SimpleRNN", "Bidirectional-LSTM")
    }
    write_results(
        "recurrent",
        {
            "task": "digits as 8 steps of 8 features; 1 LiteRT thread, batch 1 latency",
            "epochs": args.epochs,
            "timing_note": "one pass per file: median of --runs batch-1 invocations each; "
            "run it on a quiet machine",
            "runs": args.runs,
            "models": models,
        },
    )


if __name__ == "__main__":
    main()
