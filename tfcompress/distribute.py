"""Train a compressed model under any `tf.distribute` strategy, MultiWorkerMirroredStrategy included.

Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy` for every model
(keras-team/keras#20585: it reduces data batches and scalar logs with calls the collective
implementation rejects). The model's own `train_step` works there; `fit` below runs it with
`strategy.run` and drives the Keras callbacks the way `model.fit` does, so `UpdatePruningStep`,
`BackupAndRestore`, `ModelCheckpoint`, `EarlyStopping` and the returned `History` behave as
in `fit`.

`multi_worker_strategy()` creates the strategy after checking `TF_CONFIG`, whose mistakes
TensorFlow reports as a bare `JSONDecodeError` or a missing key.

Example:
    >>> import keras, numpy as np, tensorflow as tf, tfcompress as tfc
    >>> from tfcompress.distribute import fit
    >>> with tf.distribute.get_strategy().scope():
    ...     model = tfc.quantize_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    ...     model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> history = fit(model, np.ones((8, 4), "float32"), np.ones((8, 2), "float32"),
    ...               batch_size=4, epochs=2)
    >>> len(history.history["loss"])
    2
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["check_tf_config", "fit", "is_chief", "multi_worker_strategy"]

_TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'


def check_tf_config(value: str | None = None) -> dict[str, Any] | None:
    """Parse and check `TF_CONFIG` (the environment variable unless `value` is given).

    Args:
        value: the JSON text to check; None reads `os.environ["TF_CONFIG"]`.

    Returns:
        The parsed configuration, or None when the variable is unset or empty (one process).

    Raises:
        ValueError: the text is not JSON, or its `cluster` / `task` do not describe a task of
            the cluster; the message names TF_CONFIG, what is wrong and an example.

    Example:
        >>> check_tf_config('{"cluster": {"worker": ["127.0.0.1:2222"]},'
        ...                 ' "task": {"type": "worker", "index": 0}}')["task"]["index"]
        0
        >>> check_tf_config('{"cluster": ')
        Traceback (most recent call last):
        ...
        ValueError: TF_CONFIG is not valid JSON (Expecting value at character 12): ...
    """
    text = os.environ.get("TF_CONFIG", "") if value is None else value
    if not text.strip():
        return None

    def bad(what: str) -> ValueError:
        return ValueError(f"TF_CONFIG {what}: {text!r}. Expected e.g. {_TF_CONFIG_EXAMPLE}")

    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise bad(f"is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise bad("must be a JSON object")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise bad('has no "cluster" object mapping task types to lists of "host:port"')
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise bad(f'cluster "{kind}" must be a list of "host:port" strings')
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise bad('has no "task" object with "type" and "index"')
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise bad(f"task type {kind!r} is not in the cluster (types: {sorted(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise bad(f"task index {index!r} is outside 0..{len(cluster[kind]) - 1} for {kind!r}")
    return config


def multi_worker_strategy(timeout_seconds: float | None = None) -> Any:
    """`tf.distribute.MultiWorkerMirroredStrategy()` after `check_tf_config()`.

    Create it first in the program, before any other TensorFlow op, as TensorFlow requires.

    Args:
        timeout_seconds: bound on each collective (a worker that never starts then fails the
            others after this long instead of blocking them); None waits forever.

    Returns:
        The strategy.

    Raises:
        ValueError: `TF_CONFIG` is malformed (see `check_tf_config`).

    Example:
        >>> callable(multi_worker_strategy)  # a real cluster needs one process per worker
        True
    """
    import tensorflow as tf

    check_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes shared files: the chief, or worker 0 when there is none.

    Example:
        >>> is_chief()
        True
    """
    import tensorflow as tf

    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _dataset(x: Any, y: Any, batch_size: int | None) -> Any:
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if y is not None or batch_size is not None:
            raise ValueError(
                "tfcompress.distribute.fit: with a tf.data.Dataset pass neither y nor batch_size; "
                "the dataset yields (x, y) batches of the global batch size."
            )
        return x
    if y is None or batch_size is None:
        raise ValueError(
            "tfcompress.distribute.fit: with arrays pass x, y and batch_size (the global batch, "
            "split over the replicas)."
        )
    options = tf.data.Options()
    # every worker holds the same arrays: shard the batches, not files
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(int(batch_size))
    return dataset.with_options(options)


def fit(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int | None = None,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: Any = None,
    verbose: int = 0,
) -> keras.callbacks.History:
    """`model.fit` for any `tf.distribute` strategy, MultiWorkerMirroredStrategy included.

    Runs `model.train_step` on every replica with `strategy.run` (no shuffling: shuffle the
    dataset yourself with a fixed seed) and calls the callbacks as `fit` does: `on_train_begin`,
    `on_epoch_begin`, `on_train_batch_begin/end`, `on_epoch_end`, `on_train_end`, with logs
    averaged over the replicas. `BackupAndRestore` resumes at the epoch it saved; give it a
    backup_dir of its own per worker. On workers other than the chief, `ModelCheckpoint` writes
    into a temporary directory removed at the end (saving reads the metrics' variables, which
    takes every worker), so only the chief writes the path given.

    Args:
        model: compiled inside `strategy.scope()`.
        x: a `tf.data.Dataset` of `(inputs, targets)` global batches, or an array.
        y: targets when `x` is an array.
        batch_size: the global batch when `x` is an array.
        epochs: epochs to train.
        steps_per_epoch: batches per epoch; None runs each epoch to the end of the data.
        callbacks: Keras callbacks.
        strategy: defaults to the strategy the model was created under.
        verbose: 1 shows Keras's progress bar.

    Returns:
        The `History` callback, as `fit` returns it.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> model = tfc.prune_low_magnitude(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        >>> model.compile("sgd", "mse")
        >>> _ = fit(model, np.ones((8, 4), "float32"), np.ones((8, 2), "float32"),
        ...         batch_size=4, callbacks=[tfc.pruning.UpdatePruningStep()])
        >>> int(model.layers[0].pruning_step.numpy())
        1
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"tfcompress.distribute.fit: model '{model.name}' is not compiled; call "
            "model.compile(...) inside strategy.scope() first."
        )
    strategy = strategy or model.distribute_strategy
    batches = strategy.experimental_distribute_dataset(_dataset(x, y, batch_size))
    with strategy.scope():  # optimizer slots are variables: create them in cross-replica context
        model.optimizer.build(model.trainable_variables)
    scratch = None
    if not is_chief(strategy):
        scratch = tempfile.mkdtemp(prefix="tfcompress_worker_checkpoint_")
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.ModelCheckpoint):
                callback.filepath = os.path.join(scratch, os.path.basename(callback.filepath))
    try:
        return _train(model, strategy, batches, epochs, steps_per_epoch, callbacks, verbose)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(
    model: keras.Model,
    strategy: Any,
    batches: Any,
    epochs: int,
    steps_per_epoch: int | None,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> keras.callbacks.History:
    import tensorflow as tf

    hooks = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )

    @tf.function
    def train_step(batch: Any) -> dict[str, Any]:
        logs = strategy.run(model.train_step, args=(batch,))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    model.stop_training = False
    model._initial_epoch = None  # BackupAndRestore sets it in on_train_begin
    hooks.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(model._initial_epoch or 0, epochs):
        model.reset_metrics()
        hooks.on_epoch_begin(epoch)
        iterator = iter(batches)
        step = 0
        while steps_per_epoch is None or step < steps_per_epoch:
            batch = next(iterator, None)  # a distributed iterator ends with StopIteration
            if batch is None:
                break
            hooks.on_train_batch_begin(step)
            logs = {k: float(np.asarray(v)) for k, v in train_step(batch).items()}
            hooks.on_train_batch_end(step, logs)
            step += 1
            if model.stop_training:
                break
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end(logs)
    return model.history
