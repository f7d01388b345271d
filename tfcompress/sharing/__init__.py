"""Parameter sharing: weight clustering and low-rank factorization."""

from tfcompress.sharing.clustering import ClusterWeights, cluster_weights, strip_clustering
from tfcompress.sharing.factorization import FactorizationReport, factorize

__all__ = [
    "ClusterWeights",
    "FactorizationReport",
    "cluster_weights",
    "factorize",
    "strip_clustering",
]
