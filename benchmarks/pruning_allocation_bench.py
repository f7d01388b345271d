"""How to spread the pruned weights over the layers: each allocation against tfmot, on the zoo.

For every architecture of `zoo_models` and every seed, one float model is trained; then, from
those same float weights, with the same PolynomialDecay schedule (0 -> target over the first half
of the epochs), optimizer (Adam 1e-3), data and epochs, each `allocation` of
`tfc.prune_low_magnitude` and tfmot's `prune_low_magnitude` (on the `to_legacy` twin, in a
TF_USE_LEGACY_KERAS=1 subprocess) fine-tune it. Every result is stripped and converted to a
full-integer int8 file, run on LiteRT. Recorded per arch x method x sparsity x seed: Keras
accuracy of the stripped model, int8 LiteRT accuracy, and the overall sparsity reached over the
prunable kernels (Dense, Conv, DepthwiseConv, MultiHeadAttention kernels) of the stripped model
and over the int8 kernels of the file. tfmot leaves DepthwiseConv2D kernels dense, so its overall
sparsity is below the target on the depthwise-separable model; the tfcompress allocations all
reach the target overall sparsity.

Run: .venv/bin/python benchmarks/pruning_allocation_bench.py [--jobs N] [arch ...]
     (architectures run in N worker processes, 3 by default; the results are written to
     benchmarks/studies/2026-11-24/pruning_allocation.json each time an architecture is done;
     `--resummarize [name]` recomputes the summaries and verdicts of the saved runs of
     results/<name>.json for the current default allocation; `--order same` fine-tunes every
     method, tfmot included, on the same batches in the same order, so that the methods differ
     only in how they prune; each method's summary has its paired int8 gap to tfmot, seed by
     seed, in test examples, with a 95% t interval)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCHS = ("dwsep", "cnn2d_bn", "cnn1d", "mlp", "transformer", "resnet")
# --seeds / --sparsities / --allocations reach the worker processes through the environment
SEEDS = tuple(int(s) for s in os.environ.get("ALLOCATION_BENCH_SEEDS", "0,1,2").split(","))
SPARSITIES = tuple(
    float(s) for s in os.environ.get("ALLOCATION_BENCH_SPARSITIES", "0.5,0.8").split(",")
)
PRUNE_EPOCHS = 4
LEARNING_RATE = 1e-3
BATCH = 64
CALIBRATION = 200
KEYS = ("keras_accuracy", "int8_accuracy", "stripped_sparsity", "int8_sparsity")
# "same": every pruning fine-tune (both libraries) sees the same batches in the same order
# (epoch e of seed s: permutation from numpy seed 1000 * s + e, fit with shuffle=False), so the
# methods differ only in how they prune; "fit" (default): each library's own fit shuffling
ORDER = os.environ.get("ALLOCATION_BENCH_ORDER", "fit")


def prune_fit(model, split, seed: int, callbacks: list):
    """Fine-tune a pruned model for PRUNE_EPOCHS (Keras 3 or tf_keras) in the bench's ORDER."""
    import keras
    import numpy as np

    from tfcompress.examples import zoo as zoo_models

    if ORDER == "fit":
        return zoo_models.train(model, split, PRUNE_EPOCHS, seed, learning_rate=LEARNING_RATE,
                                batch_size=BATCH, callbacks=callbacks)  # fmt: skip
    module = keras if isinstance(model, keras.Model) else __import__("tf_keras")
    module.utils.set_random_seed(seed)
    model.compile(
        optimizer=module.optimizers.Adam(LEARNING_RATE),
        loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    for epoch in range(PRUNE_EPOCHS):
        order = np.random.default_rng(1000 * seed + epoch).permutation(len(split.x_train))
        model.fit(split.x_train[order], split.y_train[order], batch_size=BATCH, epochs=1,
                  shuffle=False, verbose=0, callbacks=callbacks)  # fmt: skip
    return model


def schedule_kwargs(sparsity: float, train_count: int) -> dict:
    """The same schedule for both libraries: reach the target after half the epochs."""
    steps = -(-train_count // BATCH)
    return {
        "initial_sparsity": 0.0,
        "final_sparsity": sparsity,
        "begin_step": 0,
        "end_step": steps * PRUNE_EPOCHS // 2,
        "frequency": 10,
    }


def kernel_sparsity_of_weights(variables) -> float:
    """Zeros over every `*kernel` variable (Keras 3 or tf_keras), biases and BN left out."""
    per_kernel = kernel_sparsities(variables)
    zeros = sum(zeros for zeros, _ in per_kernel.values())
    return zeros / sum(size for _, size in per_kernel.values())


def kernel_sparsities(variables) -> dict[str, tuple[int, int]]:
    """(zeros, size) of every `*kernel` variable, by name, in the model's order."""
    found = {}
    for variable in variables:
        name = (getattr(variable, "path", None) or variable.name).split(":")[0]
        if not name.split("/")[-1].endswith("kernel"):
            continue
        values = variable.numpy()
        found[name] = (int((values == 0).sum()), int(values.size))
    return found


def layer_sparsity(variables) -> list[float]:
    """Each kernel's sparsity, rounded, in the model's order (names differ between libraries)."""
    return [round(zeros / size, 4) for zeros, size in kernel_sparsities(variables).values()]


def int8_kernel_sparsity(flatbuffer: bytes) -> float:
    import numpy as np

    import tfcompress as tfc

    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None and t.buffer.dtype == np.int8 and len(t.shape) >= 2
    ]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


# -- tfmot side (legacy Keras 2, one subprocess per architecture) ------------------------------
def tfmot_worker(work: Path, arch: str) -> None:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from tfcompress.examples import zoo as zoo_models

    api = tfmot.sparsity.keras
    split = zoo_models.load(arch)
    calibration = np.load(work / "calibration.npy")
    rows = {}
    for seed in SEEDS:
        data = np.load(work / f"weights_{seed}.npz")
        weights = [data[f"w{i}"] for i in range(len(data.files))]
        for sparsity in SPARSITIES:
            model = zoo_models.build_legacy(arch, seed)
            model.set_weights(weights)
            schedule = api.PolynomialDecay(**schedule_kwargs(sparsity, len(split.x_train)))
            pruned = api.prune_low_magnitude(model, pruning_schedule=schedule)
            prune_fit(pruned, split, seed, [api.UpdatePruningStep()])
            final = api.strip_pruning(pruned)
            converter = tf.lite.TFLiteConverter.from_keras_model(final)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([s[None]] for s in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            (work / f"tfmot_{seed}_{sparsity}.tflite").write_bytes(converter.convert())
            rows[f"{seed}_{sparsity}"] = {
                "keras_accuracy": zoo_models.accuracy(final, split),
                "stripped_sparsity": kernel_sparsity_of_weights(final.weights),
                "kernel_sparsities": layer_sparsity(final.weights),
            }
    (work / "tfmot.json").write_text(json.dumps({"version": tfmot.__version__, "rows": rows}))


def start_tfmot(work: Path, arch: str) -> subprocess.Popen:
    """tfmot's runs of `arch`, in a subprocess that works while this process runs tfcompress's."""
    environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--tfmot-worker", str(work), arch]
    return subprocess.Popen(command, env=environment)


# -- tfcompress side (Keras 3) -----------------------------------------------------------------
def tfcompress_run(split, float_model, seed, sparsity, allocation, calibration) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.examples import zoo as zoo_models

    clone = keras.models.clone_model(float_model)
    clone.set_weights(float_model.get_weights())
    schedule = tfc.pruning.PolynomialDecay(**schedule_kwargs(sparsity, len(split.x_train)))
    pruned = tfc.prune_low_magnitude(clone, schedule=schedule, allocation=allocation)
    prune_fit(pruned, split, seed, [tfc.pruning.UpdatePruningStep()])
    final = tfc.strip_pruning(pruned)
    flatbuffer = tfc.convert(final, "int8", calibration)
    return {
        "keras_accuracy": zoo_models.accuracy(final, split),
        "int8_accuracy": tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test),
        "stripped_sparsity": kernel_sparsity_of_weights(final.weights),
        "kernel_sparsities": layer_sparsity(final.weights),
        "int8_sparsity": int8_kernel_sparsity(flatbuffer),
    }


def measure_arch(arch: str, output: Path) -> None:
    """Every run of `arch`; the rows so far are rewritten to `output` after each run."""
    import numpy as np

    import tfcompress as tfc
    from tfcompress.data import calibration_sample
    from tfcompress.examples import zoo as zoo_models
    from tfcompress.pruning.allocation import ALLOCATIONS

    chosen = os.environ.get("ALLOCATION_BENCH_ALLOCATIONS")
    if chosen:
        ALLOCATIONS = tuple(chosen.split(","))  # noqa: N806
    split = zoo_models.load(arch)
    calibration = calibration_sample(split.x_train, CALIBRATION)
    runs: dict = {method: {str(s): [] for s in SPARSITIES} for method in (*ALLOCATIONS, "tfmot")}
    floats: list = []
    record = {"float_keras_accuracy": floats, "test_examples": len(split.y_test), "runs": runs}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        np.save(work / "calibration.npy", calibration)
        models = {}
        for seed in SEEDS:
            model = zoo_models.train(zoo_models.build(arch, seed), split, zoo_models.EPOCHS[arch],
                                     seed)  # fmt: skip
            models[seed] = model
            floats.append(zoo_models.accuracy(model, split))
            arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
            np.savez(work / f"weights_{seed}.npz", **arrays)
        tfmot_process = start_tfmot(work, arch)

        def collect_tfmot() -> None:
            tfmot = json.loads((work / "tfmot.json").read_text())
            record["tfmot_version"] = tfmot["version"]
            for seed in SEEDS:
                for sparsity in SPARSITIES:
                    flatbuffer = (work / f"tfmot_{seed}_{sparsity}.tflite").read_bytes()
                    runs["tfmot"][str(sparsity)].append({
                        "seed": seed,
                        **tfmot["rows"][f"{seed}_{sparsity}"],
                        "int8_accuracy": tfc.evaluate_tflite(flatbuffer, split.x_test,
                                                             split.y_test),
                        "int8_sparsity": int8_kernel_sparsity(flatbuffer),
                    })  # fmt: skip

        for seed in SEEDS:
            for sparsity in SPARSITIES:
                for method in ALLOCATIONS:
                    row = tfcompress_run(split, models[seed], seed, sparsity, method, calibration)
                    runs[method][str(sparsity)].append({"seed": seed, **row})
                    if "tfmot_version" not in record and tfmot_process.poll() is not None:
                        if tfmot_process.returncode != 0:
                            raise RuntimeError(f"the tfmot worker of {arch} failed")
                        collect_tfmot()
                    output.write_text(json.dumps(record))
        if "tfmot_version" not in record:
            if tfmot_process.wait() != 0:
                raise RuntimeError(f"the tfmot worker of {arch} failed")
            collect_tfmot()
    output.write_text(json.dumps({**record, "complete": True}))


def summarize(arch_rows: dict) -> dict:
    """Mean of the seeds per method and sparsity, and each method's paired gap to tfmot."""
    import statistics

    summary = {}
    for method, by_sparsity in arch_rows["runs"].items():
        summary[method] = {
            sparsity: {
                "seeds": len(rows),
                **{key: round(statistics.mean(r[key] for r in rows), 4) for key in KEYS},
                **paired_gap(
                    rows,
                    arch_rows["runs"].get("tfmot", {}).get(sparsity, []),
                    arch_rows.get("test_examples"),
                ),
            }
            for sparsity, rows in by_sparsity.items()
            if rows
        }
    return summary


def paired_gap(rows: list, tfmot_rows: list, test_examples: int | None) -> dict:
    """Mean int8 accuracy minus tfmot's, seed by seed, with a 95% t interval (>= 3 seeds).

    In test examples (digits) when their count is known, else in accuracy; absent for tfmot.
    """
    import statistics

    from scipy import stats

    theirs = {r["seed"]: r["int8_accuracy"] for r in tfmot_rows}
    gaps = [r["int8_accuracy"] - theirs[r["seed"]] for r in rows if r["seed"] in theirs]
    if rows is tfmot_rows or len(gaps) < 3:
        return {}
    unit, factor = ("digits", test_examples) if test_examples else ("accuracy", 1)
    gaps = [g * factor for g in gaps]
    mean, half = statistics.mean(gaps), 0.0
    if len(set(gaps)) > 1:
        half = stats.t.ppf(0.975, len(gaps) - 1) * statistics.stdev(gaps) / len(gaps) ** 0.5
    return {
        f"int8_gap_to_tfmot_{unit}": round(mean, 3),
        f"int8_gap_to_tfmot_{unit}_ci95": [round(mean - half, 3), round(mean + half, 3)],
        "int8_gap_seeds": len(gaps),
    }


def verdict(summaries: dict, default: str) -> dict:
    """Whether the default is at least as accurate as tfmot (mean of the seeds) everywhere."""
    checks = {}
    for arch, summary in summaries.items():
        for sparsity in map(str, SPARSITIES):
            if sparsity not in summary.get(default, {}) or sparsity not in summary["tfmot"]:
                continue
            ours, theirs = summary[default][sparsity], summary["tfmot"][sparsity]
            for key in ("keras_accuracy", "int8_accuracy"):
                checks[f"{arch}_{sparsity}_{key}_ge_tfmot"] = ours[key] >= theirs[key]
    return checks


def arch_worker(arch: str, output: Path) -> None:
    """Measure one architecture in a fresh process and write its rows to `output`."""
    measure_arch(arch, output)


def run_archs(archs: list[str], jobs: int, work: Path):
    """Yield `(arch, rows)` as the architectures finish, `jobs` worker processes at a time."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment.pop("TF_USE_LEGACY_KERAS", None)
    pending, running = list(archs), {}
    while pending or running:
        while pending and len(running) < jobs:
            arch = pending.pop(0)
            command = [sys.executable, __file__, "--arch-worker", arch, str(work / f"{arch}.json")]
            running[arch] = subprocess.Popen(command, env=environment)
        time.sleep(2)
        for arch, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[arch]
            path = work / f"{arch}.json"
            if process.returncode != 0:  # a worker stopped early: keep what it measured
                print(f"the {arch} worker stopped with exit code {process.returncode}", flush=True)
                if not path.exists():
                    continue
            yield arch, json.loads(path.read_text())


def main(archs: list[str], jobs: int) -> None:
    from _common import write_results

    from tfcompress.pruning.allocation import DEFAULT_ALLOCATION

    results, summaries = {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        finished = run_archs(archs, jobs, Path(directory))
        for arch, rows in finished:
            results[arch] = rows
            summaries[arch] = summarize(rows)
            print(json.dumps({arch: summaries[arch]}), flush=True)
            write_partial(write_results, results, summaries, DEFAULT_ALLOCATION, start, archs)


def resummarize(name: str = "pruning_allocation") -> None:
    """Recompute the summaries and verdicts of the saved runs of results/<name>.json for the
    current default (its settings are kept)."""
    from _common import RESULTS, write_results

    from tfcompress.examples import zoo as zoo_models
    from tfcompress.pruning.allocation import DEFAULT_ALLOCATION

    saved = json.loads((RESULTS / f"{name}.json").read_text())
    os.environ["ALLOCATION_BENCH_NAME"] = name
    results = saved["runs"]
    for arch, rows in results.items():  # files written before the count was recorded
        rows.setdefault("test_examples", len(zoo_models.load(arch).y_test))
    summaries = {arch: summarize(rows) for arch, rows in results.items()}
    start = time.perf_counter() - saved["seconds"]
    write_partial(write_results, results, summaries, DEFAULT_ALLOCATION, start,
                  saved["architectures_requested"], measured_by=saved["command"],
                  settings=saved["settings"])  # fmt: skip


def write_partial(
    write_results,
    results,
    summaries,
    default,
    start,
    archs,
    measured_by: str | None = None,
    settings: dict | None = None,
) -> None:
    """Write what is measured so far (called each time an architecture is done)."""
    write_results(os.environ.get("ALLOCATION_BENCH_NAME", "pruning_allocation"), {
        "settings": settings or {
            "seeds": list(SEEDS), "sparsities": list(SPARSITIES),
            "prune_epochs": PRUNE_EPOCHS, "learning_rate": LEARNING_RATE, "batch": BATCH,
            "schedule": "PolynomialDecay 0 -> target over half the epochs, frequency 10",
            "batch_order": os.environ.get("ALLOCATION_BENCH_ORDER", "fit"),
            "sparsity_measured_over": "kernels of Dense/Conv/DepthwiseConv/MHA layers "
            "(stripped model) and int8 tensors of rank >= 2 (int8 file)",
        },
        "measured_by": measured_by or " ".join(sys.argv),
        "default_allocation": default,
        "architectures_requested": archs,
        "seconds": round(time.perf_counter() - start),
        "summary_mean_of_seeds": summaries,
        "default_at_least_as_accurate_as_tfmot": verdict(summaries, default),
        "each_allocation_at_least_as_accurate_as_tfmot_everywhere": {
            method: all(verdict(summaries, method).values())
            for method in next(iter(summaries.values()))
            if method != "tfmot"
        },
        "runs": results,
    })  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--tfmot-worker":
        tfmot_worker(Path(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["--resummarize"] and len(sys.argv) <= 3:
        resummarize(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "--arch-worker":
        arch_worker(sys.argv[2], Path(sys.argv[3]))
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("archs", nargs="*", default=list(ARCHS))
        parser.add_argument("--jobs", type=int, default=3)
        parser.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
        parser.add_argument("--sparsities", help="comma-separated (default 0.5,0.8)")
        parser.add_argument("--allocations", help="comma-separated (default: all)")
        parser.add_argument("--name", help="results/<name>.json (default pruning_allocation)")
        parser.add_argument("--order", choices=("fit", "same"),
                            help="'same': every method fine-tunes on identical batches (default "
                            "'fit': each library's own shuffling)")  # fmt: skip
        arguments = parser.parse_args()
        for flag, variable in (("seeds", "SEEDS"), ("sparsities", "SPARSITIES"),
                               ("allocations", "ALLOCATIONS"), ("name", "NAME"), ("order", "ORDER")):  # fmt: skip
            if getattr(arguments, flag):
                os.environ[f"ALLOCATION_BENCH_{variable}"] = getattr(arguments, flag)
        SEEDS = tuple(int(s) for s in os.environ.get("ALLOCATION_BENCH_SEEDS", "0,1,2").split(","))
        SPARSITIES = tuple(
            float(s) for s in os.environ.get("ALLOCATION_BENCH_SPARSITIES", "0.5,0.8").split(",")
        )
        main(arguments.archs, arguments.jobs)
