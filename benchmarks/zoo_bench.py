"""Model-zoo accuracy benchmark (issue 10, item 6): every technique on every zoo architecture,
side by side with tfmot in one run.

For each architecture of `benchmarks/zoo_models.py` and each seed (init and data order), one float
model is trained; both libraries start from it (tfmot's side gets its tf_keras twin, same weights):

- float: Keras accuracy and the float32 .tflite accuracy;
- PTQ int8: `tfc.convert(model, "int8", x_train[:200])` against the plain TFLiteConverter
  full-integer conversion a tfmot user runs;
- QAT int8: quantize, fine-tune, convert (Keras-vs-TFLite top-1 agreement too);
- pruning to 50% and 80% (PolynomialDecay from 0 over the fine-tune), strip, int8 (sparsity
  measured in the int8 file);
- 16-cluster weight clustering, fine-tune, strip, int8 with per-tensor scales (unique values per
  kernel in the file);
- distillation into the small student with `tfc.Distiller`'s default `compile()` (tfmot has no
  distiller: tf_keras runs a keras.io-style distiller with the same defaults), against the same
  student trained alone; float32 and int8 student files.

Every accuracy is measured on the LiteRT interpreter. A failure on either side is recorded as
`{"error": "<first line>"}` and the run goes on. tfmot only runs on legacy Keras 2, so its half
runs in one subprocess per architecture with TF_USE_LEGACY_KERAS=1.

Run: .venv/bin/python benchmarks/zoo_bench.py [--quick] [--archs mlp,gru] [--seeds 0,1,2]
(writes benchmarks/results/zoo.json)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SEEDS = (0, 1, 2)
FINE_TUNE_EPOCHS = 5
QUICK_ARCHS = ("mlp", "cnn2d_bn")
BATCH = 64
FINE_TUNE_LR = 1e-3
CALIBRATION = 200
SPARSITIES = (0.5, 0.8)
CLUSTERS = 16
# distill and student_scratch rows (both arms, both libraries): the students train to their
# plateau. In the float epochs at Adam 1e-3 they stopped half-way (mlp student 0.888, 0.974 here),
# which measures how fast a student learns, not how good it ends (distill_defaults_converged.json)
STUDENT_EPOCHS = 60
STUDENT_LR = 3e-3
SPE = 32  # steps_per_execution of the student fits: the same training, ~3x faster on tiny nets
TOLERANCE = 0.005  # 0.5 percentage point
# rows compared with tfmot's in the checks, and the accuracy that stands for each
COMPARED = ("qat_int8", "prune_50", "prune_80", "cluster_16")
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


# -- shared by both sides: measuring a flatbuffer ------------------------------------------------
def first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0].strip() if lines else ''}"[:300]


def attempt(label: str, function: Callable[[], dict]) -> dict:
    """Run one row; a failure becomes `{"error": ...}` so the rest of the run goes on."""
    start = time.perf_counter()
    try:
        row = function()
    except Exception as error:  # noqa: BLE001 - every failure is a result to record
        row = {"error": first_line(error)}
    row["seconds"] = round(time.perf_counter() - start, 1)
    outcome = row.get("error") or f"{headline(row, label.rsplit('/', 1)[-1])}"
    print(f"[zoo] {label}: {outcome} ({row['seconds']} s)", file=sys.stderr, flush=True)
    return row


def file_row(flatbuffer: bytes, split) -> dict:
    import tfcompress as tfc

    return {
        "accuracy": tfc.evaluate_tflite(flatbuffer, split.x_test, split.y_test),
        "bytes": len(flatbuffer),
        "float_ops": tfc.inspect(flatbuffer).float_ops,
    }


def agreement(flatbuffer: bytes, keras_logits, x) -> float:
    import numpy as np

    from tfcompress.tflite.runtime import run_tflite

    outputs = run_tflite(flatbuffer, x)
    return float(np.mean(np.asarray(outputs).argmax(-1) == np.asarray(keras_logits).argmax(-1)))


def kernel_sparsity(flatbuffer: bytes) -> float | None:
    """Share of zeros in the int8 constant tensors of rank >= 2 (the kernels) of the file."""
    import numpy as np

    import tfcompress as tfc

    kernels = [
        t.buffer
        for t in tfc.inspect(flatbuffer).tensors
        if t.buffer is not None and t.buffer.dtype == np.int8 and len(t.shape) >= 2
    ]
    if not kernels:
        return None
    return float(sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels))


def max_unique_per_kernel(flatbuffer: bytes) -> int | None:
    """Most distinct values in one weight input of a conv / fully-connected op of the file."""
    import numpy as np

    import tfcompress as tfc

    report = tfc.inspect(flatbuffer)
    counts = [
        len(np.unique(report.tensors[op.inputs[1]].buffer))
        for op in report.ops
        if op.name in WEIGHT_OPS
        and len(op.inputs) > 1
        and op.inputs[1] >= 0
        and report.tensors[op.inputs[1]].buffer is not None
    ]
    return max(counts) if counts else None


def keras_accuracy(model, split) -> float:
    import numpy as np

    logits = model.predict(split.x_test, verbose=0, batch_size=256)
    return float(np.mean(np.asarray(logits).argmax(-1) == split.y_test))


def prune_schedule(train_count: int, epochs: int) -> dict:
    """PolynomialDecay 0 -> target over the first 2/3 of the fine-tune, ~30 mask updates."""
    total = max(1, epochs * -(-train_count // BATCH))
    frequency = max(1, total // 30)
    end = max(frequency, frequency * ((2 * total) // (3 * frequency)))
    return {"initial_sparsity": 0.0, "begin_step": 0, "end_step": end, "frequency": frequency}


# -- tfcompress side (Keras 3, this process) -----------------------------------------------------
def ours_seed(arch: str, seed: int, split, settings: dict, work: Path) -> dict:
    import keras

    import tfcompress as tfc
    from tfcompress.examples import zoo
    from tfcompress.models import compile_classifier

    calibration = split.x_train[:CALIBRATION]
    epochs, tune = settings["float_epochs"][arch], settings["fine_tune_epochs"]
    student_epochs = settings.get("student_epochs", STUDENT_EPOCHS)
    keras.utils.clear_session()

    def fine_tune(model, callbacks=()):
        keras.utils.set_random_seed(seed)
        compile_classifier(model, FINE_TUNE_LR)
        model.fit(zoo.batches(split, seed, BATCH), epochs=tune, verbose=0,
                  callbacks=list(callbacks))  # fmt: skip
        return model

    def fresh_copy():
        clone = keras.models.clone_model(float_model)
        clone.set_weights(float_model.get_weights())
        return clone

    float_model = zoo.build(arch, seed)
    float_model = zoo.train(float_model, split, epochs, seed) or float_model
    float_model.save(work / f"float_{arch}_{seed}.keras")

    def float_row() -> dict:
        return {
            "keras_accuracy": keras_accuracy(float_model, split),
            "float32": file_row(tfc.convert(float_model, "float32"), split),
        }

    def ptq_row() -> dict:
        return file_row(tfc.convert(float_model, "int8", calibration), split)

    def qat_row() -> dict:
        qat = fine_tune(tfc.quantize_model(fresh_copy()))
        flatbuffer = tfc.convert(qat, "int8", calibration)
        logits = qat.predict(split.x_test, verbose=0, batch_size=256)
        return {
            **file_row(flatbuffer, split),
            "keras_accuracy": keras_accuracy(qat, split),
            "keras_vs_tflite_top1_agreement": agreement(flatbuffer, logits, split.x_test),
        }

    def prune_row(sparsity: float) -> dict:
        schedule = tfc.pruning.PolynomialDecay(
            final_sparsity=sparsity, **prune_schedule(len(split.x_train), tune)
        )
        pruned = fine_tune(
            tfc.prune_low_magnitude(fresh_copy(), schedule=schedule),
            [tfc.pruning.UpdatePruningStep()],
        )
        flatbuffer = tfc.convert(tfc.strip_pruning(pruned), "int8", calibration)
        return {**file_row(flatbuffer, split), "kernel_sparsity": kernel_sparsity(flatbuffer)}

    def cluster_row() -> dict:
        clustered = fine_tune(tfc.cluster_weights(fresh_copy(), number_of_clusters=CLUSTERS))
        stripped = tfc.strip_clustering(clustered)
        flatbuffer = tfc.convert(stripped, "int8", calibration, per_channel=False)
        return {
            **file_row(flatbuffer, split),
            "max_unique_values_per_kernel": max_unique_per_kernel(flatbuffer),
        }

    def student_files(student) -> dict:
        return {
            "keras_accuracy": keras_accuracy(student, split),
            "float32": file_row(tfc.convert(student, "float32"), split),
            "int8": file_row(tfc.convert(student, "int8", calibration), split),
            "params": int(student.count_params()),
        }

    def distill_row() -> dict:
        keras.utils.set_random_seed(seed)
        student = zoo.build(arch, seed, small=True)
        distiller = tfc.Distiller(teacher=float_model, student=student)
        # the default alpha, temperature and loss are what we measure
        distiller.compile(optimizer=keras.optimizers.Adam(STUDENT_LR), steps_per_execution=SPE)
        distiller.fit(zoo.batches(split, seed, BATCH), epochs=student_epochs,
                      verbose=0)  # fmt: skip
        return student_files(distiller.student)

    def scratch_row() -> dict:
        keras.utils.set_random_seed(seed)
        student = zoo.build(arch, seed, small=True)
        student.compile(  # what the distiller trains with, without the teacher
            optimizer=keras.optimizers.Adam(STUDENT_LR),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=SPE,
        )
        student.fit(zoo.batches(split, seed, BATCH), epochs=student_epochs,
                    verbose=0)  # fmt: skip
        return student_files(student)

    rows = {
        "float": float_row,
        "ptq_int8": ptq_row,
        "qat_int8": qat_row,
        **{f"prune_{int(s * 100)}": lambda s=s: prune_row(s) for s in SPARSITIES},
        f"cluster_{CLUSTERS}": cluster_row,
        "distill": distill_row,
        "student_scratch": scratch_row,
    }
    rows = selected(rows, settings)
    return run_rows(f"tfcompress/{arch}/{seed}", rows, work / f"tfcompress_{arch}_{seed}.json")


# -- tfmot side (legacy Keras 2, subprocess) -----------------------------------------------------
def legacy_int8(model, calibration, per_channel: bool = True) -> bytes:
    """What a tfmot user runs: the plain TFLiteConverter, full integer with int8 I/O."""
    import tensorflow as tf

    def representative():
        for sample in calibration:
            yield [sample[None].astype("float32")]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if not per_channel:  # per-tensor scales keep a clustered kernel's shared values shared
        converter._experimental_disable_per_channel = True
    return converter.convert()


def legacy_float32(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def legacy_distiller_class(tf_keras):
    """A keras.io-style distiller on tf_keras (tfmot has none), with tfc.Distiller's defaults."""
    import tensorflow as tf

    class LegacyDistiller(tf_keras.Model):
        def __init__(self, teacher, student):
            super().__init__()
            self.teacher, self.student = teacher, student
            self.teacher.trainable = False

        def compile(self, optimizer="adam", alpha=0.1, temperature=3.0, **kwargs):
            super().compile(optimizer=optimizer, **kwargs)
            self.alpha, self.temperature = alpha, temperature
            self.hard_loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.soft_loss = tf_keras.losses.KLDivergence()

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def train_step(self, data):
            x, y = data
            soft_targets = tf.nn.softmax(self.teacher(x, training=False) / self.temperature)
            with tf.GradientTape() as tape:
                logits = self.student(x, training=True)
                soft = self.soft_loss(soft_targets, tf.nn.softmax(logits / self.temperature))
                # T^2 keeps the soft-target gradients on the scale of the hard-label ones
                loss = self.alpha * self.hard_loss(y, logits) + (1 - self.alpha) * soft * (
                    self.temperature**2
                )
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables, strict=True)
            )
            return {"loss": loss}

    return LegacyDistiller


def tfmot_seed(arch: str, seed: int, split, settings: dict, work: Path) -> dict:
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tfcompress.examples import zoo

    calibration = split.x_train[:CALIBRATION]
    tune = settings["fine_tune_epochs"]
    student_epochs = settings.get("student_epochs", STUDENT_EPOCHS)
    tf_keras.backend.clear_session()

    def compile_(model, learning_rate=FINE_TUNE_LR):
        model.compile(
            tf_keras.optimizers.Adam(learning_rate),
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def fine_tune(model, callbacks=()):
        tf_keras.utils.set_random_seed(seed)
        compile_(model)
        model.fit(zoo.batches(split, seed, BATCH), epochs=tune, verbose=0,
                  callbacks=list(callbacks))  # fmt: skip
        return model

    source = keras.saving.load_model(work / f"float_{arch}_{seed}.keras")
    twin = zoo.to_legacy(source, arch)

    def fresh_copy():
        clone = tf_keras.models.clone_model(twin)
        clone.set_weights(twin.get_weights())
        return clone

    def float_row() -> dict:
        return {
            "keras_accuracy": keras_accuracy(twin, split),
            "float32": file_row(legacy_float32(twin), split),
        }

    def ptq_row() -> dict:
        return file_row(legacy_int8(twin, calibration), split)

    def qat_row() -> dict:
        qat = fine_tune(tfmot.quantization.keras.quantize_model(fresh_copy()))
        flatbuffer = legacy_int8(qat, calibration)
        logits = qat.predict(split.x_test, verbose=0, batch_size=256)
        return {
            **file_row(flatbuffer, split),
            "keras_accuracy": keras_accuracy(qat, split),
            "keras_vs_tflite_top1_agreement": agreement(flatbuffer, logits, split.x_test),
        }

    def prune_row(sparsity: float) -> dict:
        api = tfmot.sparsity.keras
        schedule = api.PolynomialDecay(
            final_sparsity=sparsity, **prune_schedule(len(split.x_train), tune)
        )
        pruned = fine_tune(
            api.prune_low_magnitude(fresh_copy(), pruning_schedule=schedule),
            [api.UpdatePruningStep()],
        )
        flatbuffer = legacy_int8(api.strip_pruning(pruned), calibration)
        return {**file_row(flatbuffer, split), "kernel_sparsity": kernel_sparsity(flatbuffer)}

    def cluster_row() -> dict:
        api = tfmot.clustering.keras
        clustered = api.cluster_weights(
            fresh_copy(),
            number_of_clusters=CLUSTERS,
            cluster_centroids_init=api.CentroidInitialization.KMEANS_PLUS_PLUS,
        )
        stripped = api.strip_clustering(fine_tune(clustered))
        flatbuffer = legacy_int8(stripped, calibration, per_channel=False)
        return {
            **file_row(flatbuffer, split),
            "max_unique_values_per_kernel": max_unique_per_kernel(flatbuffer),
        }

    def student_files(student) -> dict:
        return {
            "keras_accuracy": keras_accuracy(student, split),
            "float32": file_row(legacy_float32(student), split),
            "int8": file_row(legacy_int8(student, calibration), split),
            "params": int(student.count_params()),
        }

    def distill_row() -> dict:
        tf_keras.utils.set_random_seed(seed)
        student = zoo.build_legacy(arch, seed, small=True)
        distiller = legacy_distiller_class(tf_keras)(twin, student)
        distiller.compile(optimizer=tf_keras.optimizers.Adam(STUDENT_LR), steps_per_execution=SPE)
        distiller.fit(zoo.batches(split, seed, BATCH), epochs=student_epochs,
                      verbose=0)  # fmt: skip
        return {"recipe": "keras.io-style Distiller on tf_keras", **student_files(student)}

    def scratch_row() -> dict:
        tf_keras.utils.set_random_seed(seed)
        student = zoo.build_legacy(arch, seed, small=True)
        student.compile(
            optimizer=tf_keras.optimizers.Adam(STUDENT_LR),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=SPE,
        )
        student.fit(zoo.batches(split, seed, BATCH), epochs=student_epochs,
                    verbose=0)  # fmt: skip
        return student_files(student)

    rows = {
        "float": float_row,
        "ptq_int8": ptq_row,
        "qat_int8": qat_row,
        **{f"prune_{int(s * 100)}": lambda s=s: prune_row(s) for s in SPARSITIES},
        f"cluster_{CLUSTERS}": cluster_row,
        "distill": distill_row,
        "student_scratch": scratch_row,
    }
    rows = selected(rows, settings)
    return run_rows(f"tfmot/{arch}/{seed}", rows, work / f"tfmot_{arch}_{seed}.json")


def selected(rows: dict[str, Callable[[], dict]], settings: dict) -> dict:
    """The rows `--rows` asks for (all of them by default)."""
    wanted = settings.get("rows")
    return rows if not wanted else {k: v for k, v in rows.items() if k in wanted}


def run_rows(label: str, rows: dict[str, Callable[[], dict]], path: Path) -> dict:
    """Run the rows one by one, saving them after each, so a native crash loses one row only."""
    done: dict = {}
    for name, run in rows.items():
        done[name] = attempt(f"{label}/{name}", run)
        path.write_text(json.dumps(done))
    return done


def worker(side: str, arch: str, seeds: list[int], work: Path) -> None:
    """Entry point of a subprocess: the given seeds of one architecture for one library."""
    from tfcompress.examples import zoo

    settings = json.loads((work / "settings.json").read_text())
    split = zoo.load(arch)
    run_seed = ours_seed if side == "tfcompress" else tfmot_seed
    for seed in seeds:
        try:
            run_seed(arch, seed, split, settings, work)
        except Exception as error:  # noqa: BLE001 - e.g. no float model: the other seeds run
            path = work / f"{side}_{arch}_{seed}.json"
            path.write_text(json.dumps({"float": {"error": first_line(error)}}))


def run_side(
    side: str, arch: str, seeds: list[int], work: Path, techniques: tuple[str, ...] = ()
) -> dict[int, dict]:
    """Run one library's seeds in fresh processes (tfmot's with TF_USE_LEGACY_KERAS=1).

    A crash inside TensorFlow (a segmentation fault, a double free) ends the process: the rows
    that seed had not reached are recorded with the crash's last line and a new process runs
    the seeds left.
    """
    techniques = techniques or TECHNIQUES
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    if arch == "resnet":  # TF 2.21's oneDNN kernels corrupt the heap training it (a double free)
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if side == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    rows: dict[int, dict] = {}
    remaining = list(seeds)
    while remaining:
        command = [sys.executable, __file__, "--worker", side, arch, str(work)]
        process = subprocess.Popen([*command, ",".join(map(str, remaining))], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        tail: list[str] = []
        for line in process.stderr:  # relay the progress lines, keep the end for a crash
            if line.startswith("[zoo]"):
                print(line, end="", file=sys.stderr, flush=True)
            elif line.strip():
                tail = [*tail[-19:], line.strip()]
        code = process.wait()
        crash = (tail[-1] if tail else "") + f" (process exit code {code})"
        for index, seed in enumerate(remaining):
            path = work / f"{side}_{arch}_{seed}.json"
            row = json.loads(path.read_text()) if path.exists() else {}
            complete = all(t in row for t in techniques) or (row.get("float", {}).get("error")
                                                              and len(row) == 1)  # fmt: skip
            if complete:
                rows[seed] = row
                continue
            rows[seed] = {**{t: {"error": crash[:300]} for t in techniques}, **row}
            remaining = remaining[index + 1 :]
            break
        else:
            remaining = []
    return rows


# -- summary -------------------------------------------------------------------------------------
def headline(row: dict | None, technique: str) -> float | None:
    """The LiteRT accuracy that stands for one row (None if the row failed)."""
    if not row or "error" in row:
        return None
    if technique == "float":
        return row["float32"]["accuracy"]
    if technique in ("distill", "student_scratch"):
        return row["int8"]["accuracy"]
    return row.get("accuracy")


def mean_or_none(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.mean(values)


TECHNIQUES = (
    "float",
    "ptq_int8",
    "qat_int8",
    "prune_50",
    "prune_80",
    f"cluster_{CLUSTERS}",
    "distill",
    "student_scratch",
)


def summarize(architectures: dict) -> dict:
    table: dict = {}
    failures: list[str] = []
    qat_checks: dict = {}
    peer_checks: dict = {}
    for arch, result in architectures.items():
        seeds = result["seeds"]
        table[arch] = {}
        measured = {t for s in seeds.values() for side in s.values() for t in side}
        for technique in (t for t in TECHNIQUES if t in measured):
            ours = [headline(s["tfcompress"].get(technique), technique) for s in seeds.values()]
            theirs = [headline(s["tfmot"].get(technique), technique) for s in seeds.values()]
            table[arch][technique] = {
                "tfcompress": mean_or_none(ours),
                "tfmot": mean_or_none(theirs),
            }
            for side, values in (("tfcompress", ours), ("tfmot", theirs)):
                if any(v is None for v in values):
                    failures.append(f"{arch}/{technique}/{side}")
        float_mean = mean_or_none(
            [s["tfcompress"]["float"].get("keras_accuracy") for s in seeds.values()]
        )
        if "qat_int8" in table[arch]:
            qat_mean = table[arch]["qat_int8"]["tfcompress"]
            qat_checks[arch] = (
                qat_mean is not None
                and float_mean is not None
                and qat_mean >= float_mean - TOLERANCE
            )
        for technique in (t for t in COMPARED if t in table[arch]):
            mine, peer = table[arch][technique]["tfcompress"], table[arch][technique]["tfmot"]
            # tfmot failing where we succeed counts as a pass; our failure never does
            peer_checks[f"{arch}/{technique}"] = mine is not None and (
                peer is None or mine >= peer - TOLERANCE
            )
    return {
        "mean_litert_accuracy": table,
        "checks": {
            "qat_int8_ge_float_minus_0_5pp": qat_checks,
            "ge_tfmot_minus_0_5pp": peer_checks,
            "all_qat_ge_float_minus_0_5pp": all(qat_checks.values()),
            "all_ge_tfmot_minus_0_5pp": all(peer_checks.values()),
            "failing_rows": [f"{k}/qat_int8 vs float" for k, v in qat_checks.items() if not v]
            + [f"{k} vs tfmot" for k, v in peer_checks.items() if not v],
        },
        "failed_rows": failures,
    }


def print_summary(summary: dict) -> None:
    table = summary["mean_litert_accuracy"]
    print("\nmean LiteRT accuracy (tfcompress / tfmot):", file=sys.stderr)
    for arch, rows in table.items():
        cells = [
            f"{technique} {fmt(v['tfcompress'])}/{fmt(v['tfmot'])}" for technique, v in rows.items()
        ]
        print(f"  {arch:12s} " + "  ".join(cells), file=sys.stderr)
    print(f"failing checks: {summary['checks']['failing_rows']}", file=sys.stderr)
    print(f"failed rows: {summary['failed_rows']}", file=sys.stderr)


def fmt(value: float | None) -> str:
    return "err" if value is None else f"{value:.3f}"


# -- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", help="comma-separated architectures (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument(
        "--epochs", type=int, help="float and student epochs (default: zoo_models.EPOCHS)"
    )
    parser.add_argument(
        "--fine-tune-epochs", type=int, help=f"QAT/pruning/clustering epochs ({FINE_TUNE_EPOCHS})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 2 archs, minimal epochs"
    )
    parser.add_argument("--name", default="zoo", help="results/<name>.json (default: zoo)")
    parser.add_argument(
        "--rows",
        nargs="*",
        choices=TECHNIQUES,
        help="only these rows (the float row is always kept; default: all)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    import tempfile

    import tfcompress
    from tfcompress.examples import zoo

    args = parse_args(argv)
    archs = tuple(args.archs.split(",")) if args.archs else zoo.ARCHITECTURES
    if args.quick and not args.archs:
        archs = QUICK_ARCHS
    unknown = [a for a in archs if a not in zoo.ARCHITECTURES]
    if unknown:
        raise SystemExit(f"--archs: unknown {unknown}; choose from {', '.join(zoo.ARCHITECTURES)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS)
    if args.quick and not args.seeds:
        seeds = seeds[:1]
    settings = {
        "archs": list(archs),
        "seeds": seeds,
        # each architecture's own float epochs (zoo_models.EPOCHS) unless --epochs says otherwise
        "float_epochs": {
            arch: args.epochs or (2 if args.quick else getattr(zoo, "EPOCHS", {}).get(arch, 15))
            for arch in archs
        },
        "fine_tune_epochs": args.fine_tune_epochs or (1 if args.quick else FINE_TUNE_EPOCHS),
        "batch": BATCH,
        "fine_tune_optimizer": f"Adam({FINE_TUNE_LR})",
        "calibration_samples": CALIBRATION,
        "prune_schedule": "PolynomialDecay 0 -> target over the first 2/3 of the fine-tune",
        "clusters": CLUSTERS,
        "distillation": "tfc.Distiller default compile() (alpha 0.5, T 1, LogitsKL) vs the student "
        "alone, both Adam(STUDENT_LR) for student_epochs (to their plateau); tfmot side: "
        "keras.io-style distiller on tf_keras (alpha 0.1, T 3), same schedule",
        "student_epochs": 2 if args.quick else STUDENT_EPOCHS,
        "student_optimizer": f"Adam({STUDENT_LR})",
        "quick": args.quick,
        "rows": ["float", *[r for r in args.rows if r != "float"]] if args.rows else None,
        "name": args.name,
        "tfcompress_from": str(Path(tfcompress.__file__).parent),
    }
    start = time.perf_counter()
    architectures: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "settings.json").write_text(json.dumps(settings))
        for arch in archs:
            arch_start = time.perf_counter()
            techniques = tuple(settings["rows"] or TECHNIQUES)
            ours = run_side("tfcompress", arch, seeds, work, techniques)
            theirs = run_side("tfmot", arch, seeds, work, techniques)
            architectures[arch] = {
                "seeds": {
                    str(seed): {"tfcompress": ours[seed], "tfmot": theirs[seed]} for seed in seeds
                },
                "seconds": round(time.perf_counter() - arch_start, 1),
            }
            print(f"{arch}: {architectures[arch]['seconds']} s", file=sys.stderr, flush=True)
            if len(architectures) < len(archs):  # a long run killed half-way still leaves figures
                save(settings, architectures, start, finished=False, quiet=True)
    print_summary(save(settings, architectures, start, finished=True))


def save(settings: dict, architectures: dict, start: float, finished: bool, quiet=False) -> dict:
    from _common import write_results

    summary = summarize(architectures)
    payload = {
        "settings": settings,
        "finished": finished,
        "seconds": round(time.perf_counter() - start, 1),
        **summary,
        "architectures": architectures,
    }
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            write_results(settings["name"], payload)
    else:
        write_results(settings["name"], payload)
    return summary


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(
            sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[5].split(",")], Path(sys.argv[4])
        )
    else:
        main(sys.argv[1:])
