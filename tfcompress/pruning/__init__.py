"""Pruning for Keras 3: schedules, the PruneLowMagnitude wrapper, callbacks, strip_pruning,
N:M and block sparsity, a loss-aware criterion and sparse TFLite export.

Example:
    >>> import tfcompress as tfc
    >>> schedule = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    >>> schedule.sparsity_at(1000)
    0.8
"""

from tfcompress.collab.sparsity import PreserveSparsity, kernel_sparsity
from tfcompress.pruning.callbacks import PruningSummaries, TaylorScores, UpdatePruningStep
from tfcompress.pruning.channels import prune_channels
from tfcompress.pruning.gradual import StructuredPruning, strip_channels
from tfcompress.pruning.prune import (
    get_model_sparsity,
    prune_low_magnitude,
    pruned_layers,
    strip_pruning,
)
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfcompress.pruning.sparse import SparseRuntimeReport, check_sparse_runtime, convert_sparse
from tfcompress.pruning.structured import count_flops
from tfcompress.pruning.wrapper import PrunableLayer, PruneLowMagnitude, magnitude_mask, n_m_mask

__all__ = [
    "StructuredPruning",
    "strip_channels",
    "ConstantSparsity",
    "PolynomialDecay",
    "PreserveSparsity",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "SparseRuntimeReport",
    "TaylorScores",
    "UpdatePruningStep",
    "check_sparse_runtime",
    "convert_sparse",
    "count_flops",
    "get_model_sparsity",
    "kernel_sparsity",
    "magnitude_mask",
    "n_m_mask",
    "prune_channels",
    "prune_low_magnitude",
    "pruned_layers",
    "strip_pruning",
]
