"""Training callbacks: advance the pruning step, log sparsity, feed loss-aware scores."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.pruning.prune import pruned_layers


def _wrappers(model: keras.Model | None, what: str) -> list:
    if model is None:
        raise ValueError(
            f"{what} has no model: in a custom training loop call callback.set_model(model) "
            "before its other methods (fit does this for you)."
        )
    wrappers = pruned_layers(model)
    if not wrappers:
        raise ValueError(
            f"{what}: model '{model.name}' has no PruneLowMagnitude layer; wrap it with "
            "tfcompress.prune_low_magnitude first."
        )
    unbuilt = [w.name for w in wrappers if not w.built]
    if unbuilt:
        raise ValueError(
            f"{what}: the pruned layers {unbuilt} of model '{model.name}' are not built yet. "
            "Give the model its input shape (keras.Input, or input_shape= on the first layer) "
            "or call model.build(...) before training."
        )
    return wrappers


@keras.saving.register_keras_serializable(package="tfcompress")
class UpdatePruningStep(keras.callbacks.Callback):
    """Advances every wrapper's `pruning_step` before each training batch (required in `fit`).

    Each batch sets the step to one more than the value held in the model, so a model reloaded
    from `.keras`, or restored by `keras.callbacks.BackupAndRestore` in any callback order,
    resumes its schedule where it stopped. Without this callback the first training step fails
    with a message that names it.

    In a custom training loop call `set_model(model)`, then `on_train_begin()`,
    `on_train_batch_begin(batch=-1)` before each step and `on_epoch_end(batch=-1)` after each
    epoch (tfmot's signatures are accepted: `batch=` on `on_epoch_end`, arguments optional).

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> model = tfc.prune_low_magnitude(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4, verbose=0,
        ...               callbacks=[tfc.pruning.UpdatePruningStep()])
        >>> int(model.layers[0].pruning_step.numpy())
        1
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start()

    def _start(self) -> None:
        self._layers = _wrappers(self.model, "UpdatePruningStep")
        steps = [wrapper.pruning_step for wrapper in self._layers]

        # The next step is read from the variables, never from a counter kept here: another
        # callback (BackupAndRestore) may restore them after this one's on_train_begin.
        @tf.function(autograph=False)
        def advance() -> None:
            current = tf.reduce_max(tf.stack([tf.cast(v, tf.int64) for v in steps]))
            for variable in steps:  # one graph call per batch, not one eager op per layer
                variable.assign(tf.cast(current + 1, variable.dtype))

        self._advance = advance

    def on_train_batch_begin(self, batch: int = -1, logs: dict | None = None) -> None:
        if not hasattr(self, "_advance"):  # a custom loop that skipped on_train_begin
            self._start()
        self._advance()

    def on_epoch_end(
        self, epoch: int = -1, logs: dict | None = None, *, batch: int | None = None
    ) -> None:
        """Put the zeros back (the last optimizer step moved masked weights off zero).

        `batch=` is tfmot's name for the unused first argument; both are accepted.
        """
        self._apply_masks()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._apply_masks()

    def _apply_masks(self) -> None:
        for wrapper in getattr(self, "_layers", None) or _wrappers(self.model, "UpdatePruningStep"):
            wrapper.apply_masks()

    def get_config(self) -> dict[str, Any]:
        return {}


def _scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar written with core TF only (`tf.summary.scalar` needs tensorboard)."""
    metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)


@keras.saving.register_keras_serializable(package="tfcompress")
class PruningSummaries(keras.callbacks.Callback):
    """Writes TensorBoard scalars per pruned layer at each epoch end: `<layer>/sparsity` and
    `<layer>/threshold` (the smallest kept score), plus the schedule's target sparsity.

    In a custom training loop (tfmot's comprehensive guide) call `set_model(model)` and then
    `on_epoch_begin(epoch=-1)` at each epoch: outside `fit`, every `on_epoch_begin` writes and
    flushes the current values, as tfmot's callback does.

    Args:
        log_dir: TensorBoard log directory (a `pruning` subdirectory is written).
        update_freq: "epoch" or an integer number of batches.

    Example:
        >>> import tempfile, tfcompress as tfc
        >>> callback = tfc.pruning.PruningSummaries(tempfile.mkdtemp())
        >>> callback.update_freq
        'epoch'
    """

    def __init__(self, log_dir: str, update_freq: str | int = "epoch", **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(
                f"PruningSummaries takes log_dir and update_freq; {sorted(kwargs)} are tfmot's "
                "keras.callbacks.TensorBoard options, which it does not forward. Add a "
                "keras.callbacks.TensorBoard(log_dir, ...) callback beside it for those."
            )
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"log_dir must be a directory path; got {log_dir!r}.")
        if update_freq != "epoch" and (not isinstance(update_freq, int) or update_freq < 1):
            raise ValueError(
                f"update_freq must be 'epoch' or an integer >= 1; got {update_freq!r}."
            )
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._in_fit = False
        self._writer: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._in_fit = True
        self._open()

    def _open(self) -> None:
        self._layers = _wrappers(self.model, "PruningSummaries")
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(f"{self.log_dir}/pruning")

    def on_epoch_begin(self, epoch: int = -1, logs: dict | None = None) -> None:
        if not self._in_fit:  # custom loop: tfmot's callback logs here
            self._open()
            self._write()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.update_freq != "epoch" and (batch + 1) % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch: int = -1, logs: dict | None = None) -> None:
        if self._in_fit:
            self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._in_fit = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self) -> None:
        step = max(int(keras.ops.convert_to_numpy(w.pruning_step)) for w in self._layers)
        with self._writer.as_default(step=step):
            for wrapper in self._layers:
                name = wrapper.layer.name
                _scalar(f"{name}/sparsity", wrapper.sparsity(), step)
                for index, threshold in enumerate(wrapper.thresholds):
                    suffix = "" if index == 0 else f"_{index}"
                    value = float(keras.ops.convert_to_numpy(threshold))
                    _scalar(f"{name}/threshold{suffix}", value, step)
                _scalar(f"{name}/target_sparsity", wrapper.schedule.sparsity_at(step), step)
        self._writer.flush()

    def get_config(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir, "update_freq": self.update_freq}


@keras.saving.register_keras_serializable(package="tfcompress")
class TaylorScores(keras.callbacks.Callback):
    """Feeds the loss-aware criterion: before each batch where some wrapper will prune, computes
    |dL/dw| on a fixed scoring batch so the mask keeps the weights with the largest |w * dL/dw|
    (first-order Taylor estimate of the loss change when removing a weight).

    Put it after `UpdatePruningStep` in the callbacks of a model pruned with
    `criterion="taylor"`.

    Args:
        x: inputs of the scoring batch (a few hundred samples are plenty).
        y: their targets.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> callback = tfc.pruning.TaylorScores(np.zeros((4, 8, 8, 1)), np.zeros(4))
        >>> callback.x.shape
        (4, 8, 8, 1)
    """

    def __init__(self, x: Any, y: Any) -> None:
        super().__init__()
        self.x = np.asarray(x)
        self.y = np.asarray(y)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._layers = [w for w in _wrappers(self.model, "TaylorScores") if w.criterion == "taylor"]
        if not self._layers:
            raise ValueError(
                "TaylorScores: no layer was pruned with criterion='taylor'; pass "
                "criterion='taylor' to prune_low_magnitude."
            )
        if self.model.loss is None:
            raise ValueError("TaylorScores needs a compiled model (it uses the model's loss).")

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        due = any(bool(w.schedule(w.pruning_step)[0]) for w in self._layers)
        if due:
            self._score()

    def _score(self) -> None:
        kernels = [kernel for wrapper in self._layers for kernel in wrapper.kernels]
        with tf.GradientTape() as tape:
            outputs = self.model(self.x, training=False)
            loss = self.model.compute_loss(x=self.x, y=self.y, y_pred=outputs)
        gradients = tape.gradient(loss, [k.value for k in kernels])
        gradients = iter(gradients)
        for wrapper in self._layers:
            for score in wrapper.gradient_scores:
                gradient = next(gradients)
                score.assign(tf.zeros_like(score) if gradient is None else tf.abs(gradient))

    def get_config(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}
