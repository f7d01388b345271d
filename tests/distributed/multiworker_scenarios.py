"""Train every compression scenario under MultiWorkerMirroredStrategy, or single-process.

Run as a script, this module is one process: a worker of a 2-worker cluster (`--role worker`,
`TF_CONFIG` set by the launcher) or the single-process reference (`--role single`). Each trains
the five scenarios one after another on the same data in the same order with the same global
batch and writes, per scenario, the final weights to `<out>/<role><index>_<scenario>.npz` and
the wall-clock of each scenario to `<out>/<role><index>_times.json`.

`launch()` starts the two workers and the reference (127.0.0.1, free ports, CPU only), bounds
them in time and kills every child on failure. Tests and `benchmarks/multiworker_bench.py` use it.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SCENARIOS = ("qat_minmax", "qat_lsq", "pruning", "clustering", "distiller")
GLOBAL_BATCH = 32
EPOCHS = 2
SAMPLES = 256


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    """The `TF_CONFIG` of worker `index` of a local cluster on `ports`."""
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A CPU-only environment for a child process that imports TensorFlow quietly."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def launch(
    out: Path,
    timeout: float = 420.0,
    scenarios: tuple[str, ...] = SCENARIOS,
    sequential: bool = False,
) -> dict[str, float]:
    """Run the 2-worker cluster and the single-process reference; return wall-clock seconds.

    Args:
        out: directory for the `.npz` files and logs.
        timeout: seconds allowed for all processes together; after it every child is killed.
        scenarios: which scenarios to train.
        sequential: run the reference after the cluster instead of beside it (for timing).

    Raises:
        RuntimeError: a process failed or ran out of time (its log tail is in the message).
    """
    out.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    ports = _free_ports(2)
    base = [sys.executable, script, "--out", str(out), "--scenarios", ",".join(scenarios)]
    deadline = time.monotonic() + timeout
    processes: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}
    walls: dict[str, float] = {}

    def start(name: str, args: list[str], env: dict[str, str]) -> None:
        logs[name] = out / f"{name}.log"
        with open(logs[name], "w") as log:
            processes.append(
                subprocess.Popen(base + args, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def wait(group: list[subprocess.Popen], names: list[str]) -> None:
        begin = time.monotonic()
        for process, name in zip(group, names, strict=True):
            left = deadline - time.monotonic()
            try:
                code = process.wait(timeout=max(left, 1.0))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{name} ran past {timeout} s:\n{_tail(logs[name])}") from None
            if code != 0:
                raise RuntimeError(f"{name} exited with {code}:\n{_tail(logs[name])}")
        walls[",".join(names)] = time.monotonic() - begin

    try:
        for index in range(2):
            env = child_env({"TF_CONFIG": tf_config(ports, index)})
            start(f"worker{index}", ["--role", "worker", "--index", str(index)], env)
        if not sequential:
            start("single0", ["--role", "single"], child_env())
            wait(processes, ["worker0", "worker1", "single0"])
        else:
            wait(processes, ["worker0", "worker1"])
            start("single0", ["--role", "single"], child_env())
            wait(processes[2:], ["single0"])
    finally:
        _stop(processes)
    return walls


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


# -- inside a worker -----------------------------------------------------------------------------


def _small_cnn(seed: int, width: int = 4):  # noqa: ANN202 - keras imported lazily
    """Conv-ReLU-pool-Dense: no BatchNormalization, whose batch statistics are per replica."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _compile(model, learning_rate: float = 0.05):  # noqa: ANN001, ANN202
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _train(name: str, strategy, x, y, files: Path, losses: dict):  # noqa: ANN001, ANN202
    """Build, compile and train scenario `name` under `strategy`; return the model whose weights
    are compared (the student for the Distiller). The single-process reference uses `fit`. The
    pruning scenario also writes a `ModelCheckpoint` to `<files>_pruned.keras` (only the chief
    writes under several workers); `losses[name]` gets the loss of each epoch."""
    import keras

    import tfcompress as tfc
    from tfcompress.distribute import fit as distributed_fit
    from tfcompress.pruning import ConstantSparsity, UpdatePruningStep

    def train(model, callbacks=()):  # noqa: ANN001, ANN202
        if strategy.num_replicas_in_sync > 1:  # Keras's fit fails there (keras#20585)
            history = distributed_fit(
                model, x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, callbacks=list(callbacks)
            )
        else:
            fit = {"batch_size": GLOBAL_BATCH, "epochs": EPOCHS, "shuffle": False, "verbose": 0}
            history = model.fit(x, y, callbacks=list(callbacks), **fit)
        losses[name] = [float(v) for v in history.history.get("loss", [])]
        return model

    with strategy.scope():
        if name in ("qat_minmax", "qat_lsq"):
            model = _compile(tfc.quantize_model(_small_cnn(0), learned_step=name == "qat_lsq"))
            return train(model)
        if name == "pruning":
            # begin 2, every 3 steps: the masks change several times inside the 16 global steps
            schedule = ConstantSparsity(0.5, begin_step=2, frequency=3)
            model = _compile(tfc.prune_low_magnitude(_small_cnn(0), schedule=schedule))
            checkpoint = keras.callbacks.ModelCheckpoint(f"{files}_pruned.keras")
            return train(model, [UpdatePruningStep(), checkpoint])
        if name == "clustering":
            clustered = tfc.cluster_weights(_small_cnn(0), number_of_clusters=4, init="linear")
            return train(_compile(clustered))
        if name != "distiller":
            raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}.")
        teacher = _small_cnn(1, width=8)
        distiller = tfc.Distiller(teacher=teacher, student=_small_cnn(2))
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            distillation_loss_fn=[
                tfc.distillation.LogitsKL(3),
                tfc.distillation.FeatureLoss("hidden"),
            ],
            alpha=0.3,
        )
        return train(distiller).student


def _weights(model) -> dict[str, object]:  # noqa: ANN001
    import numpy as np

    return {
        f"{index:03d}:{variable.path}": np.asarray(variable.numpy())
        for index, variable in enumerate(model.weights)
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--role", choices=("worker", "single"), required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

    import numpy as np
    import tensorflow as tf

    if args.role == "worker":
        from tfcompress.distribute import multi_worker_strategy

        # created first, before any other TensorFlow op, as the strategy requires
        strategy = multi_worker_strategy(timeout_seconds=120)
    else:
        strategy = tf.distribute.get_strategy()

    import tfcompress as tfc

    split = tfc.data.load_digits()
    x, y = split.x_train[:SAMPLES], split.y_train[:SAMPLES]
    times: dict[str, float] = {"replicas": float(strategy.num_replicas_in_sync)}
    losses: dict[str, list[float]] = {}
    for name in args.scenarios.split(","):
        begin = time.perf_counter()
        model = _train(name, strategy, x, y, args.out / f"{args.role}{args.index}", losses)
        times[name] = time.perf_counter() - begin
        np.savez(args.out / f"{args.role}{args.index}_{name}.npz", **_weights(model))
    (args.out / f"{args.role}{args.index}_times.json").write_text(json.dumps(times))
    (args.out / f"{args.role}{args.index}_losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
