"""Parameter sharing: weight clustering and low-rank factorization."""

from tfcompress.sharing.clustering import (
    CentroidInitialization,
    ClusterableLayer,
    ClusterCustomWeights,
    ClusterWeights,
    cluster_weights,
    strip_clustering,
)
from tfcompress.sharing.factorization import FactorizationReport, factorize
from tfcompress.sharing.qat import quantize_clustered_model

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
