"""tfmot's pruning API (`tfmot.sparsity.keras`) on Keras 3, with tfmot's names and meanings.

Code written for tfmot runs with `tfmot.sparsity.keras` changed to `tfc.sparsity`. Where
tfcompress's own API (`tfc.pruning`) means something else by the same numbers, this module
converts explicitly: `sparsity_m_by_n=(M, N)` is M zeros in every N weights here (tfmot), and
each pruned layer reaches the schedule's sparsity by itself (tfmot's per-layer rule), where
`tfc.prune_low_magnitude` spreads it over the model (LAMP) by default.

Example:
    >>> import keras, tfcompress as tfc
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> pruned = tfc.sparsity.prune_low_magnitude(
    ...     model, pruning_schedule=tfc.sparsity.ConstantSparsity(0.5, begin_step=0))
    >>> type(pruned.layers[0]).__name__
    'PruneLowMagnitude'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from tfcompress.pruning import prune as _prune
from tfcompress.pruning.callbacks import PruningSummaries, UpdatePruningStep
from tfcompress.pruning.prune import get_model_sparsity, strip_pruning
from tfcompress.pruning.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    is_integer,
    plain_number,
)
from tfcompress.pruning.wrapper import PrunableLayer, PruneLowMagnitude
from tfcompress.sparsity.policy import PruneForLatencyOnXNNPack, PruningPolicy

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "get_model_sparsity",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]


def _kept_per_group(sparsity_m_by_n: Any) -> tuple[int, int] | None:
    """tfmot's (zeros, group) as tfcompress's (kept, group)."""
    if sparsity_m_by_n is None:
        return None
    valid = (
        isinstance(sparsity_m_by_n, list | tuple)
        and len(sparsity_m_by_n) == 2
        and all(is_integer(v) for v in sparsity_m_by_n)
        and 0 < plain_number(sparsity_m_by_n[0]) < plain_number(sparsity_m_by_n[1])
    )
    if not valid:
        raise ValueError(
            "sparsity_m_by_n=(M, N) sets M zeros in every N consecutive weights, with "
            f"0 < M < N, like (2, 4); got {sparsity_m_by_n!r}."
        )
    zeros, group = (int(plain_number(v)) for v in sparsity_m_by_n)
    return group - zeros, group


def prune_low_magnitude(
    to_prune: keras.Model | keras.layers.Layer | list,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_policy: PruningPolicy | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
    **kwargs: Any,
) -> Any:
    """tfmot's `prune_low_magnitude`: wrap a model, a layer or a list of layers for pruning.

    Args:
        to_prune: a built functional or Sequential model, a layer, or a list of layers.
        pruning_schedule: default `ConstantSparsity(0.5, begin_step=0, frequency=100)`, as
            tfmot. Every pruned layer reaches the schedule's sparsity (tfmot's per-layer rule).
        block_size: prune (rows, columns) blocks of each kernel seen as a matrix.
        block_pooling_type: a block's score: `"AVG"` (mean magnitude) or `"MAX"` (largest).
        pruning_policy: a `PruningPolicy` (e.g. `PruneForLatencyOnXNNPack()`): the model is
            checked first, then only the layers it allows are wrapped. Models only.
        sparsity_m_by_n: `(M, N)`: M ZEROS in every N consecutive input weights (tfmot's
            meaning; (2, 4) is 2:4 sparsity). Converted to tfcompress's
            `sparsity_n_m=(N - M, N)`, which counts the kept weights.
        **kwargs: for a single layer, passed to the wrapper (e.g. `name=`).

    Returns:
        The wrapped model, layer, or list of layers. Layers that have nothing to prune
        (Flatten, pooling, ...) are left unwrapped, where tfmot wraps them with nothing to do.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> layer = tfc.sparsity.prune_low_magnitude(keras.layers.Dense(4), sparsity_m_by_n=(1, 4))
        >>> _ = layer(np.ones((1, 8), "float32"))
        >>> layer.sparsity_n_m  # one zero in four: three kept
        (3, 4)
    """
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    _prune.refuse_legacy_keras(to_prune, "tfc.sparsity.prune_low_magnitude")
    options = {
        "schedule": pruning_schedule,
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_n_m": _kept_per_group(sparsity_m_by_n),
    }
    if isinstance(to_prune, list):
        return [_wrap_layer(layer, options, pruning_policy, {}) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                f"prune_low_magnitude: {sorted(kwargs)} only apply to a single layer's wrapper; "
                "a model takes pruning_schedule, block_size, block_pooling_type, "
                "pruning_policy and sparsity_m_by_n."
            )
        layers = None
        if pruning_policy is not None:
            _check_policy(pruning_policy)
            pruning_policy.ensure_model_supports_pruning(to_prune)
            layers = [
                layer.name for layer in to_prune.layers if pruning_policy.allow_pruning(layer)
            ]
        return _prune.prune_low_magnitude(to_prune, **options, layers=layers, allocation="uniform")
    if isinstance(to_prune, keras.layers.Layer):
        if pruning_policy is not None:
            raise ValueError(
                "prune_low_magnitude: pruning_policy checks a whole model; pass the model, or "
                "wrap the layer without a policy."
            )
        return _wrap_layer(to_prune, options, None, kwargs)
    raise ValueError(
        "prune_low_magnitude prunes a keras.Sequential or functional model, a keras layer or a "
        f"list of layers; got {type(to_prune).__name__}."
    )


def _check_policy(policy: Any) -> None:
    if not isinstance(policy, PruningPolicy):
        raise TypeError(
            "pruning_policy must be a tfc.sparsity.PruningPolicy such as "
            f"PruneForLatencyOnXNNPack(); got {type(policy).__name__}."
        )


def _wrap_layer(
    layer: Any, options: dict[str, Any], policy: PruningPolicy | None, extra: dict[str, Any]
) -> Any:
    _prune.refuse_legacy_keras(layer, "tfc.sparsity.prune_low_magnitude")
    if isinstance(layer, PruneLowMagnitude | keras.layers.InputLayer):
        return layer
    return PruneLowMagnitude(layer, **options, **extra)


@contextlib.contextmanager
def prune_scope() -> Iterator[None]:
    """tfmot's scope for loading a pruned model; harmless here, as tfcompress registers its
    classes. It also resolves the bare class names older files may use.

    Example:
        >>> import keras, tempfile, os, tfcompress as tfc
        >>> model = tfc.sparsity.prune_low_magnitude(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        >>> path = os.path.join(tempfile.mkdtemp(), "pruned.keras")
        >>> model.save(path)
        >>> with tfc.sparsity.prune_scope():
        ...     loaded = keras.models.load_model(path)
        >>> type(loaded.layers[0]).__name__
        'PruneLowMagnitude'
    """
    objects = {
        "PruneLowMagnitude": PruneLowMagnitude,
        "ConstantSparsity": ConstantSparsity,
        "PolynomialDecay": PolynomialDecay,
        "UpdatePruningStep": UpdatePruningStep,
        "PruningSummaries": PruningSummaries,
    }
    with keras.saving.custom_object_scope(objects):
        yield
