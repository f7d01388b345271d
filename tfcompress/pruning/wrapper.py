"""`PruneLowMagnitude`: a thin wrapper that keeps a binary mask over a layer's kernels."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import catalog, compat
from tfcompress.core.graph import fresh_copy
from tfcompress.core.wrappers import TrainingLayer
from tfcompress.pruning.schedules import (
    ConstantSparsity,
    PruningSchedule,
    is_integer,
    is_real,
    plain_number,
)

CRITERIA = ("magnitude", "taylor")
POOLING_TYPES = ("AVG", "MAX")
LEGACY_ROUTE = (
    "it is a legacy tf_keras (Keras 2) object, and tfcompress works on Keras 3 models. Either "
    "take the legacy route (tensorflow_model_optimization with TF_USE_LEGACY_KERAS=1 in the "
    "environment before TensorFlow is imported) or rebuild the model with `import keras` "
    "(Keras 3) and copy its weights over with set_weights."
)


class PrunableLayer(abc.ABC):
    """Mixin for a custom layer that says which of its weights are pruned.

    A layer that inherits it and implements `get_prunable_weights()` is accepted by
    `prune_low_magnitude`, and exactly the variables that method returns are pruned (it takes
    precedence over the built-in list, so a `Dense` subclass can have its bias pruned too).

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> class MyDense(keras.layers.Dense, tfc.sparsity.PrunableLayer):
        ...     def get_prunable_weights(self):
        ...         return [self.kernel, self.bias]
        >>> wrapped = tfc.sparsity.prune_low_magnitude(MyDense(4))
        >>> _ = wrapped(np.ones((1, 8), "float32"))
        >>> [tuple(mask.shape) for mask in wrapped.masks]
        [(8, 4), (4,)]
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list:
        """The layer's variables to prune (called once the layer is built)."""


MISSING_CALLBACK = (
    "Pruning step is -1: training a pruned model needs the callback "
    "tfcompress.pruning.UpdatePruningStep(); pass it to fit(callbacks=[...])."
)


def prunable_attributes(layer: keras.layers.Layer) -> tuple[str, ...] | None:
    """The attribute paths of `layer`'s prunable kernels, or None if it has none we know.

    A `PrunableLayer` gets `()`: its variables come from its `get_prunable_weights()`.
    """
    if isinstance(layer, PrunableLayer):
        return ()
    if type(layer) is keras.layers.RNN:  # around a built-in cell only (a custom one: unknown)
        cells = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
        return ("cell.kernel", "cell.recurrent_kernel") if type(layer.cell) in cells else None
    row = catalog.info(layer)
    return row.kernels if row is not None and row.kernels else None


def prunable_layer_names() -> str:
    return ", ".join(cls.__name__ for cls in catalog.classes(lambda row: bool(row.kernels)))


def _resolve(layer: keras.layers.Layer, path: str) -> keras.Variable:
    """The variable at `path` ("a.b", with "x|y" for alternative attribute names)."""
    owner: Any = layer
    for part in path.split("."):
        names = part.split("|")
        name = next((n for n in names if hasattr(owner, n)), names[-1])
        owner = getattr(owner, name)
    if not isinstance(owner, keras.Variable):
        raise ValueError(
            f"Layer '{layer.name}': '{path}' is not a plain variable (is the layer quantized or "
            "LoRA-enabled?); prune the float layer instead."
        )
    return owner


def prunable_variables(layer: keras.layers.Layer, attributes: Sequence[str]) -> list:
    """The variables to prune in built `layer`: its `get_prunable_weights()` for a
    `PrunableLayer`, else the variables at `attributes`."""
    if not isinstance(layer, PrunableLayer):
        return [_resolve(layer, path) for path in attributes]
    variables = list(layer.get_prunable_weights())
    for variable in variables:
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"Layer '{layer.name}': get_prunable_weights() must return the layer's "
                f"variables (self.kernel, ...); got a {type(variable).__name__}."
            )
    return variables


def _check_block(block_size: Any) -> tuple[int, int]:
    if (
        not isinstance(block_size, list | tuple)
        or len(block_size) != 2
        or not all(is_integer(b) and plain_number(b) >= 1 for b in block_size)
    ):
        raise ValueError(f"block_size must be two integers >= 1, like (1, 4); got {block_size!r}.")
    return int(plain_number(block_size[0])), int(plain_number(block_size[1]))


def _check_pooling(block_pooling_type: Any) -> str:
    if not isinstance(block_pooling_type, str) or block_pooling_type.upper() not in POOLING_TYPES:
        raise ValueError(
            "block_pooling_type scores each block by the mean ('AVG') or the largest ('MAX') "
            f"magnitude of its weights; got {block_pooling_type!r}."
        )
    return block_pooling_type.upper()


def _check_n_m(sparsity_n_m: Any) -> tuple[int, int] | None:
    if sparsity_n_m is None:
        return None
    valid = (
        isinstance(sparsity_n_m, list | tuple)
        and len(sparsity_n_m) == 2
        and all(is_integer(v) for v in sparsity_n_m)
        and 0 < plain_number(sparsity_n_m[0]) < plain_number(sparsity_n_m[1])
    )
    if not valid:
        raise ValueError(
            f"sparsity_n_m keeps N of every M weights and must be (N, M) with 0 < N < M, like "
            f"(2, 4); got {sparsity_n_m!r}."
        )
    return int(plain_number(sparsity_n_m[0])), int(plain_number(sparsity_n_m[1]))


def magnitude_mask(
    scores: Any, sparsity: Any, block_size: tuple[int, int] = (1, 1), pooling: str = "AVG"
) -> Any:
    """A 0/1 mask (same shape as `scores`) keeping the largest `1 - sparsity` of the scores.

    With a `block_size` other than (1, 1), the kernel is seen as a matrix (inputs x outputs) and
    whole blocks are kept or dropped by their mean (`pooling="AVG"`) or largest (`"MAX"`) score.

    Example:
        >>> import numpy as np
        >>> mask = magnitude_mask(np.array([[1.0, -4.0], [3.0, 0.5]], "float32"), 0.5)
        >>> mask.numpy().tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    scores = tf.abs(tf.convert_to_tensor(scores, tf.float32))
    if block_size != (1, 1):
        return _block_mask(scores, sparsity, block_size, pooling)
    flat = tf.reshape(scores, [-1])
    size = tf.size(flat)
    keep = size - tf.cast(
        tf.round(tf.cast(sparsity, tf.float32) * tf.cast(size, tf.float32)), tf.int32
    )
    keep = tf.clip_by_value(keep, 1, size)
    drop = size - keep

    # top_k costs grow with k: select whichever side (kept or dropped) is smaller; indices from
    # top_k break ties, so exactly `keep` weights survive
    def mark_kept() -> Any:
        _, indices = tf.math.top_k(flat, k=keep, sorted=False)
        return tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.float32), [size])

    def mark_dropped() -> Any:
        _, indices = tf.math.top_k(-flat, k=drop, sorted=False)
        return 1.0 - tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.float32), [size])

    mask = tf.cond(keep <= drop, mark_kept, mark_dropped)
    return tf.reshape(mask, tf.shape(scores))


def _as_matrix(tensor: Any) -> Any:
    return tf.reshape(tensor, [-1, tf.shape(tensor)[-1]])


def _block_mask(scores: Any, sparsity: Any, block_size: tuple[int, int], pooling: str) -> Any:
    matrix = _as_matrix(scores)
    rows, columns = block_size
    pool = tf.nn.max_pool2d if pooling == "MAX" else tf.nn.avg_pool2d
    pooled = pool(matrix[None, :, :, None], block_size, block_size, "SAME")[0, :, :, 0]
    block_mask = magnitude_mask(pooled, sparsity)
    expanded = tf.repeat(tf.repeat(block_mask, rows, axis=0), columns, axis=1)
    expanded = expanded[: tf.shape(matrix)[0], : tf.shape(matrix)[1]]
    return tf.reshape(expanded, tf.shape(scores))


def n_m_mask(scores: Any, n: int, m: int) -> Any:
    """Keep the `n` largest of every `m` consecutive weights along the input axis (2:4 sparsity).

    Example:
        >>> import numpy as np
        >>> kernel = np.array([[1.0], [-5.0], [2.0], [0.1]], "float32")  # 4 inputs, 1 output
        >>> n_m_mask(kernel, 2, 4).numpy()[:, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    scores = tf.abs(tf.convert_to_tensor(scores, tf.float32))
    matrix = _as_matrix(scores)  # (inputs, outputs)
    groups = tf.reshape(tf.transpose(matrix), [-1, m])  # consecutive inputs of one output
    _, indices = tf.math.top_k(groups, k=n)
    mask = tf.reduce_sum(tf.one_hot(indices, m), axis=1)
    return tf.reshape(
        tf.transpose(tf.reshape(mask, tf.shape(tf.transpose(matrix)))), tf.shape(scores)
    )


@keras.saving.register_keras_serializable(package="tfcompress")
class PruneLowMagnitude(TrainingLayer, keras.layers.Wrapper):
    """Wraps a layer so that its kernels are pruned during training by a schedule.

    For each prunable kernel the wrapper keeps a non-trainable 0/1 `mask` and the `threshold`
    (the smallest kept score), plus one `pruning_step` shared by its kernels. In training, when
    the schedule says so, the masks are recomputed from the scores (|w| by default, |w * dL/dw|
    with `criterion="taylor"`); the kernel is multiplied by its mask before every call, in
    training and in inference. The inner layer's trainable weights, losses and `training`
    argument are forwarded unchanged.

    Args:
        layer: a Dense, EinsumDense, Conv1D/2D/3D, Conv*Transpose, DepthwiseConv1D/2D,
            SeparableConv1D/2D, Embedding or MultiHeadAttention layer.
        schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, begin_step=0)`.
        block_size: prune whole (rows, columns) blocks of the kernel seen as a matrix.
        block_pooling_type: how a block is scored: `"AVG"` (mean magnitude, default) or
            `"MAX"` (largest magnitude).
        sparsity_n_m: `(N, M)` keeps the N largest of every M consecutive inputs (2:4 = `(2, 4)`);
            the schedule then only says when to prune.
        criterion: `"magnitude"` or `"taylor"` (first-order, loss-aware; scores are fed by
            `tfcompress.pruning.TaylorScores`).
        density_scales: one factor per kernel: when the schedule asks for sparsity `s`, kernel
            `i` is pruned to `clip(1 - (1 - s) * density_scales[i], 0, 1)`. Default all 1 (every
            kernel at `s`). `prune_low_magnitude(..., allocation=...)` sets them so that `s` is
            the sparsity of the whole model.

    Example:
        >>> import keras, numpy as np
        >>> layer = PruneLowMagnitude(keras.layers.Dense(4), ConstantSparsity(0.5, 0))
        >>> _ = layer(np.ones((1, 8), "float32"))
        >>> int(layer.pruning_step.numpy()), [tuple(m.shape) for m in layer.masks]
        (-1, [(8, 4)])
    """

    technique = "pruned"
    strip_function = "strip_pruning"

    def strip(self) -> keras.layers.Layer:
        """A copy of the inner layer whose kernels hold the masked (pruned) values."""
        inner = fresh_copy(self.layer)
        owners = prunable_variables(inner, self.attributes)
        for owner, mask in zip(owners, self.masks, strict=True):
            values = keras.ops.convert_to_numpy(owner) * keras.ops.convert_to_numpy(mask)
            owner.assign(values.astype(np.dtype(owner.dtype)))
        return inner

    def __init__(
        self,
        layer: keras.layers.Layer,
        schedule: PruningSchedule | None = None,
        block_size: tuple[int, int] = (1, 1),
        sparsity_n_m: tuple[int, int] | None = None,
        criterion: str = "magnitude",
        density_scales: Sequence[float] | None = None,
        block_pooling_type: str = "AVG",
        **kwargs: Any,
    ):
        if compat.is_tf_keras(layer):
            raise TypeError(f"Cannot prune {type(layer).__name__} '{layer.name}': {LEGACY_ROUTE}")
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"PruneLowMagnitude wraps a keras layer; got {type(layer).__name__}.")
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer '{layer.name}' is already wrapped for pruning.")
        attributes = prunable_attributes(layer)
        if attributes is None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has no kernel to prune; prunable "
                f"layers are {prunable_layer_names()}, and any layer that implements "
                "tfcompress.sparsity.PrunableLayer. Leave it out of "
                "prune_low_magnitude(..., layers=[...])."
            )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        # Sequential([wrapper(Dense(..., input_shape=...)), ...]) takes its input from the first
        # layer's input_shape: forward it, or the model is only built inside fit
        if getattr(layer, "_input_shape_arg", None) is not None:
            self._input_shape_arg = layer._input_shape_arg
        schedule = ConstantSparsity(0.5, begin_step=0) if schedule is None else schedule
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(
                f"schedule must be a tfcompress.pruning schedule (ConstantSparsity or "
                f"PolynomialDecay); got {type(schedule).__name__}."
            )
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}.")
        self.schedule = schedule
        self.block_size = _check_block(block_size)
        self.block_pooling_type = _check_pooling(block_pooling_type)
        self.sparsity_n_m = _check_n_m(sparsity_n_m)
        self.criterion = criterion
        self.attributes = attributes
        self._requested_scales = density_scales or None  # [] from an unbuilt PrunableLayer's config
        self.density_scales = (
            [] if isinstance(layer, PrunableLayer) else self._check_scales(density_scales)
        )
        self._passes_training = "training" in inspect.signature(layer.call).parameters

    def _check_scales(self, scales: Sequence[float] | None) -> list[float]:
        if scales is None:
            return [1.0] * len(self.attributes)
        valid = (
            isinstance(scales, list | tuple)
            and len(scales) == len(self.attributes)
            and all(is_real(v) and plain_number(v) >= 0 for v in scales)
        )
        if not valid:
            raise ValueError(
                f"Layer '{self.layer.name}': density_scales needs one number >= 0 per prunable "
                f"kernel ({', '.join(self.attributes)}); got {scales!r}."
            )
        return [float(plain_number(v)) for v in scales]

    # -- state ------------------------------------------------------------------------------
    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self._create_state()

    def get_build_config(self) -> dict[str, Any] | None:
        return self.layer.get_build_config()

    def build_from_config(self, config: dict[str, Any]) -> None:
        if not self.layer.built:
            self.layer.build_from_config(config)
        self._create_state()

    def _create_state(self) -> None:
        if self.built:
            return
        self.kernels = prunable_variables(self.layer, self.attributes)
        if isinstance(self.layer, PrunableLayer):
            self.attributes = tuple(v.path for v in self.kernels)
            self.density_scales = self._check_scales(self._requested_scales)
        if self.sparsity_n_m is not None:
            self._check_n_m_shapes()
        options = {"trainable": False, "aggregation": "only_first_replica"}
        self.masks, self.thresholds, self.gradient_scores = [], [], []
        for index, kernel in enumerate(self.kernels):
            self.masks.append(
                self.add_weight(
                    name=f"mask_{index}", shape=kernel.shape, initializer="ones", **options
                )
            )
            self.thresholds.append(
                self.add_weight(name=f"threshold_{index}", shape=(), initializer="zeros", **options)
            )
            if self.criterion == "taylor":
                self.gradient_scores.append(
                    self.add_weight(
                        name=f"gradient_score_{index}",
                        shape=kernel.shape,
                        initializer="ones",
                        **options,
                    )
                )
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(-1),
            **options,
        )
        self.built = True

    def _check_n_m_shapes(self) -> None:
        m = self.sparsity_n_m[1]
        for path, kernel in zip(self.attributes, self.kernels, strict=True):
            inputs = int(np.prod(kernel.shape[:-1]))
            if len(kernel.shape) < 2 or inputs % m:
                raise ValueError(
                    f"Layer '{self.layer.name}': {path} has {inputs} inputs per output, not a "
                    f"multiple of M={m} for sparsity_n_m={self.sparsity_n_m}. Leave the layer out "
                    "or use a schedule instead."
                )

    # -- pruning ----------------------------------------------------------------------------
    def _scores(self, index: int) -> Any:
        kernel = tf.convert_to_tensor(self.kernels[index])
        if self.criterion == "taylor":
            return tf.abs(kernel * self.gradient_scores[index])
        return tf.abs(kernel)

    def kernel_sparsity(self, sparsity: Any, index: int) -> Any:
        """The sparsity of kernel `index` when the schedule asks for `sparsity`."""
        scale = self.density_scales[index]
        if scale == 1.0:
            return sparsity
        overall = tf.cast(sparsity, tf.float32)
        return tf.clip_by_value(1.0 - (1.0 - overall) * scale, 0.0, 1.0)

    def update_masks(self, sparsity: Any) -> Any:
        """Recompute every mask for `sparsity` (called by the schedule; public for tests)."""
        for index, mask_variable in enumerate(self.masks):
            scores = self._scores(index)
            if self.sparsity_n_m is not None:
                mask = n_m_mask(scores, *self.sparsity_n_m)
            else:
                target = self.kernel_sparsity(sparsity, index)
                mask = magnitude_mask(scores, target, self.block_size, self.block_pooling_type)
            mask_variable.assign(tf.cast(mask, mask_variable.dtype))
            kept = tf.where(mask > 0, scores, tf.constant(np.inf, scores.dtype))
            self.thresholds[index].assign(tf.cast(tf.reduce_min(kept), "float32"))
        return tf.constant(True)

    def _maybe_update_masks(self) -> Any:
        step = tf.convert_to_tensor(self.pruning_step)
        tf.debugging.assert_greater_equal(step, tf.constant(0, tf.int64), message=MISSING_CALLBACK)
        should_update, sparsity = self.schedule(step)
        return tf.cond(
            should_update, lambda: self.update_masks(sparsity), lambda: tf.constant(False)
        )

    def _refuse_missing_step(self) -> None:
        """Fail before training starts, in one line, when no `UpdatePruningStep` drives the step.

        The step is read when the training function is traced (after the callbacks'
        `on_train_batch_begin`); where it cannot be read then (a distributed variable), the
        in-graph check of `_maybe_update_masks` still stops training.
        """
        try:
            with tf.init_scope():
                step = int(keras.ops.convert_to_numpy(self.pruning_step))
        except Exception:  # noqa: BLE001 - unreadable here: the in-graph check decides
            return
        if step < 0:
            raise ValueError(f"Layer '{self.name}': {MISSING_CALLBACK}")

    def apply_masks(self) -> None:
        for kernel, mask in zip(self.kernels, self.masks, strict=True):
            kernel.assign(kernel * tf.cast(mask, kernel.dtype))

    def call(self, inputs: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        if training:
            self._refuse_missing_step()
            replica = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and replica is not None:
                # masks are shared by all replicas: update them once, in cross-replica context
                replica.merge_call(lambda _strategy: self._maybe_update_masks())
            else:
                self._maybe_update_masks()
        self.apply_masks()
        if self._passes_training:
            kwargs["training"] = training
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, *args: Any, **kwargs: Any) -> Any:
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def sparsity(self) -> float:
        """Measured fraction of zeros over the masked kernels."""
        zeros = sum(float(np.sum(keras.ops.convert_to_numpy(m) == 0)) for m in self.masks)
        return zeros / sum(int(np.prod(m.shape)) for m in self.masks)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_n_m": None if self.sparsity_n_m is None else list(self.sparsity_n_m),
            "criterion": self.criterion,
            "density_scales": list(self.density_scales),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruneLowMagnitude:
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        config["block_size"] = tuple(config["block_size"])
        if config.get("sparsity_n_m") is not None:
            config["sparsity_n_m"] = tuple(config["sparsity_n_m"])
        return cls(**config)
