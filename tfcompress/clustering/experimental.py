"""tfmot's `clustering.keras.experimental`: `cluster_weights` with `preserve_sparsity`.

The main `tfcompress.clustering.cluster_weights` takes `preserve_sparsity` too; this module
exists so code written against tfmot's experimental path runs with its import changed.

Example:
    >>> import keras
    >>> from tfcompress.clustering import experimental
    >>> layer = experimental.cluster_weights(keras.layers.Dense(4), 2, preserve_sparsity=True)
    >>> layer.preserve_sparsity
    True
"""

from tfcompress.clustering import cluster_weights

__all__ = ["cluster_weights"]
