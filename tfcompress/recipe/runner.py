"""Run a recipe: train each step with the library's public API, convert, measure, write the folder."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.core.graph import clone_with_weights
from tfcompress.recipe.report import write_reports
from tfcompress.recipe.schema import Recipe, Step, load_recipe

Log = Callable[[str], None]
DataSource = str | os.PathLike | tuple | Mapping[str, np.ndarray]


@dataclass
class StepResult:
    """What one step did: its name, options, Keras accuracy on the held-out data, seconds."""

    name: str
    options: dict[str, Any]
    keras_accuracy: float
    seconds: float


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
) -> CompressResult:
    """Apply a recipe (prune / cluster / distill / qat steps, then convert) and write a report.

    The recipe is validated before anything is loaded or trained. The output folder is written
    atomically: it appears complete, or (on any error) not at all.

    Args:
        model: the float Keras classifier, or a `.keras` file.
        data: `(x, y)` arrays, a dict or `.npz` file with `x` and `y` (and optionally `x_test`,
            `y_test`), or `"digits"` for the built-in digits data. Without a test split, the
            recipe's `training.holdout` share is held out for measuring accuracy.
        recipe: a YAML file, YAML text, a dict or a `Recipe` (see `docs/guide/recipes.md`).
        output_dir: the folder to write: `model.tflite`, `report.md`, `report.html` (plots
            embedded) and `recipe.yaml` (the exact recipe used, every default filled in).
        overwrite: replace a non-empty `output_dir`; without it, a non-empty folder is an error.
        log: called with one line per progress message; `None` is silent.
        safe_mode: load a `.keras` file with Keras's safe mode (refuses Lambda layers' code).
        custom_objects: classes the `.keras` file needs (custom layers), by name.

    Returns:
        A `CompressResult` with the file's path and the measured figures.

    Raises:
        RecipeError: the recipe is invalid (the message names the line and what is allowed).
        FileExistsError: `output_dir` is not empty and `overwrite` is False.
        ValueError: the model is not what the recipe trains (one output of class scores with
            integer labels); the message says what to use instead.

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
    x_train, y_train, x_test, y_test = _load_data(data, recipe.training)
    float_model = _load_model(model, safe_mode, custom_objects)
    _check_task(float_model, y_train)
    training = recipe.training
    keras.utils.set_random_seed(training["seed"])
    from_logits = _from_logits(float_model, training["from_logits"])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

    float_accuracy = _keras_accuracy(float_model, x_test, y_test)
    say(
        f"input model '{float_model.name}': Keras accuracy {float_accuracy:.4f} on {len(y_test)} held-out samples"
    )
    state = _State(clone_with_weights(float_model))
    trainable = recipe.steps[:-1]
    results = []
    for number, step in enumerate(trainable, start=1):
        say(f"[{number}/{len(recipe.steps)}] {step.name} {_options_text(step)}")
        started = time.perf_counter()
        _STEPS[step.name](state, step, float_model, loss, x_train, y_train, training, say)
        accuracy = _keras_accuracy(state.model, x_test, y_test)
        seconds = time.perf_counter() - started
        say(f"      {step.name} done in {seconds:.1f} s: Keras accuracy {accuracy:.4f}")
        results.append(StepResult(step.name, dict(step.options), accuracy, seconds))

    convert_step = recipe.convert
    mode = convert_step.options["mode"]
    say(f"[{len(recipe.steps)}/{len(recipe.steps)}] convert {_options_text(convert_step)}")
    calibration = tfc.data.calibration_sample(x_train, convert_step.options["num_samples"])
    flatbuffer = tfc.convert(
        state.model,
        mode=mode,
        representative_data=calibration if mode in ("int8", "int16x8", "edgetpu") else None,
        num_samples=convert_step.options["num_samples"],
        sparsity=convert_step.options["sparsity"],
        per_channel=not state.clustered,  # keep k shared values per kernel in the int8 file
    )
    float_flatbuffer = tfc.convert(float_model, mode="float32")
    say("measuring the files on LiteRT...")
    report = tfc.inspect(flatbuffer)
    result = CompressResult(
        output_dir=output,
        tflite_path=output / "model.tflite",
        mode=mode,
        tflite_accuracy=tfc.evaluate_tflite(flatbuffer, x_test, y_test),
        float_accuracy=float_accuracy,
        float_tflite_accuracy=tfc.evaluate_tflite(float_flatbuffer, x_test, y_test),
        tflite_bytes=len(flatbuffer),
        float_tflite_bytes=len(float_flatbuffer),
        holdout_samples=len(y_test),
        steps=results,
        layer_sparsity=_layer_sparsity(report),
        edgetpu=tfc.edgetpu_report(report).to_dict() if mode in ("int8", "edgetpu") else None,
        float_ops=sorted(set(report.float_ops)),
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
        f"wrote {output}/: model.tflite ({len(flatbuffer):,} bytes, {mode}, LiteRT accuracy "
        f"{result.tflite_accuracy:.4f}), report.md, report.html, recipe.yaml"
    )
    return result


def run_from_cli(args: argparse.Namespace) -> int:
    """`tfcompress compress MODEL --data DATA --recipe RECIPE -o OUT [--overwrite]`."""
    recipe = load_recipe(args.recipe)  # a bad recipe fails before the model is read
    compress(
        args.model,
        args.data,
        recipe,
        args.output,
        overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        safe_mode=not args.unsafe,
        custom_objects=custom_objects_of(args.custom_objects),
    )
    return 0


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


def _prune(state: _State, step: Step, teacher, loss, x, y, training, say: Log) -> None:
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
    _fit(pruned, loss, x, y, options, training, say, [tfc.pruning.UpdatePruningStep()])
    state.model = tfc.strip_pruning(pruned)
    state.pruned = True


def _cluster(state: _State, step: Step, teacher, loss, x, y, training, say: Log) -> None:
    options = step.options
    clustered = tfc.cluster_weights(
        state.model,
        number_of_clusters=options["number_of_clusters"],
        init=options["init"],
        preserve_sparsity=state.pruned,
    )
    _fit(clustered, loss, x, y, options, training, say, [])
    state.model = tfc.strip_clustering(clustered)
    state.clustered = True


def _qat(state: _State, step: Step, teacher, loss, x, y, training, say: Log) -> None:
    if state.clustered:
        quantized = tfc.sharing.quantize_clustered_model(state.model)
    else:
        quantized = tfc.quantize_model(state.model)
    _fit(quantized, loss, x, y, step.options, training, say, _keep_zeros(state))
    state.model = quantized


def _distill(state: _State, step: Step, teacher, loss, x, y, training, say: Log) -> None:
    options = step.options
    distiller = tfc.Distiller(teacher=clone_with_weights(teacher), student=state.model)
    distiller.compile(
        optimizer=keras.optimizers.Adam(options["learning_rate"]),
        metrics=["accuracy"],
        student_loss_fn=loss,
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


_STEPS = {"prune": _prune, "cluster": _cluster, "qat": _qat, "distill": _distill}


def _keep_zeros(state: _State) -> list[keras.callbacks.Callback]:
    return [tfc.pruning.PreserveSparsity()] if state.pruned and not state.clustered else []


def _fit(model, loss, x, y, options, training, say: Log, callbacks: list) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(options["learning_rate"]), loss=loss, metrics=["accuracy"]
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
            f"{key} {value:.4f}" for key, value in logs.items() if key in ("loss", "accuracy")
        )
        self.say(f"      epoch {epoch + 1}: {figures}")


# -- helpers ---------------------------------------------------------------------------------------


def _options_text(step: Step) -> str:
    return ", ".join(f"{key}={value}" for key, value in step.options.items())


def _steps_per_epoch(x: np.ndarray, training: dict) -> int:
    return -(-len(x) // training["batch_size"])


def _keras_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    # direct calls, not predict(): predict traces a new function per model and warns about it
    batches = [model(x[i : i + 256], training=False) for i in range(0, len(x), 256)]
    predicted = np.concatenate([keras.ops.convert_to_numpy(b) for b in batches]).argmax(axis=-1)
    return float(np.mean(predicted == np.asarray(y).reshape(-1)))


def _from_logits(model: keras.Model, setting: Any) -> bool:
    if setting != "auto":
        return bool(setting)
    activation = getattr(model.layers[-1], "activation", None)
    name = getattr(activation, "__name__", "")
    return not (name == "softmax" or type(model.layers[-1]).__name__ == "Softmax")


def _check_task(model: keras.Model, labels: np.ndarray) -> None:
    """The recipe trains classifiers: one output of class scores, one integer label per sample."""
    outputs = keras.tree.flatten(model.output)
    scores = outputs[0].shape
    why = None
    if len(outputs) != 1:
        why = f"it has {len(outputs)} outputs"
    elif len(scores) != 2 or not scores[-1] or scores[-1] < 2:
        why = f"its output has shape {tuple(scores)}, not (batch, classes)"
    elif labels.ndim != 1 or not np.all(np.mod(labels, 1) == 0):
        why = f"its labels have shape {tuple(labels.shape)}, not one class id per sample"
    if why:
        raise ValueError(
            f"tfcompress compress trains classifiers (one output of class scores, integer labels), "
            f"and '{model.name}' is not one: {why}. Compress it with the Python API instead "
            "(tfcompress.quantize_model, prune_low_magnitude, cluster_weights with your own loss "
            "and fit), then tfcompress convert."
        )


def _load_model(
    model: keras.Model | str | os.PathLike,
    safe_mode: bool = True,
    custom_objects: dict | None = None,
) -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"Model file '{path}' does not exist: pass a .keras file.")
    if path.suffix != ".keras":
        raise ValueError(
            f"Model '{path}' is not a .keras file; save it with model.save('model.keras') first."
        )
    return tfc.load_model(path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects)


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
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise ValueError(
            f"The data has arrays {sorted(arrays)}; it needs 'x' (inputs) and 'y' (integer labels), "
            "and may have 'x_test' and 'y_test': np.savez(path, x=inputs, y=labels)."
        )
    x, y = np.asarray(arrays["x"], "float32"), np.asarray(arrays["y"])
    if len(x) != len(y):
        raise ValueError(f"The data's x has {len(x)} samples but y has {len(y)}.")
    if "x_test" in arrays and "y_test" in arrays:
        return x, y, np.asarray(arrays["x_test"], "float32"), np.asarray(arrays["y_test"])
    order = np.random.default_rng(training["seed"]).permutation(len(x))
    held = max(1, int(round(len(x) * training["holdout"])))
    if held >= len(x):
        raise ValueError(f"training.holdout {training['holdout']} leaves no training data.")
    test, train = order[:held], order[held:]
    return x[train], y[train], x[test], y[test]


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
