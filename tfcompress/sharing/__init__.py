"""Parameter sharing: weight clustering and low-rank factorization."""

from tfcompress.collab.clusters import quantize_clustered_model
from tfcompress.sharing.clustering import (
    CentroidInitialization,
    ClusterableLayer,
    ClusterCustomWeights,
    ClusterWeights,
    cluster_weights,
    strip_clustering,
)
from tfcompress.sharing.factorization import FactorizationReport, factorize

__all__ = [
    "CentroidInitialization",
    "ClusterCustomWeights",
    "ClusterWeights",
    "ClusterableLayer",
    "FactorizationReport",
    "cluster_weights",
    "factorize",
    "quantize_clustered_model",
    "strip_clustering",
]
