"""Cluster-preserving quantization-aware training: QAT that keeps the shared values shared.

Also in `tfcompress.sharing` as `quantize_clustered_model`.
"""

from __future__ import annotations

import keras

from tfcompress.core import catalog
from tfcompress.core.graph import check_model, clone_with_weights
from tfcompress.core.wrappers import training_layers
from tfcompress.quantization import QuantizeConfig, QuantizeWrapper, quantize_annotate_layer
from tfcompress.quantization.rewrite import _quantize


def quantize_clustered_model(model: keras.Model) -> keras.Model:
    """`quantize_model` for a clustered model, keeping at most k values per kernel in the int8 file.

    Plain QAT would move every weight on its own and scale each output channel apart, so the
    int8 kernels would no longer share values. Here the kernels get one (per-tensor) scale and are
    frozen during QAT; biases, BatchNormalization parameters and activation ranges still train.

    Args:
        model: a clustered model after `strip_clustering`.

    Returns:
        A quantization-aware model; fine-tune it, then `tfcompress.convert(model, "int8")`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> clustered = tfc.strip_clustering(tfc.cluster_weights(build_digits_cnn(width=8), 8))
        >>> qat = quantize_clustered_model(clustered)
        >>> all(not w.trainable for w in qat.non_trainable_weights if w.path.endswith("kernel"))
        True
    """
    check_model(model, "quantize_clustered_model")
    if any(layer.technique == "clustered" for layer in training_layers(model)):
        raise ValueError(
            f"Model '{model.name}' still has ClusterWeights wrappers: call strip_clustering first."
        )
    annotated = clone_with_weights(model)
    for layer in annotated.layers:
        row = catalog.exact_info(layer)
        if row is not None and row.cluster_qat:
            quantize_annotate_layer(layer, QuantizeConfig(role="kernel", per_channel=False))
    # the kernels annotated above, every other layer from the registry
    quantized = _quantize(annotated, strict=False, default=QuantizeConfig())
    for layer in quantized.layers:
        if isinstance(layer, QuantizeWrapper):
            layer.layer.kernel.trainable = False
    return quantized
