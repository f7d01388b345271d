"""Quantization-aware training for Keras 3 functional and Sequential models (TFLite int8 scheme).

Example:
    >>> import tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> qat = tfc.quantize_model(build_digits_cnn(width=4))
    >>> qat.name
    'digits_cnn_qat'
"""

from tfcompress.quantization.config import (
    QuantizeConfig,
    get_quantize_config,
    register_quantize_config,
)
from tfcompress.quantization.export import is_quantization_aware, strip_quantization
from tfcompress.quantization.layers import (
    IntegerLayerNormalization,
    IntegerNormalization,
    QuantizedMultiHeadAttention,
)
from tfcompress.quantization.quantizers import (
    ActivationQuantizer,
    WeightQuantizer,
    learned_step_fake_quant,
)
from tfcompress.quantization.recurrent import (
    UnrolledBidirectional,
    UnrolledGRU,
    UnrolledLSTM,
    UnrolledSimpleRNN,
    unroll_recurrent,
)
from tfcompress.quantization.rewrite import quantize_annotate_layer, quantize_apply, quantize_model
from tfcompress.quantization.wrapper import QuantizeWrapper

__all__ = [
    "ActivationQuantizer",
    "IntegerLayerNormalization",
    "IntegerNormalization",
    "QuantizedMultiHeadAttention",
    "QuantizeConfig",
    "QuantizeWrapper",
    "UnrolledBidirectional",
    "UnrolledGRU",
    "UnrolledLSTM",
    "UnrolledSimpleRNN",
    "WeightQuantizer",
    "get_quantize_config",
    "is_quantization_aware",
    "learned_step_fake_quant",
    "quantize_annotate_layer",
    "quantize_apply",
    "quantize_model",
    "register_quantize_config",
    "strip_quantization",
    "unroll_recurrent",
]
