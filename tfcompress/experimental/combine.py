"""Collaborative optimization schemes for `quantize_apply` (tfmot.experimental.combine names).

PQAT keeps a pruned model's zeros through QAT (the wrapper's sparsity mask, as
`tfcompress.pruning.PreserveSparsity` does for plain training); CQAT keeps a clustered model's
shared values (per-tensor scales and frozen kernels, as `quantize_clustered_model`); PCQAT does
both.
"""

from __future__ import annotations

import keras

from tfcompress.collab.schemes import (
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
)
from tfcompress.sharing.clustering import strip_clustering


def strip_clustering_cqat(model: keras.Model) -> keras.Model:
    """tfmot's `strip_clustering_cqat`: a CQAT model holds no clustering wrappers, so this is
    `strip_clustering` (it returns a copy without any ClusterWeights wrapper left).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> strip_clustering_cqat(model).count_params()
        10
    """
    return strip_clustering(model)


__all__ = [
    "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme",
    "strip_clustering_cqat",
]
