"""Collaborative optimization schemes for `quantize_apply` (tfmot.experimental.combine names).

PQAT keeps a pruned model's zeros through QAT (the wrapper's sparsity mask, as
`PreserveSparsity` does for plain training); CQAT keeps a clustered model's shared values
(per-tensor scales and frozen kernels, as `quantize_clustered_model`); PCQAT does both.
"""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.quantization.scheme import QuantizeScheme


@keras.saving.register_keras_serializable(package="tfcompress")
class Default8BitPrunePreserveQuantizeScheme(QuantizeScheme):
    """Sparsity-preserving int8 QAT (PQAT): pruned weights stay zero in the int8 file.

    Example:
        >>> import keras
        >>> from tfcompress.quantization import quantize_annotate_model, quantize_apply
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> qat = quantize_apply(quantize_annotate_model(model),
        ...                      Default8BitPrunePreserveQuantizeScheme())
        >>> qat.layers[2].preserve_sparsity
        True
    """

    def __init__(self) -> None:
        super().__init__(preserve_sparsity=True)

    def get_config(self) -> dict[str, Any]:
        return {}


@keras.saving.register_keras_serializable(package="tfcompress")
class Default8BitClusterPreserveQuantizeScheme(QuantizeScheme):
    """Cluster-preserving int8 QAT (CQAT; PCQAT with `preserve_sparsity=True`).

    Each kernel gets one per-tensor scale and is frozen, so it keeps at most as many distinct
    values as it had clusters; biases, BatchNormalization and activation ranges still train.

    Args:
        preserve_sparsity: also keep the zeros of a pruned-then-clustered model (PCQAT).

    Example:
        >>> Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True).get_config()
        {'preserve_sparsity': True}
    """

    def __init__(self, preserve_sparsity: bool = False) -> None:
        super().__init__(preserve_sparsity=preserve_sparsity, preserve_clusters=True)

    def get_config(self) -> dict[str, Any]:
        return {"preserve_sparsity": self.preserve_sparsity}
