"""Graph work shared by every feature: rebuilding a functional model and folding BatchNorm.

QAT, pruning, sharing (clustering, factorization) and PTQ recovery rewrite models through these
functions only.
"""

from tfcompress.graph.batchnorm import (
    FOLDABLE,
    FoldedBatchNormalization,
    batch_norm_pairs,
    fold_batch_norms,
    fold_into_kernel,
    folds_into,
    is_linear,
)
from tfcompress.graph.model import (
    DEPTHWISE,
    TRANSPOSED,
    built_like,
    check_model,
    clone_with_weights,
    fresh_copy,
    rebuild,
    selected_layers,
)

__all__ = [
    "DEPTHWISE",
    "FOLDABLE",
    "TRANSPOSED",
    "FoldedBatchNormalization",
    "batch_norm_pairs",
    "built_like",
    "check_model",
    "clone_with_weights",
    "fold_batch_norms",
    "fold_into_kernel",
    "folds_into",
    "fresh_copy",
    "is_linear",
    "rebuild",
    "selected_layers",
]
