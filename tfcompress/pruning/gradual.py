"""Training-time channel pruning that ends in a physically smaller model.

`StructuredPruning` is a callback: on the steps its schedule (`PolynomialDecay`,
`ConstantSparsity`) names, it scores the channels of every prunable channel group (the groups of
`prune_channels`: a Conv/Dense layer's outputs, followed through BatchNormalization, activations,
depthwise convolutions and merged across residual adds and squeeze-excite multiplies) and masks
the lowest-scoring `sparsity` share of each group. A masked channel is zero everywhere: the
producing kernels and biases, and the biases, scales and shifts of the depthwise convolutions and
BatchNormalization layers on the way, so it adds nothing to the layers that read it. The masks are
applied again after every batch, so the model seen by `evaluate`, `save` or the next step is
always the masked one.

`strip_channels` then removes the zeroed channels (with `prune_channels`' rebuild): a model with
fewer parameters computing the same function as the masked one. It reads the zeros from the
weights, so it also works on a masked model saved to `.keras` and loaded in another process.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.pruning.schedules import PruningSchedule
from tfcompress.pruning.structured import (
    _ChannelGroups,
    _is_producer,
    _trace,
    apply_keep,
)

_log = logging.getLogger("tfcompress")
_CRITERIA = ("l1", "l2")


def _channel_variables(
    model: keras.Model, groups: _ChannelGroups, of_tensor: dict[int, int | None]
) -> dict[int, list[tuple[Any, int]]]:
    """`{group root: [(variable, channel axis), ...]}`: what must be zero for a channel to be
    absent, for every prunable group."""

    def root(tensor: Any) -> int | None:
        group = of_tensor.get(id(tensor))
        if group is None or groups.find(group) in groups.fixed:
            return None
        return groups.find(group)

    out: dict[int, list[tuple[Any, int]]] = {}
    for layer in model.layers:
        if _is_producer(layer):
            group = root(layer.output)
            if group is not None:
                out.setdefault(group, []).append((layer.kernel, -1))
                if getattr(layer, "bias", None) is not None:
                    out[group].append((layer.bias, 0))
        elif catalog.is_depthwise(layer) and layer.depth_multiplier == 1:
            group = root(layer.input)
            if group is not None:
                out.setdefault(group, []).append((layer.kernel, -2))
                if getattr(layer, "bias", None) is not None:
                    out[group].append((layer.bias, 0))
        elif isinstance(layer, keras.layers.BatchNormalization):
            group = root(layer.input)
            if group is not None:
                for name in ("gamma", "beta", "moving_mean"):
                    variable = getattr(layer, name, None)
                    if variable is not None:
                        out.setdefault(group, []).append((variable, 0))
    return out


def _alive(variables: list[tuple[Any, int]]) -> np.ndarray:
    """Per channel: nonzero in at least one of `variables` (False: a masked channel)."""
    alive = None
    for variable, axis in variables:
        values = np.moveaxis(keras.ops.convert_to_numpy(variable), axis, -1)
        nonzero = np.any(values.reshape(-1, values.shape[-1]) != 0, axis=0)
        alive = nonzero if alive is None else alive | nonzero
    assert alive is not None
    return alive


def _names(groups: _ChannelGroups, group: int) -> str:
    return ", ".join(layer.name for layer in groups.producers[group])


@keras.saving.register_keras_serializable(package="tfcompress")
class StructuredPruning(keras.callbacks.Callback):
    """Mask whole channels during `fit` on a schedule; `strip_channels` then removes them.

    Args:
        schedule: a `PruningSchedule` (`PolynomialDecay`, `ConstantSparsity`) giving, per
            optimizer step, whether to update the masks and the share of each channel group to
            mask.
        criterion: channel score, `"l1"` or `"l2"` norm of the producing kernels (summed over
            the group's producers, each relative to its mean, as `prune_channels` scores).
        max_fraction: most channels any one group may lose, in (0, 1); None: the schedule's
            sparsity as given, and a group it would empty is an error.

    Attributes:
        left_whole: `{producer layer names: why}` for the groups that cannot be pruned by
            channel (they reach an output, a Flatten, a Concatenate, a shared layer).
        masked: `{producer layer names: [masked, total]}` after the last update.

    Example:
        >>> import numpy as np
        >>> from tfcompress.models import build_digits_cnn, compile_classifier
        >>> from tfcompress.pruning import ConstantSparsity
        >>> model = compile_classifier(build_digits_cnn(width=8))
        >>> x, y = np.random.rand(32, 8, 8, 1), np.random.randint(0, 10, 32)
        >>> pruning = StructuredPruning(ConstantSparsity(0.5, begin_step=0, frequency=1))
        >>> _ = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[pruning])
        >>> small = strip_channels(model)
        >>> small.count_params() < model.count_params()
        True
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        criterion: str = "l1",
        max_fraction: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            raise ValueError(
                "StructuredPruning needs a tfcompress PruningSchedule (PolynomialDecay or "
                f"ConstantSparsity) as schedule; got {type(schedule).__name__}."
            )
        if criterion not in _CRITERIA:
            raise ValueError(f"criterion must be one of {_CRITERIA}; got {criterion!r}.")
        if max_fraction is not None and not 0.0 < max_fraction < 1.0:
            raise ValueError(f"max_fraction must be in (0, 1) or None; got {max_fraction!r}.")
        self.schedule = schedule
        self.criterion = criterion
        self.max_fraction = max_fraction
        self.left_whole: dict[str, str] = {}
        self.masked: dict[str, list[int]] = {}
        self._groups: _ChannelGroups | None = None
        self._variables: dict[int, list[tuple[Any, int]]] = {}
        self._masks: dict[int, np.ndarray] = {}
        self._traced: Any = None

    def _final_sparsity(self) -> float:
        end = self.schedule.end_step if self.schedule.end_step >= 0 else self.schedule.begin_step
        return self.schedule.sparsity_at(max(end, self.schedule.begin_step))

    def _removed(self, size: int, sparsity: float) -> int:
        count = int(round(size * sparsity))
        if self.max_fraction is not None:
            count = min(count, int(np.floor(self.max_fraction * size)), size - 1)
        return count

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._traced is self.model:
            return
        groups, of_tensor = _trace(self.model)
        self._groups = groups
        self._variables = _channel_variables(self.model, groups, of_tensor)
        self.left_whole = groups.left_whole()
        if not self._variables:
            raise ValueError(
                f"StructuredPruning: no channel group of '{self.model.name}' can be pruned by "
                "channel; left whole: "
                + "; ".join(f"{names} ({why})" for names, why in self.left_whole.items())
            )
        final = self._final_sparsity()
        for group in self._variables:
            size = groups.producers[group][0].kernel.shape[-1]
            if self._removed(size, final) >= size:
                raise ValueError(
                    f"StructuredPruning: the schedule's final sparsity {final} removes every "
                    f"channel of '{_names(groups, group)}' ({size} channels). Lower the "
                    "schedule's final sparsity, or pass max_fraction (e.g. 0.9) to keep some "
                    "channels in every group."
                )
        if self.left_whole:
            _log.info("StructuredPruning leaves whole: %s", self.left_whole)
        # a masked model loaded to resume training keeps its zeroed channels masked
        for group, variables in self._variables.items():
            alive = _alive(variables)
            if not alive.all():
                self._masks[group] = alive.astype("float32")
        self._traced = self.model

    def _scores(self, group: int) -> np.ndarray:
        total = 0.0
        for layer in self._groups.producers[group]:  # type: ignore[union-attr]
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            flat = kernel.reshape(-1, kernel.shape[-1])
            norms = np.abs(flat).sum(0) if self.criterion == "l1" else np.sqrt((flat**2).sum(0))
            total = total + norms / (norms.mean() + 1e-12)
        return np.asarray(total)

    def update_masks(self, sparsity: float) -> None:
        """Mask the lowest-scoring `sparsity` share of every prunable group now."""
        groups = self._groups
        assert groups is not None, "on_train_begin traces the model first"
        self.masked = {}
        for group in self._variables:
            scores = self._scores(group)
            removed = self._removed(scores.size, sparsity)
            mask = np.ones(scores.size, dtype="float32")
            mask[np.argsort(scores, kind="stable")[:removed]] = 0.0
            previous = self._masks.get(group)
            self._masks[group] = mask if previous is None else mask * previous
            self.masked[_names(groups, group)] = [
                int(scores.size - self._masks[group].sum()),
                int(scores.size),
            ]
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the masked channels of every variable they appear in."""
        for group, mask in self._masks.items():
            for variable, axis in self._variables[group]:
                shape = [1] * len(variable.shape)
                shape[axis] = mask.size
                variable.assign(variable * np.reshape(mask, shape).astype(variable.dtype))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        update, sparsity = self.schedule(step)
        if bool(update):
            self.update_masks(float(sparsity))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._masks:
            self.apply_masks()

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "criterion": self.criterion,
            "max_fraction": self.max_fraction,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StructuredPruning:
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def strip_channels(model: keras.Model, check: bool = True) -> keras.Model:
    """The model without its zeroed channels (after `StructuredPruning`): physically smaller,
    same function.

    A channel of a prunable group is removed when it is zero in every producing kernel and bias
    and in the depthwise biases and BatchNormalization scales, shifts and means on its way (what
    `StructuredPruning` masks). At least one channel of a group is kept.

    Args:
        model: a functional or Sequential model trained with `StructuredPruning` (or any model
            with zeroed channels); not modified.
        check: compare both models on a random batch and raise if they differ (a masked
            channel that does not reach its readers as zeros, e.g. through a sigmoid).

    Returns:
        A smaller plain Keras model; its `stripped_channels` attribute is
        `{producer layer names: [kept, total]}` per pruned group.

    Raises:
        ValueError: the stripped model computes something else than `model` (with `check`).

    Example:
        >>> import keras
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(6, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
        >>> kernel, bias = model.get_layer("hidden").get_weights()
        >>> kernel[:, :4] = 0.0
        >>> bias[:4] = 0.0
        >>> model.get_layer("hidden").set_weights([kernel, bias])
        >>> strip_channels(model).get_layer("hidden").units
        2
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            f"strip_channels expects a built functional or Sequential keras.Model; got "
            f"{type(model).__name__}."
        )
    groups, of_tensor = _trace(model)
    keep: dict[int, np.ndarray] = {}
    stripped: dict[str, list[int]] = {}
    for group, variables in _channel_variables(model, groups, of_tensor).items():
        alive = _alive(variables)
        if alive.all():
            continue
        if not alive.any():
            alive[0] = True
        keep[group] = np.flatnonzero(alive)
        stripped[_names(groups, group)] = [int(alive.sum()), int(alive.size)]
    small = apply_keep(model, groups, of_tensor, keep)
    if check:
        _check_same(model, small)
    small.stripped_channels = stripped
    return small


def _check_same(model: keras.Model, small: keras.Model) -> None:
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if any(None in shape for shape in shapes):
        return
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, *shape)).astype("float32") for shape in shapes]
    x = x[0] if len(x) == 1 else x
    expected = keras.tree.flatten(model(x, training=False))
    got = keras.tree.flatten(small(x, training=False))
    for a, b in zip(expected, got, strict=True):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        scale = float(np.abs(a).max()) + 1e-6
        if not np.allclose(a, b, atol=1e-4 * scale, rtol=1e-4):
            raise ValueError(
                f"strip_channels: removing the zeroed channels of '{model.name}' changes its "
                f"outputs (max difference {float(np.abs(a - b).max()):.3g}): a zeroed channel "
                "does not reach the layers that read it as zeros (an activation with f(0) != 0, "
                "such as sigmoid, between its producer and a Conv/Dense). Leave that group "
                "unmasked, or pass check=False to strip it anyway."
            )
