"""Collaborative optimisation: one technique's result kept through another's training.

`PreserveSparsity` keeps a pruned model's zeros through fine-tuning (QAT included);
`quantize_clustered_model` is QAT that keeps a clustered model's shared values; the schemes of
`quantize_apply` (PQAT, CQAT, PCQAT) do the same inside tfmot's API. Their public names live in
`tfcompress.pruning`, `tfcompress.sharing` and `tfcompress.experimental.combine`.
"""

from tfcompress.collab.clusters import quantize_clustered_model
from tfcompress.collab.schemes import (
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
)
from tfcompress.collab.sparsity import PreserveSparsity, kernel_sparsity

__all__ = [
    "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme",
    "PreserveSparsity",
    "kernel_sparsity",
    "quantize_clustered_model",
]
