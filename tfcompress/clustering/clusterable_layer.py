"""tfmot's `clusterable_layer` module: the `ClusterableLayer` mixin.

Example:
    >>> from tfcompress.clustering import clusterable_layer
    >>> clusterable_layer.ClusterableLayer.__name__
    'ClusterableLayer'
"""

from tfcompress.sharing.clustering import ClusterableLayer

__all__ = ["ClusterableLayer"]
