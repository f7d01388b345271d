"""tfmot's clustering API (`tfmot.clustering.keras`) for Keras 3, with tfmot's names and meanings.

Code written for `tfmot.clustering.keras` runs with the import changed to
`tfcompress.clustering`. The work is done by `tfcompress.sharing` (`ClusterWeights`); the
differences from tfmot are listed in docs/guide/migrating_from_tfmot.md.

Example:
    >>> import keras
    >>> import tfcompress as tfc
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> clustered = tfc.clustering.cluster_weights(
    ...     model, number_of_clusters=3,
    ...     cluster_centroids_init=tfc.clustering.CentroidInitialization.LINEAR)
    >>> final = tfc.clustering.strip_clustering(clustered)
    >>> len(set(final.layers[0].get_weights()[0].ravel().tolist())) <= 3
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from tfcompress.sharing import clustering as _native
from tfcompress.sharing.clustering import (
    CentroidInitialization,
    ClusterableLayer,
    ClusterCustomWeights,
    ClusterWeights,
    strip_clustering,
)

# tfmot names tfcompress does not offer, and why (asked for, they raise a clear AttributeError)
NOT_PROVIDED = {
    "ClusteringAlgorithm": (
        "tfcompress always assigns each weight to its nearest centroid; a custom lookup "
        "(tfmot's ClusteringAlgorithm via get_clusterable_algorithm) is not supported. "
        "Return None from get_clusterable_algorithm."
    ),
    "ClusteringSummaries": (
        "use keras.callbacks.TensorBoard(histogram_freq=1): the centroids are ordinary "
        "trainable weights named '<layer>/cluster_centroids' and show up there."
    ),
}


def cluster_weights(
    to_cluster: keras.Model | keras.layers.Layer | list[keras.layers.Layer],
    number_of_clusters: int,
    cluster_centroids_init: CentroidInitialization | str = CentroidInitialization.KMEANS_PLUS_PLUS,
    cluster_per_channel: bool = False,
    preserve_sparsity: bool = False,
    **kwargs: Any,
) -> Any:
    """Wrap a model, a layer or a list of layers so their weights train clustered (tfmot's API).

    Args:
        to_cluster: a functional or Sequential `keras.Model`, one layer, or a list of layers.
        number_of_clusters: distinct values per weight tensor (per channel with
            `cluster_per_channel`); Python or numpy integer >= 2.
        cluster_centroids_init: a `CentroidInitialization` (LINEAR, RANDOM, DENSITY_BASED,
            KMEANS_PLUS_PLUS).
        cluster_per_channel: one set of centroids per output channel.
        preserve_sparsity: keep zero weights at zero (sparsity-preserving clustering).
        **kwargs: for a layer, the wrapper's keyword arguments (`name`, ...); for a model,
            the tfcompress keywords `layers` and `fold_batchnorm` (see
            `tfcompress.sharing.cluster_weights`).

    Returns:
        The clustered model, layer or list of layers. Fine-tune, then `strip_clustering`.

    Example:
        >>> import keras
        >>> layer = cluster_weights(keras.layers.Dense(4), number_of_clusters=2)
        >>> type(layer).__name__
        'ClusterWeights'
    """
    if isinstance(to_cluster, list | tuple):
        return [
            cluster_weights(
                layer,
                number_of_clusters,
                cluster_centroids_init,
                cluster_per_channel,
                preserve_sparsity,
                **kwargs,
            )
            for layer in to_cluster
        ]
    if isinstance(to_cluster, keras.Model):
        return _native.cluster_weights(
            to_cluster,
            number_of_clusters,
            init=cluster_centroids_init,
            per_channel=cluster_per_channel,
            preserve_sparsity=preserve_sparsity,
            **kwargs,
        )
    layer = _native.cluster_weights(
        to_cluster,
        number_of_clusters,
        init=cluster_centroids_init,
        per_channel=cluster_per_channel,
        preserve_sparsity=preserve_sparsity,
    )
    if kwargs:  # tfmot passes these to the wrapper layer (`name=`, ...): rebuild it with them
        config = {key: value for key, value in layer.get_config().items() if key != "layer"}
        layer = type(layer)(to_cluster, **{**config, **kwargs})
    return layer


@contextlib.contextmanager
def cluster_scope() -> Iterator[None]:
    """tfmot's deserialization scope; here the wrappers are registered, so it only adds names.

    Files saved by tfcompress load without it; it is kept so tfmot code runs unchanged.

    Example:
        >>> with cluster_scope():
        ...     keras.saving.get_registered_object("ClusterWeights").__name__
        'ClusterWeights'
    """
    with keras.saving.custom_object_scope(
        {"ClusterWeights": ClusterWeights, "ClusterCustomWeights": ClusterCustomWeights}
    ):
        yield


def __getattr__(name: str) -> Any:
    if name in NOT_PROVIDED:
        raise AttributeError(f"tfcompress.clustering has no {name}: {NOT_PROVIDED[name]}")
    if name in ("clusterable_layer", "experimental"):
        import importlib

        return importlib.import_module(f"tfcompress.clustering.{name}")
    raise AttributeError(f"module 'tfcompress.clustering' has no attribute '{name}'")


__all__ = [
    "CentroidInitialization",
    "ClusterableLayer",
    "cluster_scope",
    "cluster_weights",
    "clusterable_layer",
    "experimental",
    "strip_clustering",
]
