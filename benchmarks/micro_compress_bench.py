"""Flash of clustered int8 files stored as TFLM look-up tables (`tfc.micro.compress`), issue 24.

For each model and seed: train the float model, cluster its weights (16 or 8 clusters) or prune
it (80 % constant sparsity) and fine-tune, strip, convert to int8 for the microcontroller (per-channel scales, the default, and
per-tensor scales, `per_channel=False`), compress, then run both files on TFLM's interpreter
(`tflite-micro`) over the held-out test split: the flash of each file, the ratio, the smallest
arena of each (`tfc.micro.check`), whether TFLM's outputs are identical, and the TFLM test
accuracy of both files (classifiers).

Run: .venv/bin/python benchmarks/micro_compress_bench.py   (writes benchmarks/results/micro_compress.json)
     .venv/bin/python benchmarks/micro_compress_bench.py --quick   (one model, one seed; no file)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.data import Split, load_digits  # noqa: E402
from tfcompress.examples import mlperf_tiny, zoo  # noqa: E402
from tfcompress.micro.runner import attempt, tflm_version  # noqa: E402
from tfcompress.models import build_digits_cnn, compile_classifier  # noqa: E402

SEEDS = (0, 1, 2)
CLUSTERS = (16, 8)
SPARSITY = 0.8
FLOAT_EPOCHS, FINE_TUNE_EPOCHS = 5, 2
CALIBRATION = 200
MODELS = {
    "digits_cnn": "tfcompress.models.build_digits_cnn(width=32), digits 8x8",
    "zoo_resnet": "tfcompress.examples.zoo 'resnet' (3 residual blocks), digits 16x16",
    "mlperf_ic_resnet8": "tfcompress.examples.mlperf_tiny 'ic' (ResNet-8), stand-in 32x32 images",
    "mlperf_ad_autoencoder": "tfcompress.examples.mlperf_tiny 'ad' (FC autoencoder 640-128-8)",
}


def _model_and_data(name: str, seed: int) -> tuple[keras.Model, Split, str]:
    """A float model trained briefly, its data, and its loss ('ce' or 'mse')."""
    if name == "digits_cnn":
        split = load_digits()
        keras.utils.set_random_seed(seed)
        model = compile_classifier(build_digits_cnn(width=32))
        model.fit(split.x_train, split.y_train, epochs=FLOAT_EPOCHS, batch_size=64, verbose=0)
        return model, split, "ce"
    if name == "zoo_resnet":
        split = zoo.load("resnet")
        return zoo.train(zoo.build("resnet", seed), split, FLOAT_EPOCHS, seed), split, "ce"
    task = {"mlperf_ic_resnet8": "ic", "mlperf_ad_autoencoder": "ad"}[name]
    split = mlperf_tiny.load(task, seed)
    model = mlperf_tiny.train(mlperf_tiny.build(task, seed), task, split, FLOAT_EPOCHS, seed)
    return model, split, "mse" if task == "ad" else "ce"


def _fine_tune(
    model: keras.Model, split: Split, loss: str, seed: int, callbacks: list | None = None
) -> None:
    keras.utils.set_random_seed(seed)
    if loss == "mse":
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        targets = split.x_train
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        targets = split.y_train
    model.fit(
        split.x_train,
        targets,
        epochs=FINE_TUNE_EPOCHS,
        batch_size=64,
        verbose=0,
        callbacks=callbacks or [],
    )


def _int8_inputs(flatbuffer: bytes, x: np.ndarray) -> list[np.ndarray]:
    info = tfc.inspect(flatbuffer)
    quantization = info.tensors[info.inputs[0]].quantization
    scaled = np.round(x / quantization.scale[0] + quantization.zero_point[0])
    return [np.clip(scaled, -128, 127).astype(np.int8)]


def _measure(flat: bytes, split: Split, loss: str) -> dict:
    started = time.perf_counter()
    small = tfc.micro.compress(flat)
    compress_s = time.perf_counter() - started
    inputs = _int8_inputs(flat, split.x_test)
    plain, compressed = attempt(flat, 1 << 24, inputs), attempt(small, 1 << 24, inputs)
    identical = (
        plain.ok
        and compressed.ok
        and all(
            np.array_equal(a, b) for a, b in zip(plain.outputs, compressed.outputs, strict=True)
        )
    )
    plain_report, small_report = tfc.micro.check(flat), tfc.micro.check(small)
    row = {
        "int8_flash_bytes": len(flat),
        "compressed_flash_bytes": len(small),
        "flash_ratio": round(len(small) / len(flat), 4),
        "lut_tensors": small_report.compressed_tensors,
        "int8_arena_bytes": plain_report.arena_bytes,
        "compressed_arena_bytes": small_report.arena_bytes,
        "tflm_runs": bool(compressed.ok),
        "tflm_identical": bool(identical),
        "compress_seconds": round(compress_s, 3),
    }
    if loss == "ce" and plain.ok and compressed.ok:
        labels = split.y_test
        row["tflm_accuracy_int8"] = float(np.mean(np.argmax(plain.outputs[0], -1) == labels))
        row["tflm_accuracy_compressed"] = float(
            np.mean(np.argmax(compressed.outputs[0], -1) == labels)
        )
    return row


def run(names: list[str], seeds: tuple[int, ...]) -> list[dict]:
    rows = []
    for name in names:
        for seed in seeds:
            model, split, loss = _model_and_data(name, seed)
            calibration = split.x_train[:CALIBRATION]
            variants = []
            for clusters in CLUSTERS:
                keras.utils.set_random_seed(seed)
                clustered = tfc.cluster_weights(model, number_of_clusters=clusters)
                _fine_tune(clustered, split, loss, seed)
                variants.append((f"{clusters} clusters", tfc.strip_clustering(clustered)))
            keras.utils.set_random_seed(seed)
            schedule = tfc.pruning.ConstantSparsity(SPARSITY, begin_step=0, frequency=10)
            pruned = tfc.prune_low_magnitude(model, schedule)
            _fine_tune(pruned, split, loss, seed, [tfc.pruning.UpdatePruningStep()])
            variants.append((f"{SPARSITY:.0%} pruned", tfc.strip_pruning(pruned)))
            for variant, stripped in variants:
                for per_channel in (True, False):
                    flat = tfc.convert(
                        stripped, "int8", calibration, target="micro", per_channel=per_channel
                    )
                    row = {
                        "model": name,
                        "seed": seed,
                        "variant": variant,
                        "per_channel": per_channel,
                        **_measure(flat, split, loss),
                    }
                    print(row, flush=True)
                    rows.append(row)
    return rows


def _summary(rows: list[dict]) -> list[dict]:
    table = []
    keys = list(dict.fromkeys((r["model"], r["variant"], r["per_channel"]) for r in rows))
    for model, variant, per_channel in keys:
        group = [
            r
            for r in rows
            if (r["model"], r["variant"], r["per_channel"]) == (model, variant, per_channel)
        ]
        ratios = [r["flash_ratio"] for r in group]
        table.append(
            {
                "model": model,
                "variant": variant,
                "per_channel": per_channel,
                "seeds": len(group),
                "int8_flash_bytes": int(np.mean([r["int8_flash_bytes"] for r in group])),
                "compressed_flash_bytes": int(
                    np.mean([r["compressed_flash_bytes"] for r in group])
                ),
                "flash_ratio_mean": round(float(np.mean(ratios)), 4),
                "flash_ratio_max": max(ratios),
                "arena_growth_bytes_max": max(
                    r["compressed_arena_bytes"] - r["int8_arena_bytes"] for r in group
                ),
                "tflm_identical_all": all(r["tflm_identical"] for r in group),
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits CNN, one seed; no file")
    args = parser.parse_args()
    names = ["digits_cnn"] if args.quick else list(MODELS)
    seeds = SEEDS[:1] if args.quick else SEEDS
    started = time.perf_counter()
    rows = run(names, seeds)
    payload = {
        "models": {name: MODELS[name] for name in names},
        "settings": {
            "seeds": list(seeds),
            "clusters": list(CLUSTERS),
            "pruned_sparsity": SPARSITY,
            "float_epochs": FLOAT_EPOCHS,
            "fine_tune_epochs": FINE_TUNE_EPOCHS,
            "calibration_samples": CALIBRATION,
            "conversion": "tfc.convert(model, 'int8', x_train[:200], target='micro', per_channel=...)",
            "tflm": f"tflite-micro {tflm_version()}",
            "evaluated_on": "the held-out test split (never the calibration rows)",
        },
        "summary": _summary(rows),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.quick:
        print(payload["summary"])
        return
    write_results("micro_compress", payload)


if __name__ == "__main__":
    main()
