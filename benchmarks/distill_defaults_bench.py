"""Do `Distiller.compile()`'s defaults do no harm? Issue 10, item 5, on scikit-learn's digits.

Six students (the tiny 4/8-filter digits CNN, an 8/16-filter one, an MLP, a 1-D conv over the
image rows as a sequence, and the tiny CNN made quantization-aware with `tfc.quantize_model` or
50%-pruned with `tfc.prune_low_magnitude`) learn from two teachers of other architectures (the
width-32 digits CNN and a wide MLP). Per student x seed, with the same initial weights, data order,
optimizer (`"adam"`, the `compile` default), batch size and epochs:

* `scratch`: the student trained alone on the labels;
* `defaults`: distilled with `Distiller.compile()` left at its default losses, alpha and
  temperature (read from the library, so the figures follow the code);
* `keras_io`: distilled with keras.io's arguments (SCCE, `keras.losses.KLDivergence()`,
  alpha=0.1, temperature=3).

`--grid` adds the candidate settings the defaults were chosen from (alpha x temperature, the
KL without its T**2 factor, MSE on logits) and writes `distill_defaults_grid.json`.

Run: .venv/bin/python benchmarks/distill_defaults_bench.py [--grid]
     (writes benchmarks/studies/2026-11-24/distill_defaults.json). On two cores, two processes over
     disjoint `--students ... --name part_a` / `part_b`, then `--merge <the two json files>`.

`--zoo [arch ...] --converged` measures the small students of `zoo_bench.py` trained to their
plateau (`CONVERGED`: Adam 3e-3, 60 epochs, batch 64, for both arms) and keeps the scratch arm's
test accuracy per epoch; distill_defaults_converged.json was merged from per-architecture parts:
     .venv/bin/python benchmarks/distill_defaults_bench.py --zoo mlp cnn1d transformer \
         --converged --no-keras-io --grid kl_a0.5_t4 --name dd_conv_p1_a   (and the other archs;
     resnet with TF_ENABLE_ONEDNN_OPTS=0: TF 2.21's oneDNN kernels corrupt the heap training it)
     .venv/bin/python benchmarks/distill_defaults_bench.py --merge <parts> \
         --name distill_defaults_converged

distill_defaults_converged2.json (the defaults' evidence): the same, with every fit on
`zoo_models.batches` (a new seeded order per epoch), teachers trained 60 epochs too, and the
"do no harm" candidates (alpha 0.9; `TeacherCorrectKL`; `anneal_steps`; both), from 3 parts:
     G="--grid kl_a0.9_t1 gated_a0.5_t1 anneal_a0.5_t1 gated_anneal_a0.5_t1"
     TF_NUM_INTRAOP_THREADS=1 .venv/bin/python benchmarks/distill_defaults_bench.py \
         --zoo gru transformer cnn1d mlp --converged --teacher-epochs 60 --no-keras-io $G \
         --name dd_conv2_a   (cnn2d_bn dwsep: dd_conv2_b; resnet: dd_conv2_c, both with
         TF_ENABLE_ONEDNN_OPTS=0), then --merge them --name distill_defaults_converged2
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SEEDS = (0, 1, 2)
EPOCHS, BATCH = 15, 32
TEACHER_EPOCHS = 20
KERAS_IO = {"alpha": 0.1, "temperature": 3}
#: None: the `compile` default `"adam"` (learning rate 1e-3); `--learning-rate` overrides it
LEARNING_RATE: float | None = None
#: `--converged`: a schedule in which every zoo student trained alone reaches its plateau (test
#: accuracy flat over the last 15 epochs, training accuracy >= 0.99), for both arms
CONVERGED = {"learning_rate": 3e-3, "epochs": 60, "batch_size": 64}
#: batches per `tf.function` call: identical training, ~3x less Python overhead on tiny models
STEPS_PER_EXECUTION = 1
#: optimizer steps of the student's whole fit (set by `_zoo_run`): the `anneal` candidates'
#: `anneal_steps`
TRAIN_STEPS = 0


def _optimizer() -> Any:
    import keras

    return "adam" if LEARNING_RATE is None else keras.optimizers.Adam(LEARNING_RATE)


def _compile_args() -> dict[str, Any]:
    return {"optimizer": _optimizer(), "steps_per_execution": STEPS_PER_EXECUTION}


# ----------------------------------------------------------------------------- models
def _tiny_cnn() -> Any:
    from tfcompress.models import build_digits_cnn

    return build_digits_cnn(width=4, name="student")


def _medium_cnn() -> Any:
    from tfcompress.models import build_digits_cnn

    return build_digits_cnn(width=8, name="student")


def _mlp(width: int, depth: int, name: str) -> Any:
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)


def _mlp_student() -> Any:
    return _mlp(16, 1, "student")


def _rows_conv1d() -> Any:
    """The image read as a sequence of 8 rows of 8 pixels, seen by a 1-D convolution."""
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Reshape((8, 8))(inputs)
    x = keras.layers.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="student")


def _tiny_cnn_qat() -> Any:
    import tfcompress as tfc

    return tfc.quantize_model(_tiny_cnn())


def _tiny_cnn_pruned() -> Any:
    import tfcompress as tfc

    # 50% of each kernel pruned from the first step, re-pruned every 20 steps
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=20)
    return tfc.prune_low_magnitude(_tiny_cnn(), schedule=schedule)


STUDENTS: dict[str, Callable[[], Any]] = {
    "cnn_tiny_4_8": _tiny_cnn,
    "cnn_medium_8_16": _medium_cnn,
    "mlp_16": _mlp_student,
    "rows_conv1d_16": _rows_conv1d,
    "cnn_tiny_4_8_qat": _tiny_cnn_qat,
    "cnn_tiny_4_8_pruned_50": _tiny_cnn_pruned,
}


def _teachers(split, names: list[str] | None = None) -> dict[str, Any]:
    import keras

    from tfcompress.models import build_digits_cnn, compile_classifier

    teachers = {}
    for name, build in {
        "cnn_32": lambda: build_digits_cnn(width=32, name="teacher"),
        "mlp_256x2": lambda: _mlp(256, 2, "teacher"),
    }.items():
        if names and name not in names:
            continue
        keras.utils.set_random_seed(0)
        model = compile_classifier(build())
        model.fit(split.x_train, split.y_train, epochs=TEACHER_EPOCHS, batch_size=BATCH, verbose=0)
        teachers[name] = model
    return teachers


# ----------------------------------------------------------------------------- recipes
def _compile_defaults(distiller) -> None:
    distiller.compile(**_compile_args())


def _compile_keras_io(distiller) -> None:
    import keras

    distiller.compile(
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        **_compile_args(),
        **KERAS_IO,
    )


def _candidate(alpha: float, temperature: float, kind: str = "kl") -> Callable[[Any], None]:
    def compile_candidate(distiller) -> None:
        from tfcompress.distillation import FeatureLoss, LogitsKL, NonTargetKL, TeacherCorrectKL

        loss = {
            "kl": lambda: LogitsKL(temperature),
            # the same KL without Hinton's T**2 factor: a weaker pull at high temperature
            "kl_no_t2": lambda: LogitsKL(temperature, weight=1.0 / temperature**2),
            "mse": lambda: FeatureLoss(None, name="logits_mse"),
            # the teacher's ranking of the wrong classes only (decoupled KD's non-target term)
            "ntkl": lambda: NonTargetKL(temperature),
            # the KL only on the examples the teacher gets right (the labels everywhere)
            "gated": lambda: TeacherCorrectKL(temperature),
            # the teacher's weight falls linearly to 0 over the fit (alpha -> 1)
            "anneal": lambda: LogitsKL(temperature),
        }[kind]()
        distiller.compile(
            **_compile_args(),
            distillation_loss_fn=loss,
            alpha=alpha,
            temperature=temperature,
            anneal_steps=TRAIN_STEPS if kind == "anneal" else None,
        )

    return compile_candidate


def _grid() -> dict[str, Callable[[Any], None]]:
    grid = {}
    for alpha in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95):
        for temperature in (1, 2, 4):
            grid[f"kl_a{alpha}_t{temperature}"] = _candidate(alpha, temperature)
    grid["kl_no_t2_a0.1_t3"] = _candidate(0.1, 3, "kl_no_t2")
    grid["mse_a0.5"] = _candidate(0.5, 1, "mse")
    for alpha in (0.3, 0.5):
        for temperature in (1, 2, 4):
            grid[f"ntkl_a{alpha}_t{temperature}"] = _candidate(alpha, temperature, "ntkl")
    for alpha in (0.5, 0.9):
        grid[f"gated_a{alpha}_t1"] = _candidate(alpha, 1, "gated")
        grid[f"anneal_a{alpha}_t1"] = _candidate(alpha, 1, "anneal")
    grid["gated_anneal_a0.5_t1"] = _candidate_gated_anneal(0.5)
    return grid


def _candidate_gated_anneal(alpha: float) -> Callable[[Any], None]:
    def compile_candidate(distiller) -> None:
        from tfcompress.distillation import TeacherCorrectKL

        distiller.compile(
            **_compile_args(),
            distillation_loss_fn=TeacherCorrectKL(1.0),
            alpha=alpha,
            anneal_steps=TRAIN_STEPS,
        )

    return compile_candidate


def _train_teacher(arch: str, split, epochs: int, seed: int) -> Any:
    """`zoo_models.train` (Adam 3e-3, batch 64, `zoo_models.batches`) with steps_per_execution."""
    import keras

    from tfcompress.examples import zoo

    model = zoo.build(arch, seed)
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    model.fit(zoo.batches(split, seed, 64), epochs=epochs, verbose=0)
    return model


# ----------------------------------------------------------------------------- the zoo
def _zoo_run(
    archs: list[str],
    recipes: dict[str, Callable[[Any], None]],
    save: Callable[[dict[str, Any]], None] = lambda students: None,
    converged: bool = False,
    teacher_epochs: int | None = None,
) -> dict[str, Any]:
    """Per zoo architecture x seed: its float model (zoo_bench's teacher) and its small student.

    Same protocol as `zoo_bench.py`'s `distill` and `student_scratch` rows: the student is built
    under the seed, trained for the architecture's float epochs with batch 64 and the `compile`
    defaults (Adam 1e-3), alone or distilled from the trained float model of the same seed.
    `converged=True`: both arms train for `CONVERGED["epochs"]` with Adam
    `CONVERGED["learning_rate"]` instead, and the scratch arm's test accuracy per epoch is kept.
    """
    import keras

    import tfcompress as tfc
    from tfcompress.examples import zoo

    global TRAIN_STEPS
    students: dict[str, Any] = {}
    batch = CONVERGED["batch_size"] if converged else 64
    for arch in archs:
        split = zoo.load(arch)
        epochs = CONVERGED["epochs"] if converged else zoo.EPOCHS[arch]
        TRAIN_STEPS = epochs * -(-len(split.y_train) // batch)
        row: dict[str, Any] = {"params": zoo.build(arch, 0, small=True).count_params()}
        row["scratch"], row["teacher"] = [], []
        curves: list[list[float]] = []
        runs: dict[str, list[float]] = {name: [] for name in recipes}
        for seed in SEEDS:
            keras.utils.clear_session()
            teacher = _train_teacher(arch, split, teacher_epochs or zoo.EPOCHS[arch], seed)
            row["teacher"].append(zoo.accuracy(teacher, split))
            train_split = type(split)(split.x_train, split.y_train, split.x_train, split.y_train)
            row.setdefault("teacher_train_accuracy", []).append(zoo.accuracy(teacher, train_split))
            keras.utils.set_random_seed(seed)
            student = zoo.build(arch, seed, small=True)
            student.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                **_compile_args(),
            )
            keras.utils.set_random_seed(seed)
            history = student.fit(
                zoo.batches(split, seed, batch),
                epochs=epochs,
                verbose=0,
                validation_data=(split.x_test, split.y_test) if converged else None,
            )
            row["scratch"].append(zoo.accuracy(student, split))
            if converged:
                curves.append([round(a, 4) for a in history.history["val_accuracy"]])
                row.setdefault("scratch_train_accuracy", []).append(history.history["accuracy"][-1])
            for name, compile_fn in recipes.items():
                keras.utils.set_random_seed(seed)
                distiller = tfc.Distiller(
                    teacher=teacher, student=zoo.build(arch, seed, small=True)
                )
                compile_fn(distiller)
                keras.utils.set_random_seed(seed)
                distiller.fit(zoo.batches(split, seed, batch), epochs=epochs, verbose=0)
                runs[name].append(zoo.accuracy(distiller.student, split))
        row.update(runs)
        means = {k: _mean(v) for k, v in row.items() if isinstance(v, list)}
        row["means"] = means
        row["minus_scratch_pp"] = {name: 100 * (means[name] - means["scratch"]) for name in recipes}
        # one test digit is 1/450 of the accuracy: the mean gap in digits over the 3 seeds
        row["minus_scratch_digits"] = {
            name: round(row["minus_scratch_pp"][name] * len(split.y_test) / 100, 2)
            for name in recipes
        }
        row["minus_scratch_digits_95"] = {
            name: _paired_interval(row[name], row["scratch"], len(split.y_test)) for name in recipes
        }
        if converged:
            row["scratch_test_accuracy_per_epoch"] = curves
        students[arch] = row
        print(arch, {k: round(v, 4) for k, v in means.items()}, flush=True)
        save(students)  # a long run stopped half-way keeps the architectures it finished
    return students


# ----------------------------------------------------------------------------- training
def _callbacks(model) -> list:
    import tfcompress as tfc

    return [tfc.pruning.UpdatePruningStep()] if tfc.pruning.pruned_layers(model) else []


def _accuracy(model, split) -> float:
    return float((model.predict(split.x_test, verbose=0).argmax(-1) == split.y_test).mean())


def _scratch(split, build: Callable[[], Any], seed: int) -> float:
    import keras

    keras.utils.set_random_seed(seed)
    student = build()
    student.compile(
        optimizer=_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    keras.utils.set_random_seed(seed)
    student.fit(
        split.x_train,
        split.y_train,
        epochs=EPOCHS,
        batch_size=BATCH,
        verbose=0,
        callbacks=_callbacks(student),
    )
    return _accuracy(student, split)


def _distilled(split, build, teacher, seed: int, compile_fn) -> float:
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(seed)
    distiller = tfc.Distiller(teacher=teacher, student=build())
    compile_fn(distiller)
    keras.utils.set_random_seed(seed)
    distiller.fit(
        split.x_train,
        split.y_train,
        epochs=EPOCHS,
        batch_size=BATCH,
        verbose=0,
        callbacks=_callbacks(distiller.student),
    )
    return _accuracy(distiller.student, split)


def _defaults() -> dict[str, Any]:
    import tfcompress as tfc

    parameters = inspect.signature(tfc.Distiller.compile).parameters
    return {
        name: parameters[name].default
        for name in ("optimizer", "student_loss_fn", "distillation_loss_fn", "alpha", "temperature")
    }


def _paired_interval(arm: list[float], scratch: list[float], n_test: int) -> list[float]:
    """95% t-interval of the per-seed gap (same initial weights and batches), in test digits."""
    import numpy as np
    from scipy import stats

    gaps = np.subtract(arm, scratch) * n_test
    if len(gaps) < 2:
        return [float(gaps.mean())] * 2
    half = stats.t.ppf(0.975, len(gaps) - 1) * gaps.std(ddof=1) / np.sqrt(len(gaps))
    return [round(float(gaps.mean() - half), 2), round(float(gaps.mean() + half), 2)]


def _mean(values: list[float]) -> float:
    return statistics.mean(values)


def _summary(students: dict[str, Any]) -> dict[str, Any]:
    worst = min(d for row in students.values() for d in row["defaults_minus_scratch_pp"].values())
    return {
        "worst_defaults_minus_scratch_pp": worst,
        "defaults_never_below_scratch": worst >= 0,
    }


def _merge(paths: list[str], name: str) -> None:
    """One results file from runs over disjoint students (e.g. two processes on two cores)."""
    import json

    from _common import write_results

    parts = [json.loads(Path(path).read_text()) for path in paths]
    merged = {k: v for k, v in parts[0].items() if k not in ("benchmark", "command", "environment")}
    merged["students"] = {}
    for part in parts:
        for student, row in part["students"].items():
            if student not in merged["students"]:
                merged["students"][student] = row
                continue
            # the same student in two runs of other recipes: scratch and teacher are re-run
            # identically (same seeds), the recipes' lists and per-recipe dicts are combined
            into = merged["students"][student]
            for key, value in row.items():
                if isinstance(value, dict) and isinstance(into.get(key), dict):
                    into[key] = {**into[key], **value}
                elif key not in into:
                    into[key] = value
    merged["seconds"] = sum(part["seconds"] for part in parts)
    merged["part_commands"] = [part["command"] for part in parts]
    if "worst_minus_scratch_pp" in merged:  # --zoo runs: per recipe, over the students that ran it
        recipes = {r for row in merged["students"].values() for r in row["minus_scratch_pp"]}
        merged["worst_minus_scratch_pp"] = {
            recipe: min(
                row["minus_scratch_pp"][recipe]
                for row in merged["students"].values()
                if recipe in row["minus_scratch_pp"]
            )
            for recipe in sorted(recipes)
        }
    else:
        merged.update(_summary(merged["students"]))
    write_results(name, merged)


def main() -> None:
    global LEARNING_RATE, EPOCHS, SEEDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid", nargs="*", default=None, help="also run these candidate settings (none: all)"
    )
    parser.add_argument("--students", nargs="*", choices=sorted(STUDENTS), default=None)
    parser.add_argument("--teachers", nargs="*", choices=("cnn_32", "mlp_256x2"), default=None)
    parser.add_argument("--name", default=None, help="results name (default from --grid)")
    parser.add_argument(
        "--merge", nargs="*", default=None, help="combine the students of these results files"
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="Adam's, for all runs")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--zoo",
        nargs="*",
        default=None,
        help="instead: the zoo_bench students of these architectures (none: all but resnet)",
    )
    parser.add_argument("--no-keras-io", action="store_true", help="skip keras.io's arguments")
    parser.add_argument(
        "--no-defaults", action="store_true", help="skip the library defaults (e.g. in the grid)"
    )
    parser.add_argument(
        "--converged",
        action="store_true",
        help="with --zoo: both arms trained to their plateau (CONVERGED), not the zoo's schedule",
    )
    parser.add_argument(
        "--teacher-epochs", type=int, default=None, help="with --zoo (default: zoo_models.EPOCHS)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=None, help=f"default: {' '.join(map(str, SEEDS))}"
    )
    args = parser.parse_args()
    SEEDS = tuple(args.seeds or SEEDS)
    LEARNING_RATE, EPOCHS = args.learning_rate, args.epochs
    if args.converged:
        global STEPS_PER_EXECUTION
        LEARNING_RATE = args.learning_rate or CONVERGED["learning_rate"]
        STEPS_PER_EXECUTION = 32
    if args.merge:
        _merge(args.merge, args.name or "distill_defaults")
        return

    from _common import write_results

    import tfcompress as tfc

    started = time.perf_counter()
    recipes: dict[str, Callable[[Any], None]] = {}
    if not args.no_defaults:
        recipes["defaults"] = _compile_defaults
    if not args.no_keras_io:
        recipes["keras_io"] = _compile_keras_io
    if args.grid is not None:
        grid = _grid()
        recipes.update({k: v for k, v in grid.items() if not args.grid or k in args.grid})
    if args.zoo is not None:
        _zoo_main(args, recipes, started)
        return
    split = tfc.data.load_digits()
    teachers = _teachers(split, args.teachers)

    students: dict[str, Any] = {}
    for student_name in args.students or STUDENTS:
        build = STUDENTS[student_name]
        row: dict[str, Any] = {"params": build().count_params(), "scratch": []}
        for seed in SEEDS:
            row["scratch"].append(_scratch(split, build, seed))
        for teacher_name, teacher in teachers.items():
            for recipe, compile_fn in recipes.items():
                row[f"{teacher_name}/{recipe}"] = [
                    _distilled(split, build, teacher, seed, compile_fn) for seed in SEEDS
                ]
        means = {key: _mean(values) for key, values in row.items() if isinstance(values, list)}
        row["means"] = means
        row["defaults_minus_scratch_pp"] = {
            teacher: 100 * (means[f"{teacher}/defaults"] - means["scratch"]) for teacher in teachers
        }
        students[student_name] = row
        print(student_name, {k: round(v, 4) for k, v in means.items()}, flush=True)

    payload = {
        "dataset": "sklearn digits (test split, 450 images)",
        "protocol": {
            "seeds": list(SEEDS),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "optimizer": f"adam, learning rate {LEARNING_RATE or 1e-3}, for scratch and distilled",
            "same_initial_weights_and_data_order": True,
        },
        "library_defaults": {k: repr(v) for k, v in _defaults().items()},
        "keras_io_arguments": {**KERAS_IO, "distillation_loss_fn": "keras.losses.KLDivergence()"},
        "teachers": {
            name: {"params": model.count_params(), "accuracy": _accuracy(model, split)}
            for name, model in teachers.items()
        },
        "students": students,
        **_summary(students),
        "seconds": time.perf_counter() - started,
    }
    write_results(
        args.name or ("distill_defaults" if args.grid is None else "distill_defaults_grid"), payload
    )


def _zoo_main(args, recipes: dict[str, Callable[[Any], None]], started: float) -> None:
    archs = args.zoo or ["mlp", "cnn1d", "cnn2d_bn", "dwsep", "resnet", "transformer", "gru"]
    _zoo_run(
        archs,
        recipes,
        lambda students: _zoo_save(args, recipes, students, started),
        converged=args.converged,
        teacher_epochs=args.teacher_epochs,
    )


def _zoo_save(args, recipes: dict[str, Callable[[Any], None]], students, started) -> None:
    from _common import write_results

    worst = {
        name: min(row["minus_scratch_pp"][name] for row in students.values()) for name in recipes
    }
    payload = {
        "dataset": "sklearn digits in each zoo architecture's input format (450 test images)",
        "protocol": {
            "seeds": list(SEEDS),
            "epochs": CONVERGED["epochs"]
            if args.converged
            else "zoo_models.EPOCHS per architecture (the teacher's and the student's)",
            "batch_size": CONVERGED["batch_size"] if args.converged else 64,
            "optimizer": f"adam, learning rate {LEARNING_RATE or 1e-3}, scratch and distilled",
            "teacher": "the zoo's float model of the same seed (zoo_models.train, Adam 3e-3, "
            f"{args.teacher_epochs or 'zoo_models.EPOCHS'} epochs)",
            "same_initial_weights_and_data_order": True,
            "accuracy": "Keras float student on the 450 test digits",
        },
        "library_defaults": {k: repr(v) for k, v in _defaults().items()},
        "students": students,
        "worst_minus_scratch_pp": worst,
        "seconds": time.perf_counter() - started,
    }
    write_results(args.name or "distill_defaults_zoo", payload)


if __name__ == "__main__":
    main()
