"""Run a recipe: train each step with the library's public API, convert, measure, write the folder."""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import legacy
from tfcompress.core.compat import is_library_layer, is_tf_keras, nested_layers
from tfcompress.core.graph import clone_with_weights, needs_tracing, traced_model
from tfcompress.diagnose.auto import over_budget
from tfcompress.recipe.isolated import run_isolated
from tfcompress.recipe.report import write_reports
from tfcompress.recipe.schema import Recipe, Step, load_recipe
from tfcompress.tflite.fidelity import Fidelity
from tfcompress.tflite.runtime import run_tflite

Log = Callable[[str], None]
DataSource = str | os.PathLike | tuple | Mapping[str, np.ndarray]


Labels = np.ndarray | dict[str, np.ndarray]


@dataclass
class StepResult:
    """What one step did: its name, options, Keras score on the held-out data, seconds.

    `keras_accuracy` is the first output's score (its metric: `OutputResult.metric`);
    `keras_scores` holds every output's, by output name.
    """

    name: str
    options: dict[str, Any]
    keras_accuracy: float
    seconds: float
    keras_scores: dict[str, float] = field(default_factory=dict)


@dataclass
class OutputResult:
    """One output's figures on the held-out data: the input model in Keras and as a float32
    TFLite file, and the compressed file on LiteRT (`metric`: accuracy, or mae/mse, lower is
    better)."""

    name: str
    metric: str
    float_keras: float
    float_tflite: float
    tflite: float


@dataclass
class _Task:
    """How one output is trained and scored."""

    name: str  # the output's key (dict outputs) or name (list outputs)
    position: int
    metric: str
    loss: Any
    keras_metric: str


@dataclass
class CompressResult:
    """The outcome of `compress`: where the files are and the figures in the report.

    Attributes:
        output_dir: the folder holding `model.tflite`, `report.md`, `report.html`, `recipe.yaml`.
        tflite_path: the converted file.
        mode: the conversion mode.
        tflite_accuracy: accuracy of the file on LiteRT on the held-out data.
        float_accuracy: the input model's Keras accuracy on the same data.
        tflite_bytes: size of the file; `float_tflite_bytes` the input model as float32 TFLite.
        steps: one `StepResult` per training step.
        scores: every output's figures (`OutputResult`); the `*_accuracy` fields are the first
            output's, in its metric (accuracy, or mae/mse for a regression output).
        target: where the file runs: "phone" (LiteRT) or "micro" (TensorFlow Lite Micro).
        flash_bytes: with target micro, the flash the model takes on TFLM (the file's size,
            TFLM's code on top), measured by `tfcompress.micro.check`; None otherwise.
        arena_bytes: with target micro, the smallest tensor arena TFLM runs the file with,
            measured by `tfcompress.micro.check` (bisected); None otherwise.
        recommended_arena_bytes: `arena_bytes` plus 25 % for optimized kernels' scratch.
        max_flash: the recipe's flash budget (None: no budget); the file fits it.
        max_arena: the recipe's arena budget (None: no budget); the file fits it.
        fidelity: the file against the compressed Keras model on (up to 200) held-out rows,
            every output (`convert`'s check; None for float modes).
        compressed_tensors: with `micro_compress`, how many weight tensors the file stores as
            TFLM look-up tables (0: none had few enough values; the file is the plain one).
    """

    output_dir: Path
    tflite_path: Path
    mode: str
    tflite_accuracy: float
    float_accuracy: float
    float_tflite_accuracy: float
    tflite_bytes: int
    float_tflite_bytes: int
    holdout_samples: int
    steps: list[StepResult] = field(default_factory=list)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    edgetpu: dict[str, Any] | None = None
    float_ops: list[str] = field(default_factory=list)
    scores: list[OutputResult] = field(default_factory=list)
    target: str = "phone"
    flash_bytes: int | None = None
    arena_bytes: int | None = None
    recommended_arena_bytes: int | None = None
    max_flash: int | None = None
    max_arena: int | None = None
    compressed_tensors: int = 0
    fidelity: Fidelity | None = None


@dataclass
class _State:
    model: keras.Model
    pruned: bool = False
    clustered: bool = False


def compress(
    model: keras.Model | str | os.PathLike,
    data: DataSource,
    recipe: str | os.PathLike | Mapping[str, Any] | Recipe,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    log: Log | None = print,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
    isolate: bool = True,
) -> CompressResult:
    """Apply a recipe (prune / cluster / distill / qat steps, then convert) and write a report.

    The recipe is validated before anything is loaded or trained. The output folder is written
    atomically: it appears complete, or (on any error) not at all.

    The recipe runs in a Python process of its own (like `convert`'s converter and AdaRound):
    its progress lines reach `log` as they happen, and a crash inside TensorFlow's native
    kernels (a segmentation fault in a training step) becomes an `IsolatedCrash` naming the
    step, with nothing written and your process unharmed. A model object is sent there as
    Keras pickles it; a model whose custom layer no module defines (a class defined in
    `__main__` or inside a function) cannot be, and runs here, with a warning saying so.
    `isolate=False` runs the recipe in this process.

    With `target: micro` in the convert step, the file is converted for TensorFlow Lite Micro
    (`tfc.convert(..., target="micro")`), optionally stored as TFLM look-up tables
    (`micro_compress`), and its flash and tensor arena are measured there
    (`tfc.micro.check`): `CompressResult.flash_bytes` and `.arena_bytes`, and the report. A
    file over the step's `max_flash` or `max_arena` raises `BudgetError`.

    Classifiers, regressors, segmenters and models with several outputs are trained and scored
    output by output: the recipe's `task` (metric and loss per output), else the loss and
    metrics the model was compiled with, else the labels decide (class ids or one-hot rows:
    cross-entropy and accuracy, per pixel for a dense map; real values: mean squared error,
    scored by mean absolute error). What cannot be scored is refused before any training.

    Args:
        model: the float Keras model (a `tf_keras` model is rebuilt in Keras 3), or a
            `.keras` / `.h5` file or a Keras 2 SavedModel folder (read with
            `tfcompress.load_model`).
        data: `(x, y)` arrays, a dict or `.npz` file with `x` and `y` (and optionally `x_test`,
            `y_test`), or `"digits"` for the built-in digits data. A model with several
            outputs takes one label array per output: `y_NAME` (and `y_test_NAME`) arrays, or
            `y` as a dict by output name (or a list in output order). Without a test split,
            the recipe's `training.holdout` share is held out for measuring the scores.
        recipe: a YAML file, YAML text, a dict or a `Recipe` (see `docs/guide/recipes.md`).
        output_dir: the folder to write: `model.tflite`, `report.md`, `report.html` (plots
            embedded) and `recipe.yaml` (the exact recipe used, every default filled in).
        overwrite: replace a non-empty `output_dir`; without it, a non-empty folder is an error.
        log: called with one line per progress message; `None` is silent.
        safe_mode: load a `.keras` file with Keras's safe mode (refuses Lambda layers' code).
        custom_objects: classes the `.keras` file needs (custom layers), by name.
        isolate: run the recipe in a Python process of its own (True), or in this one.

    Returns:
        A `CompressResult` with the file's path and the measured figures.

    Raises:
        RecipeError: the recipe is invalid (the message names the line and what is allowed).
        BudgetError: with `target: micro`, the converted file takes more flash or tensor arena
            on TensorFlow Lite Micro than the convert step's `max_flash` or `max_arena` (the
            message names the budget and the measured figure); nothing is written.
        FileExistsError: `output_dir` is not empty and `overwrite` is False.
        IsolatedCrash: the recipe's process died inside TensorFlow or another native library;
            the message names the step (`tfc.recipe.IsolatedCrash`).
        ValueError: an output the recipe cannot train or score (labels missing or of the
            wrong shape, several inputs, distill on a model that is not a classifier); the
            message names the output and what to set instead.

    Example:
        >>> import tempfile
        >>> from tfcompress.models import build_digits_cnn, compile_classifier
        >>> model = build_digits_cnn(width=4)
        >>> recipe = {"steps": [{"qat": {"epochs": 1}}, {"convert": {"mode": "int8"}}]}
        >>> result = compress(model, "digits", recipe, tempfile.mkdtemp() + "/out", log=None)
        >>> result.tflite_path.name, result.mode
        ('model.tflite', 'int8')
    """
    say = log or (lambda _: None)
    recipe = load_recipe(recipe)  # before any loading or training
    output = Path(output_dir)
    _check_output(output, overwrite)
    if isolate and not isinstance(model, (str, os.PathLike)):
        model = _load_model(model, safe_mode, custom_objects)  # a tf_keras model: rebuilt once
    portable, why_not = _portable(model, custom_objects) if isolate else (None, None)
    if why_not is not None:
        warnings.warn(
            f"compress runs the recipe in this process: model '{getattr(model, 'name', model)}' "
            f"cannot be sent to a process of its own ({why_not}). A crash inside TensorFlow "
            "would end this process; define the model's custom layers in a module to run the "
            "recipe in a process of its own, or pass isolate=False to silence this.",
            stacklevel=2,
        )
    elif isolate:
        return run_isolated(
            "_compress_in_child",
            portable,
            data,
            recipe,
            str(output),
            output=output,
            log=log,
            in_process_hint="compress(..., isolate=False) runs the recipe in this process.",
            overwrite=overwrite,
            safe_mode=safe_mode,
            custom_objects=custom_objects,
        )
    x_train, y_train, x_test, y_test = _load_data(data, recipe.training)
    float_model = _functional(_load_model(model, safe_mode, custom_objects))
    y_train = _labels_by_output(float_model, y_train)
    y_test = _labels_by_output(float_model, y_test)
    tasks = _tasks_of(float_model, y_train, recipe)  # an unsupported task is refused here
    _check_steps(recipe, tasks, float_model)
    training = recipe.training
    keras.utils.set_random_seed(training["seed"])
    y_train_fit = _label_structure(float_model, tasks, y_train)

    float_scores = _keras_scores(float_model, tasks, x_test, y_test)
    say(
        f"input model '{float_model.name}': Keras {_scores_text(float_scores, tasks)} on {_count(y_test)} held-out samples"
    )
    state = _State(clone_with_weights(float_model))
    trainable = recipe.steps[:-1]
    results = []
    for number, step in enumerate(trainable, start=1):
        say(f"[{number}/{len(recipe.steps)}] {step.name} {_options_text(step)}")
        started = time.perf_counter()
        _STEPS[step.name](state, step, float_model, tasks, x_train, y_train_fit, training, say)
        scores = _keras_scores(state.model, tasks, x_test, y_test)
        seconds = time.perf_counter() - started
        say(f"      {step.name} done in {seconds:.1f} s: Keras {_scores_text(scores, tasks)}")
        first = scores[tasks[0].name]
        results.append(StepResult(step.name, dict(step.options), first, seconds, scores))

    convert_step = recipe.convert
    mode = convert_step.options["mode"]
    target = convert_step.options["target"]
    say(f"[{len(recipe.steps)}/{len(recipe.steps)}] convert {_options_text(convert_step)}")
    calibration = tfc.data.calibration_sample(x_train, convert_step.options["num_samples"])
    integer = mode in ("int8", "int16x8", "edgetpu")
    flatbuffer = tfc.convert(
        state.model,
        mode=mode,
        representative_data=calibration if integer else None,
        validation_data=x_test[:_CHECK_ROWS] if integer else None,  # the file vs the model
        num_samples=convert_step.options["num_samples"],
        sparsity=convert_step.options["sparsity"],
        per_channel=not state.clustered,  # keep k shared values per kernel in the int8 file
        target=target,
    )
    fidelity = flatbuffer.fidelity
    plain = flatbuffer  # what LiteRT runs: the file without TFLM's look-up tables
    if convert_step.options["micro_compress"]:
        flatbuffer = _micro_compressed(flatbuffer, say)
    micro = (
        _check_micro_budgets(flatbuffer, convert_step, output, say) if target == "micro" else None
    )
    float_flatbuffer = tfc.convert(float_model, mode="float32")
    say("measuring the files on LiteRT...")
    report = tfc.inspect(plain)
    tflite_scores = _tflite_scores(plain, tasks, x_test, y_test)
    float_tflite_scores = _tflite_scores(float_flatbuffer, tasks, x_test, y_test)
    scores = [
        OutputResult(
            task.name,
            task.metric,
            float_scores[task.name],
            float_tflite_scores[task.name],
            tflite_scores[task.name],
        )
        for task in tasks
    ]
    result = CompressResult(
        output_dir=output,
        tflite_path=output / "model.tflite",
        mode=mode,
        tflite_accuracy=scores[0].tflite,
        float_accuracy=scores[0].float_keras,
        float_tflite_accuracy=scores[0].float_tflite,
        tflite_bytes=len(flatbuffer),
        float_tflite_bytes=len(float_flatbuffer),
        holdout_samples=_count(y_test),
        steps=results,
        layer_sparsity=_layer_sparsity(report),
        edgetpu=tfc.edgetpu_report(report).to_dict() if mode in ("int8", "edgetpu") else None,
        float_ops=sorted(set(report.float_ops)),
        scores=scores,
        target=target,
        flash_bytes=None if micro is None else micro.flash_bytes,
        arena_bytes=None if micro is None else micro.arena_bytes,
        recommended_arena_bytes=None if micro is None else micro.recommended_arena_bytes,
        max_flash=convert_step.options["max_flash"],
        max_arena=convert_step.options["max_arena"],
        compressed_tensors=0 if micro is None else micro.compressed_tensors,
        fidelity=fidelity,
    )
    _write_atomically(
        output,
        overwrite,
        lambda folder: (
            tfc.save_tflite(flatbuffer, folder / "model.tflite"),
            (folder / "recipe.yaml").write_text(recipe.to_yaml()),
            write_reports(result, recipe, flatbuffer, float_flatbuffer, folder),
        ),
    )
    say(
        f"wrote {output}/: model.tflite ({len(flatbuffer):,} bytes, {mode}, LiteRT "
        f"{_scores_text(tflite_scores, tasks)}), report.md, report.html, recipe.yaml"
    )
    return result


def _micro_compressed(flatbuffer: bytes, say: Log) -> bytes:
    """The file with its few-valued weights as TFLM look-up tables, or as it is when none has."""
    try:
        small = tfc.micro.compress(flatbuffer)
    except tfc.micro.MicroError as error:
        say(f"      micro_compress: the file is kept as it is: {error}")
        return flatbuffer
    say(f"      micro_compress: {len(flatbuffer):,} -> {len(small):,} bytes (TFLM look-up tables)")
    return small


class BudgetError(ValueError):
    """The converted file does not fit the recipe's `max_flash` or `max_arena` on TFLM."""


def _check_micro_budgets(flatbuffer: bytes, step: Step, output: Path, say: Log) -> Any:
    """The file's flash and arena measured on TFLM (`tfc.micro.check`), within the budgets."""
    say("measuring flash and tensor arena on TensorFlow Lite Micro...")
    report = tfc.micro.check(flatbuffer)
    options = step.options
    exceeded = over_budget(
        report.flash_bytes, report.arena_bytes, options["max_flash"], options["max_arena"]
    )
    if exceeded:
        raise BudgetError(
            f"The {options['mode']} file exceeds the convert step's budget on TensorFlow Lite "
            f"Micro: {'; '.join(exceeded)} (measured by tfc.micro.check). Nothing was written "
            f"to {output}. Add a prune or cluster step, or loosen the budget; "
            "tfc.auto_quantize(model, data, target='micro', max_flash=..., max_arena=...) "
            "searches the integer files that fit."
        )
    say(
        f"      on TFLM: flash {report.flash_bytes:,} bytes, tensor arena "
        f"{report.arena_bytes:,} bytes measured"
    )
    return report


def run_from_cli(args: argparse.Namespace, log: Log | None = None) -> int:
    """`tfcompress compress MODEL --data DATA --recipe RECIPE -o OUT [--overwrite]`, in this
    process (the command runs it in a process of its own: `recipe.isolated`)."""
    recipe = load_recipe(args.recipe)  # a bad recipe fails before the model is read
    compress(
        args.model,
        args.data,
        recipe,
        args.output,
        overwrite=args.overwrite,
        log=log or (lambda line: print(line, file=sys.stderr, flush=True)),
        safe_mode=not args.unsafe,
        custom_objects=custom_objects_of(args.custom_objects),
        isolate=False,
    )
    return 0


@dataclass
class _PickledModel:
    """A Keras model on its way to the recipe's process: Keras's own pickled form, and the
    classes of its custom layers (pickled by reference: loading them imports their modules)."""

    data: bytes
    classes: dict[str, Any]

    def load(self) -> keras.Model:
        with keras.saving.custom_object_scope(self.classes):
            return pickle.loads(self.data)  # noqa: S301 - the caller's own model


def _portable(
    model: keras.Model | str | os.PathLike, custom_objects: dict | None
) -> tuple[Any, str | None]:
    """The model as the recipe's process can receive it (a path as is, a Keras model pickled),
    and None; or None and the reason it cannot go there (a class no module defines)."""
    given = {c for c in (custom_objects or {}).values() if isinstance(c, type)}
    own: set[type] = set()
    if not isinstance(model, (str, os.PathLike)):
        layers = [model, *nested_layers(model)]
        own = {type(layer) for layer in layers if not is_library_layer(layer)}
    homeless = sorted(
        cls.__qualname__
        for cls in own | given
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__
    )
    if homeless:
        where = "in __main__ or inside a function"
        return None, f"{', '.join(homeless)} is defined {where}, so no other process imports it"
    if isinstance(model, (str, os.PathLike)):
        return model, None
    classes = dict(custom_objects or {})
    for cls in own:
        classes.setdefault(keras.saving.get_registered_name(cls), cls)
        classes.setdefault(cls.__name__, cls)
    try:
        pickle.dumps(classes)  # by reference: their modules are imported there
        return _PickledModel(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), classes), None
    except Exception as error:  # noqa: BLE001 - whatever Keras or pickle cannot send
        return None, f"it cannot be pickled ({type(error).__name__}: {error})"


def _compress_in_child(
    model: Any, data: Any, recipe: Recipe, output_dir: str, **options: Any
) -> CompressResult:
    """`compress` in the recipe's process (`recipe.isolated`): the model unpickled with the
    caller's custom objects, every other argument as given."""
    if isinstance(model, _PickledModel):
        model = model.load()
    return compress(model, data, recipe, output_dir, isolate=False, **options)


def custom_objects_of(module_name: str | None) -> dict | None:
    """The classes and functions a module defines, by name (`--custom-objects MODULE`).

    Importing it also runs its `register_keras_serializable` decorators.

    Example:
        >>> sorted(custom_objects_of("tfcompress.layers"))
        ['FusedBatchNormalization']
    """
    if module_name is None:
        return None
    module = importlib.import_module(module_name)
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (isinstance(value, type) or callable(value))
        and getattr(value, "__module__", None) == module.__name__
    }


# -- the steps -----------------------------------------------------------------------------------


def _prune(state: _State, step: Step, teacher, tasks, x, y, training, say: Log) -> None:
    options = step.options
    end_step = max(1, _steps_per_epoch(x, training) * options["epochs"] * 2 // 3)
    schedule = tfc.pruning.PolynomialDecay(
        options["initial_sparsity"],
        options["final_sparsity"],
        begin_step=0,
        end_step=end_step,
        frequency=min(options["frequency"], end_step),
    )
    pruned = tfc.prune_low_magnitude(state.model, schedule=schedule)
    _fit(pruned, tasks, x, y, options, training, say, [tfc.pruning.UpdatePruningStep()])
    state.model = tfc.strip_pruning(pruned)
    state.pruned = True


def _cluster(state: _State, step: Step, teacher, tasks, x, y, training, say: Log) -> None:
    options = step.options
    clustered = tfc.cluster_weights(
        state.model,
        number_of_clusters=options["number_of_clusters"],
        init=options["init"],
        preserve_sparsity=state.pruned,
    )
    _fit(clustered, tasks, x, y, options, training, say, [])
    state.model = tfc.strip_clustering(clustered)
    state.clustered = True


def _qat(state: _State, step: Step, teacher, tasks, x, y, training, say: Log) -> None:
    if state.clustered:
        quantized = tfc.sharing.quantize_clustered_model(state.model)
    else:
        quantized = tfc.quantize_model(state.model)
    _fit(quantized, tasks, x, y, step.options, training, say, _keep_zeros(state))
    state.model = quantized


def _distill(state: _State, step: Step, teacher, tasks, x, y, training, say: Log) -> None:
    options = step.options
    distiller = tfc.Distiller(teacher=clone_with_weights(teacher), student=state.model)
    distiller.compile(
        optimizer=keras.optimizers.Adam(options["learning_rate"]),
        metrics=["accuracy"],
        student_loss_fn=tasks[0].loss,
        alpha=options["alpha"],
        temperature=options["temperature"],
    )
    distiller.fit(
        x,
        y,
        epochs=options["epochs"],
        batch_size=training["batch_size"],
        verbose=0,
        callbacks=[_EpochLog(say), *_keep_zeros(state)],
    )
    state.model = distiller.student


_CHECK_ROWS = 200  # held-out rows the converted file is checked on against the Keras model
_STEPS = {"prune": _prune, "cluster": _cluster, "qat": _qat, "distill": _distill}


def _keep_zeros(state: _State) -> list[keras.callbacks.Callback]:
    return [tfc.pruning.PreserveSparsity()] if state.pruned and not state.clustered else []


def _fit(model, tasks: list[_Task], x, y, options, training, say: Log, callbacks: list) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(options["learning_rate"]),
        loss=_structure(model, tasks, [task.loss for task in tasks]),
        metrics=_structure(model, tasks, [[task.keras_metric] for task in tasks]),
    )
    model.fit(
        x,
        y,
        epochs=options["epochs"],
        batch_size=training["batch_size"],
        verbose=0,
        callbacks=[_EpochLog(say), *callbacks],
    )


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, say: Log) -> None:
        super().__init__()
        self.say = say

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        figures = ", ".join(
            f"{key} {value:.4f}"
            for key, value in logs.items()
            if key == "loss" or key.endswith(("accuracy", "mae", "mse"))
        )
        self.say(f"      epoch {epoch + 1}: {figures}")


# -- helpers ---------------------------------------------------------------------------------------


def _options_text(step: Step) -> str:
    return ", ".join(f"{key}={value}" for key, value in step.options.items())


def _steps_per_epoch(x: np.ndarray, training: dict) -> int:
    return -(-len(x) // training["batch_size"])


# -- the task: what each output learns and how it is scored ---------------------------------------

_METRIC_NAMES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
    "mae": "mae",
    "mean_absolute_error": "mae",
    "mse": "mse",
    "mean_squared_error": "mse",
}
_PROBABILITY_LOSSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}
_TASK_HELP = (
    "Set the recipe's task (task: {metric: {OUTPUT: accuracy|mae|mse}, loss: {OUTPUT: LOSS}}), "
    "or compress it with the Python API (tfcompress.quantize_model, prune_low_magnitude, "
    "cluster_weights with your own loss and fit), then tfcompress convert"
)


def _model_output(model: keras.Model) -> Any:
    """The model's output tensors (one, a list or a dict); a Sequential model has no `output`
    until it is called, but it has `outputs`."""
    try:
        return model.output
    except AttributeError:
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else list(outputs)


def _output_names(model: keras.Model) -> list[str]:
    """The outputs' names: a dict output's keys, else the model's output names, in order."""
    output = _model_output(model)
    if isinstance(output, dict):
        return list(output)
    names = getattr(model, "output_names", None)  # a Sequential model has none: its last layer
    return list(names) if names else [model.layers[-1].name]


def _refuse(model: keras.Model, why: str) -> None:
    raise ValueError(
        f"tfcompress compress cannot train and score '{model.name}': {why}. {_TASK_HELP}."
    )


def _labels_by_output(model: keras.Model, labels: Labels) -> dict[str, np.ndarray]:
    """The labels of each output, by output name (one array for a one-output model)."""
    names = _output_names(model)
    if not isinstance(labels, Mapping):
        if len(names) != 1:
            _refuse(
                model,
                f"it has {len(names)} outputs ({', '.join(names)}) and the data one label array; "
                "give one per output: y_NAME arrays in the .npz (np.savez(path, x=x, "
                + ", ".join(f"y_{n}=..." for n in names)
                + ")) or y={name: array} in Python",
            )
        return {names[0]: np.asarray(labels)}
    given = dict(labels)
    if sorted(given) == [str(i) for i in range(len(names))]:  # a list of arrays, in output order
        given = {name: given[str(i)] for i, name in enumerate(names)}
    if len(names) == 1 and len(given) == 1:
        return {names[0]: np.asarray(next(iter(given.values())))}
    missing = [name for name in names if name not in given]
    if missing:
        _refuse(
            model,
            f"output(s) {', '.join(repr(n) for n in missing)} have no labels (the data has "
            f"{', '.join(repr(k) for k in given) or 'none'}); give y_NAME for each output "
            f"({', '.join(names)})",
        )
    unknown = [key for key in given if key not in names]
    if unknown:
        _refuse(
            model,
            f"the data has labels {', '.join(repr(k) for k in unknown)} for no output; its "
            f"outputs are {', '.join(names)}",
        )
    return {name: np.asarray(given[name]) for name in names}


def _tasks_of(model: keras.Model, labels: dict[str, np.ndarray], recipe: Recipe) -> list[_Task]:
    """How each output is trained and scored: the recipe's task, else the model's compile
    config, else what the labels are. Refuses (ValueError) what cannot be scored."""
    if len(model.inputs) != 1:
        _refuse(model, f"it has {len(model.inputs)} inputs; the data gives one array x")
    names = _output_names(model)
    for key, setting in recipe.task.items():
        unknown = [n for n in setting if n not in names] if isinstance(setting, Mapping) else []
        if unknown:
            _refuse(
                model,
                f"the recipe's task {key} names the output(s) {', '.join(map(repr, unknown))}, "
                f"which it does not have; its outputs are {', '.join(names)}",
            )
    structure = _model_output(model)
    outputs = keras.tree.flatten(structure) if not isinstance(structure, dict) else None
    compiled = _compile_config(model)
    tasks = []
    for position, name in enumerate(names):
        tensor = structure[name] if outputs is None else outputs[position]
        shape = tuple(tensor.shape)
        probabilities = _gives_probabilities(model, name, position, recipe.training["from_logits"])
        metric = _chosen(recipe.task["metric"], name) or "auto"
        if metric == "auto":
            metric = _METRIC_NAMES.get(str(_chosen(compiled.get("metrics"), name)))
        y = labels[name]
        kind = _label_kind(shape, y)
        metric = metric or ("accuracy" if kind in ("ids", "one_hot", "binary") else "mae")
        if metric == "accuracy" and kind not in ("ids", "one_hot", "binary"):
            _refuse(
                model,
                f"output '{name}' is scored by accuracy, but its labels (shape {y.shape}, dtype "
                f"{y.dtype}) are not class ids or one-hot rows for outputs of shape {shape}",
            )
        if kind == "other":
            _refuse(
                model,
                f"output '{name}' gives shape {shape}, and its labels have shape "
                f"{(None, *y.shape[1:])}, which fits neither class ids (one per sample or pixel), "
                "one-hot rows, nor one target per output value",
            )
        loss_name = _chosen(recipe.task["loss"], name) or "auto"
        if loss_name == "auto":
            loss_name = _known_loss(_chosen(compiled.get("loss"), name))
        loss = _loss(model, name, loss_name, metric, kind, probabilities)
        keras_metric = "accuracy" if metric == "accuracy" else metric
        tasks.append(_Task(name, position, metric, loss, keras_metric))
    return tasks


def _check_steps(recipe: Recipe, tasks: list[_Task], model: keras.Model) -> None:
    single_classifier = len(tasks) == 1 and tasks[0].metric == "accuracy"
    if not single_classifier and any(step.name == "distill" for step in recipe.steps):
        _refuse(
            model,
            "the distill step matches the teacher's class probabilities, so it needs one output "
            "of class scores (this model's outputs are scored by "
            + ", ".join(f"{task.name}: {task.metric}" for task in tasks)
            + "); remove the distill step",
        )


def _chosen(setting: Any, name: str) -> Any:
    """One output's entry of a task or compile setting: the whole value, or the output's by name."""
    if isinstance(setting, Mapping):
        if "class_name" in setting:  # a serialized Keras object
            return _serialized_name(setting)
        return _chosen(setting.get(name), name)
    if isinstance(setting, list | tuple):
        return _chosen(setting[0], name) if setting else None
    return setting


def _known_loss(name: Any) -> str:
    """A compile config's loss name when Keras knows it, else "auto" (chosen from the labels)."""
    if not isinstance(name, str):
        return "auto"
    if name in _PROBABILITY_LOSSES:
        return name
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        return "auto"
    return name


def _serialized_name(setting: Mapping) -> str | None:
    config = setting.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("name"), str):
        return config["name"]
    return str(setting.get("class_name")) if setting.get("class_name") else None


def _compile_config(model: keras.Model) -> dict[str, Any]:
    """Loss and metrics the model was compiled with, per output where it has several."""
    if not getattr(model, "compiled", False):
        return {}
    try:
        config = model.get_compile_config() or {}
    except Exception:  # noqa: BLE001 - a compile config that cannot be read is no config
        return {}
    names = _output_names(model)
    return {key: _per_output(config.get(key), names) for key in ("loss", "metrics")}


def _per_output(value: Any, names: list[str]) -> Any:
    """A compile setting as {output name: entry} when it is given per output (list or dict)."""
    if isinstance(value, list | tuple) and len(names) > 1 and len(value) == len(names):
        return {
            name: entry[0] if isinstance(entry, list | tuple) and entry else entry
            for name, entry in zip(names, value, strict=True)
        }
    if isinstance(value, Mapping) and "class_name" not in value:
        return {
            name: entry[0] if isinstance(entry, list | tuple) and entry else entry
            for name, entry in value.items()
        }
    if isinstance(value, list | tuple) and value:
        return value[0]
    return value


def _label_kind(shape: tuple, y: np.ndarray) -> str:
    """ids (one class id per sample or pixel), one_hot, binary (0/1 for one output), real
    (one target per output value) or other (fits nothing)."""
    samples = len(y)
    values = int(np.prod([d or 1 for d in shape[1:]]))
    whole = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    if not whole and np.issubdtype(y.dtype, np.floating) and y.size:
        whole = bool(np.all(np.mod(y, 1) == 0))
    classes = shape[-1] if len(shape) > 1 else 1
    if whole and classes and classes > 1:
        if y.size * classes == samples * values and (y.ndim == 1 or y.shape[-1] != classes):
            return "ids"
        if tuple(y.shape[1:]) == tuple(shape[1:]) and bool(np.all((y == 0) | (y == 1))):
            return "one_hot"
    if whole and classes == 1 and bool(np.all((y == 0) | (y == 1))) and y.size == samples * values:
        return "binary"
    if y.size == samples * values:
        return "real"
    return "other"


def _output_layer(model: keras.Model, name: str, position: int) -> Any:
    names = _output_names(model)
    for candidate in (name, names[position] if position < len(names) else None):
        try:
            return model.get_layer(candidate)
        except (ValueError, TypeError):
            continue
    return None


def _gives_probabilities(model: keras.Model, name: str, position: int, setting: Any) -> bool:
    if setting != "auto":
        return not bool(setting)
    layer = _output_layer(model, name, position)
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return activation in ("softmax", "sigmoid") or isinstance(layer, keras.layers.Softmax)


def _loss(
    model: keras.Model, name: str, loss_name: str, metric: str, kind: str, probabilities: bool
) -> Any:
    if loss_name == "auto":
        if metric != "accuracy":
            return keras.losses.MeanSquaredError()
        loss_name = {
            "ids": "sparse_categorical_crossentropy",
            "one_hot": "categorical_crossentropy",
            "binary": "binary_crossentropy",
        }[kind]
    if loss_name in _PROBABILITY_LOSSES:
        return _PROBABILITY_LOSSES[loss_name](from_logits=not probabilities)
    try:
        return keras.losses.get(loss_name)
    except (ValueError, TypeError) as error:
        _refuse(
            model,
            f"output '{name}' names the loss {loss_name!r}, which Keras does not know ({error})",
        )


def _score(metric: str, outputs: np.ndarray, y: np.ndarray, probabilities: bool = True) -> float:
    """Accuracy (top-1, per pixel for a dense map; 0/1 for one output), or mae / mse."""
    outputs = np.asarray(outputs, "float32")
    if metric == "accuracy":
        if outputs.shape[-1] > 1:
            predicted = outputs.argmax(axis=-1)
            labels = y.argmax(axis=-1) if y.shape == outputs.shape else y.reshape(predicted.shape)
        else:
            predicted = outputs[..., 0] > (0.5 if probabilities else 0.0)
            labels = y.reshape(predicted.shape) > 0.5
        return float(np.mean(predicted == labels))
    error = outputs.reshape(len(y), -1) - np.asarray(y, "float32").reshape(len(y), -1)
    return float(np.mean(np.abs(error)) if metric == "mae" else np.mean(error**2))


def _per_task(raw: Any, tasks: list[_Task]) -> dict[str, np.ndarray]:
    """A model's outputs (array, list or dict) by task name."""
    if isinstance(raw, Mapping):
        return {task.name: raw[task.name] for task in tasks}
    if isinstance(raw, list | tuple):
        return {task.name: raw[task.position] for task in tasks}
    return {tasks[0].name: raw}


def _structure(model: keras.Model, tasks: list[_Task], values: list[Any]) -> Any:
    """`values` (one per task) in the structure of the model's outputs: dict, list or one."""
    structure = _model_output(model)
    if isinstance(structure, Mapping):
        return {task.name: value for task, value in zip(tasks, values, strict=True)}
    if isinstance(structure, list | tuple):
        ordered = [None] * len(tasks)
        for task, value in zip(tasks, values, strict=True):
            ordered[task.position] = value
        return ordered
    return values[0]


def _label_structure(model: keras.Model, tasks: list[_Task], labels: dict[str, np.ndarray]) -> Any:
    return _structure(model, tasks, [labels[task.name] for task in tasks])


def _probabilities(task: _Task) -> bool:
    return not getattr(task.loss, "from_logits", False)


def _keras_scores(
    model: keras.Model, tasks: list[_Task], x: np.ndarray, y: dict[str, np.ndarray]
) -> dict[str, float]:
    # direct calls, not predict(): predict traces a new function per model and warns about it
    batches = [
        _per_task(model(x[i : i + 256], training=False), tasks) for i in range(0, len(x), 256)
    ]
    return {
        task.name: _score(
            task.metric,
            np.concatenate([keras.ops.convert_to_numpy(b[task.name]) for b in batches]),
            y[task.name],
            _probabilities(task),
        )
        for task in tasks
    }


def _tflite_scores(
    flatbuffer: bytes, tasks: list[_Task], x: np.ndarray, y: dict[str, np.ndarray]
) -> dict[str, float]:
    names = tfc.inspect(flatbuffer).output_names
    outputs = run_tflite(flatbuffer, x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    scores = {}
    for task in tasks:
        position = names.index(task.name) if task.name in names else task.position
        scores[task.name] = _score(
            task.metric, outputs[position], y[task.name], _probabilities(task)
        )
    return scores


def _scores_text(scores: dict[str, float], tasks: list[_Task]) -> str:
    if len(tasks) == 1:
        return f"{tasks[0].metric} {scores[tasks[0].name]:.4f}"
    return ", ".join(f"{task.name} {task.metric} {scores[task.name]:.4f}" for task in tasks)


def _count(labels: Labels) -> int:
    if isinstance(labels, Mapping):
        return len(next(iter(labels.values())))
    return len(labels)


def _functional(model: keras.Model) -> keras.Model:
    """A subclassed model as the functional graph of its layers (what every step rewrites),
    compiled as it was."""
    if not needs_tracing(model):
        return model
    traced = traced_model(model, "compress")
    config = model.get_compile_config() if model.compiled else None
    if config:
        traced.compile_from_config(config)
    return traced


def _load_model(
    model: keras.Model | str | os.PathLike,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
) -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    if is_tf_keras(model):  # a Keras 2 model in memory: the same Keras 3 rebuild as its file
        return legacy.rebuild(model, custom_objects=custom_objects, safe_mode=safe_mode)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(
            f"Model file '{path}' does not exist: pass a .keras or .h5 file or a SavedModel folder."
        )
    # compiled when the file says how: its loss and metrics tell what each output learns (the
    # saved optimizer state is not used: every step compiles its own optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return tfc.load_model(
            path, compile=True, safe_mode=safe_mode, custom_objects=custom_objects
        )


def _load_data(
    data: DataSource, training: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(data, str) and data == "digits":
        split = tfc.data.load_digits()
        return split.x_train, split.y_train, split.x_test, split.y_test
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"data as a tuple must be (x, y); got {len(data)} items.")
        arrays = {"x": data[0], "y": data[1]}
    elif isinstance(data, Mapping):
        arrays = dict(data)
    else:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(
                f"Data file '{path}' does not exist: pass an .npz file or 'digits'."
            )
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    y = _labels_in(arrays, "y")
    if "x" not in arrays or y is None:
        raise ValueError(
            f"The data has arrays {sorted(arrays)}; it needs 'x' (inputs) and 'y' (labels: class "
            "ids, one-hot rows or targets; y_NAME per output for a model with several), and may "
            "have 'x_test' and 'y_test': np.savez(path, x=inputs, y=labels)."
        )
    x = np.asarray(arrays["x"], "float32")
    for name, labels in y.items() if isinstance(y, dict) else [("y", y)]:
        if len(labels) != len(x):
            raise ValueError(f"The data's x has {len(x)} samples but {name} has {len(labels)}.")
    y_test = _labels_in(arrays, "y_test")
    if "x_test" in arrays and y_test is not None:
        return x, y, np.asarray(arrays["x_test"], "float32"), y_test
    order = np.random.default_rng(training["seed"]).permutation(len(x))
    held = max(1, int(round(len(x) * training["holdout"])))
    if held >= len(x):
        raise ValueError(f"training.holdout {training['holdout']} leaves no training data.")
    test, train = order[:held], order[held:]
    return x[train], _take(y, train), x[test], _take(y, test)


def _labels_in(arrays: Mapping[str, Any], key: str) -> Labels | None:
    """`arrays[key]` (an array, or a dict of arrays by output), or the `KEY_NAME` arrays by NAME."""
    if key in arrays:
        value = arrays[key]
        if isinstance(value, Mapping):
            return {name: np.asarray(labels) for name, labels in value.items()}
        if isinstance(value, list | tuple):
            return {str(i): np.asarray(labels) for i, labels in enumerate(value)}
        return np.asarray(value)
    prefix = f"{key}_"
    named = {
        name[len(prefix) :]: np.asarray(value)
        for name, value in arrays.items()
        if name.startswith(prefix) and not (key == "y" and name.startswith("y_test"))
    }
    return named or None


def _take(labels: Labels, rows: np.ndarray) -> Labels:
    if isinstance(labels, dict):
        return {name: values[rows] for name, values in labels.items()}
    return labels[rows]


def _layer_sparsity(report: Any) -> dict[str, float]:
    """Fraction of zero weights of every constant kernel (2 or more dimensions) in the file."""
    sparsity = {}
    for tensor in report.tensors:
        if not tensor.is_constant or tensor.buffer is None or len(tensor.shape) < 2:
            continue
        values = np.asarray(tensor.buffer)
        zero = 0
        if tensor.quantization is not None and len(tensor.quantization.zero_point) == 1:
            zero = tensor.quantization.zero_point[0]
        sparsity[tensor.name] = float(np.mean(values == zero)) if values.size else 0.0
    return sparsity


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"Output '{output}' is a file; pass a folder path with -o.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Output folder '{output}' is not empty; pass --overwrite (overwrite=True) to replace "
            "it, or choose a new folder."
        )


def _write_atomically(output: Path, overwrite: bool, write: Callable[[Path], Any]) -> None:
    """Write into a temporary sibling folder, then rename it into place (all or nothing)."""
    _check_output(output, overwrite)  # again: training took minutes, somebody may have written
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=parent))
    old = None
    try:
        write(staging)
        os.chmod(staging, 0o755)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=parent))
            os.rmdir(old)
            os.replace(output, old)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not output.exists():
            os.replace(old, output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
