"""Kill-and-resume matrix: every compressed model type, killed with SIGKILL and resumed.

Each scenario (model type x BackupAndRestore save frequency x kill point) trains the same seeded
model on the same data three ways:

* uninterrupted: one `fit` for all epochs;
* killed: a child process trains with `keras.callbacks.BackupAndRestore` and sends itself
  SIGKILL before a chosen global batch (`kill_at`);
* resumed: a fresh model (same seed) in this process calls `fit` again with the same backup
  directory, as a user's restarted job would.

It reports the largest absolute difference between the resumed and the reference model over
every model and optimizer variable (pruning step, masks, thresholds, QAT ranges and learned
steps, centroids, projections, optimizer moments and iteration count).

Keras 3 `BackupAndRestore` records only the epoch in progress, not the batch: after a save
taken in the middle of an epoch (integer `save_freq`), the resumed job replays that epoch from
its first batch, starting from the mid-epoch weights. For those scenarios the reference is the
"replayed" run: the same batches in the same order without any kill (saved batches, then the
whole epoch again), which is what an exact resume of that schedule must give; the difference
from the plain uninterrupted run is reported beside it.

Run: `.venv/bin/python benchmarks/resume_bench.py` (writes benchmarks/results/resume.json);
`--child SPEC.json` is the internal mode of the killed process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tests` and `tfcompress` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

KINDS = ("float", "qat", "lsq", "pruning", "clustering", "distiller")
SAMPLES = 96
BATCH = 16
STEPS_PER_EPOCH = SAMPLES // BATCH  # 6
EPOCHS = 3
SEED = 7


@dataclass(frozen=True)
class Scenario:
    """One kill-and-resume run: what is trained, how often it is backed up, where it is killed."""

    kind: str
    save_freq: str | int  # "epoch" or a number of batches
    kill_at: int  # global batch index (0-based) before which the process is killed

    @property
    def name(self) -> str:
        return f"{self.kind}/save_{self.save_freq}/kill_{self.kill_at}"


def data() -> tuple[np.ndarray, np.ndarray]:
    """The first SAMPLES digits, in a fixed order."""
    from tfcompress.data import load_digits

    split = load_digits()
    return split.x_train[:SAMPLES].astype("float32"), split.y_train[:SAMPLES].astype("int32")


def _cnn(name: str, width: int = 4) -> Any:
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def build(kind: str) -> tuple[Any, list[Any]]:
    """A compiled model of `kind`, seeded, and the tfcompress callbacks its training needs."""
    import keras

    import tfcompress as tfc
    from tfcompress.distillation import FeatureLoss, LogitsKL

    keras.utils.set_random_seed(SEED)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    callbacks: list[Any] = []
    if kind == "distiller":
        teacher = _cnn("teacher", width=8)
        student = _cnn("student", width=4)
        model = tfc.Distiller(teacher=teacher, student=student)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            student_loss_fn=loss,
            distillation_loss_fn=[LogitsKL(2.0), FeatureLoss("relu1")],  # 4 -> 8 projection
            alpha=0.5,
        )
        return model, callbacks
    model = _cnn(kind)
    if kind == "qat":
        model = tfc.quantize_model(model)
    elif kind == "lsq":
        model = tfc.quantize_model(model, weight_bits=4, learned_step=True)
    elif kind == "pruning":
        schedule = tfc.pruning.PolynomialDecay(
            initial_sparsity=0.1, final_sparsity=0.7, begin_step=0, end_step=15, frequency=2
        )
        model = tfc.prune_low_magnitude(model, schedule)
        callbacks.append(tfc.pruning.UpdatePruningStep())
    elif kind == "clustering":
        model = tfc.cluster_weights(model, number_of_clusters=4)
    elif kind != "float":
        raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}.")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    return model, callbacks


def state(model: Any) -> dict[str, np.ndarray]:
    """Every model and optimizer variable by path (optimizer built if training has not begun)."""
    import keras

    # keyed by position and short name: paths differ between two builds of one model (unique
    # names) and between a model and its reloaded copy (nested layers)
    values = {
        f"model/{index:03d}/{v.name}": keras.ops.convert_to_numpy(v)
        for index, v in enumerate(model.variables)
    }
    optimizer = model.optimizer
    if optimizer is not None and optimizer.built:
        for index, variable in enumerate(optimizer.variables):
            kind = variable.name.rsplit("_", 1)[-1]  # momentum, velocity, iteration...
            values[f"optimizer/{index:03d}/{kind}"] = keras.ops.convert_to_numpy(variable)
    return values


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    """The largest absolute difference over the shared variables and the variable it is in."""
    if a.keys() != b.keys():
        raise AssertionError(f"different variables: {sorted(a.keys() ^ b.keys())}")
    worst, where = 0.0, ""
    for key, value in a.items():
        diff = float(np.max(np.abs(value.astype("float64") - b[key].astype("float64")), initial=0))
        if diff > worst:
            worst, where = diff, key
    return worst, where


class _Interrupt(Exception):
    """Raised by `_Kill` in "raise" mode: an interruption without killing the process."""


def _killer(kill_at: int, mode: str) -> Any:
    import keras

    class _Kill(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if self.seen == kill_at:
                if mode == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise _Interrupt(f"interrupted before global batch {kill_at}")
            self.seen += 1

    return _Kill()


def fit(model: Any, callbacks: list[Any], backup: Any = None, **kwargs: Any) -> None:
    x, y = data()
    extra = [backup] if backup is not None else []
    model.fit(
        x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks + extra, **kwargs
    )


def _backup(scenario: Scenario, directory: Path) -> Any:
    import keras

    return keras.callbacks.BackupAndRestore(str(directory), save_freq=scenario.save_freq)


def interrupted(scenario: Scenario, directory: Path, mode: str) -> None:
    """Train `scenario` until its kill point (mode "sigkill" ends this process there)."""
    model, callbacks = build(scenario.kind)
    # the killer goes first: it fires before any other callback sees the batch
    try:
        fit(
            model,
            [_killer(scenario.kill_at, mode), *callbacks],
            _backup(scenario, directory),
            epochs=EPOCHS,
        )
    except _Interrupt:
        return
    raise AssertionError(f"{scenario.name}: the kill point was never reached")


def resumed(scenario: Scenario, directory: Path) -> dict[str, np.ndarray]:
    """A restarted job: a fresh model, `fit` again with the same backup directory."""
    model, callbacks = build(scenario.kind)
    fit(model, callbacks, _backup(scenario, directory), epochs=EPOCHS)
    return state(model)


def uninterrupted(kind: str) -> dict[str, np.ndarray]:
    model, callbacks = build(kind)
    fit(model, callbacks, epochs=EPOCHS)
    return state(model)


def last_save(scenario: Scenario) -> tuple[int, int] | None:
    """(epoch recorded, global batches done) of the last backup before the kill, or None."""
    if scenario.save_freq == "epoch":
        epochs_done = scenario.kill_at // STEPS_PER_EPOCH
        return (epochs_done, epochs_done * STEPS_PER_EPOCH) if epochs_done else None
    done = (scenario.kill_at // scenario.save_freq) * scenario.save_freq
    return (max(done - 1, 0) // STEPS_PER_EPOCH, done) if done else None


def replayed(scenario: Scenario) -> dict[str, np.ndarray]:
    """The batches a resumed job runs, in order, without a kill: the reference of a resume."""
    saved = last_save(scenario)
    model, callbacks = build(scenario.kind)
    if saved is None:  # nothing was backed up: the restarted job starts from scratch
        fit(model, callbacks, epochs=EPOCHS)
        return state(model)
    epoch, done = saved
    whole, part = divmod(done, STEPS_PER_EPOCH)
    if whole:
        fit(model, callbacks, epochs=whole)
    if part:
        x, y = data()
        model.fit(
            x[: part * BATCH],
            y[: part * BATCH],
            batch_size=BATCH,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
            epochs=1,
        )
    fit(model, callbacks, epochs=EPOCHS, initial_epoch=epoch)
    return state(model)


def run_child(
    scenarios: list[Scenario],
    root: Path,
    continue_kinds: tuple[str, ...] = (),
    timeout: float = 900.0,
) -> int:
    """Run the child process: first it loads the `.keras` checkpoints of `continue_kinds` after
    `import tfcompress` alone and trains them one more epoch; then it runs the interrupted part
    of every scenario, the last one killed with SIGKILL, the others interrupted by an exception
    (one TensorFlow import for all).

    Returns the child's return code (-9 when a SIGKILL landed)."""
    spec = root / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "root": str(root),
                "continue": list(continue_kinds),
                "scenarios": [asdict(s) for s in scenarios],
            }
        )
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec)]
    completed = subprocess.run(command, env=environment, timeout=timeout, capture_output=True)
    expected = -signal.SIGKILL if scenarios else 0
    if completed.returncode != expected:
        raise RuntimeError(
            f"the child should end with {expected}; it returned {completed.returncode}:\n"
            f"{completed.stderr.decode(errors='replace')[-3000:]}"
        )
    return completed.returncode


def checkpoint_path(root: Path, kind: str) -> Path:
    return root / f"checkpoint_{kind}.keras"


def write_checkpoint(kind: str, root: Path) -> dict[str, np.ndarray]:
    """Train `kind` one epoch with `keras.callbacks.ModelCheckpoint` writing a `.keras` file,
    then train the in-memory model one more epoch: the reference for the reloaded file."""
    import keras

    model, callbacks = build(kind)
    saver = keras.callbacks.ModelCheckpoint(str(checkpoint_path(root, kind)))
    fit(model, [*callbacks, saver], epochs=1)
    keras.utils.set_random_seed(SEED)
    fit(model, callbacks, epochs=2, initial_epoch=1)
    return state(model)


def _continue_checkpoints(root: Path, kinds: list[str]) -> None:
    """In a fresh process: `import tfcompress` alone, then plain Keras loads each checkpoint and
    trains it one more epoch. Writes the states and how the loading went to root."""
    import keras

    import tfcompress  # noqa: F401 - the only tfcompress import before loading, as a user's

    report, models = {}, {}
    for kind in kinds:  # every load before any other tfcompress module is imported
        try:
            models[kind] = keras.saving.load_model(checkpoint_path(root, kind))
            report[kind] = "loaded after import tfcompress alone"
        except Exception as error:  # noqa: BLE001 - recorded, then loaded the explicit way
            report[kind] = f"plain load failed: {type(error).__name__}: {str(error)[:200]}"
    for kind in kinds:
        if kind not in models:
            from tfcompress.io import load_model

            models[kind] = load_model(checkpoint_path(root, kind))
        _, callbacks = build(kind)  # only for the callbacks; the loaded model is trained
        keras.utils.set_random_seed(SEED)
        fit(models[kind], callbacks, epochs=2, initial_epoch=1)
        np.savez(root / f"continued_{kind}.npz", **state(models[kind]))
    (root / "continue_report.json").write_text(json.dumps(report))


def continued(root: Path, kind: str) -> dict[str, np.ndarray]:
    with np.load(root / f"continued_{kind}.npz") as stored:
        return {key: stored[key] for key in stored.files}


def backup_dir(root: Path, scenario: Scenario) -> Path:
    return root / scenario.name.replace("/", "_")


def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    scenarios = [Scenario(**s) for s in spec["scenarios"]]
    if spec["continue"]:
        _continue_checkpoints(root, spec["continue"])
    for index, scenario in enumerate(scenarios):
        mode = "sigkill" if index == len(scenarios) - 1 else "raise"
        interrupted(scenario, backup_dir(root, scenario), mode)


def matrix() -> list[Scenario]:
    scenarios = []
    for kind in KINDS:
        scenarios.append(Scenario(kind, "epoch", STEPS_PER_EPOCH + 3))  # mid-epoch 1
        scenarios.append(Scenario(kind, "epoch", 2 * STEPS_PER_EPOCH))  # at the epoch boundary
        scenarios.append(Scenario(kind, 4, STEPS_PER_EPOCH + 3))  # mid-epoch, saved mid-epoch
        scenarios.append(Scenario(kind, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH))  # boundary
    return scenarios


def float_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """max_difference over the float variables only (not step or iteration counters)."""
    keep = [k for k, v in a.items() if np.issubdtype(v.dtype, np.floating)]
    return max_difference({k: a[k] for k in keep}, {k: b[k] for k in keep})[0]


if __name__ == "__main__":  # the child process the harness starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", required=True, help="internal: the child's part")
    arguments = parser.parse_args()
    _child(arguments.child)
