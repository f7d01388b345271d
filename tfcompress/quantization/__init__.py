"""Quantization-aware training for Keras 3 functional and Sequential models (TFLite int8 scheme).

Example:
    >>> import tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> qat = tfc.quantize_model(build_digits_cnn(width=4))
    >>> qat.name
    'digits_cnn_qat'
"""

from tfcompress.quantization import default_8bit, quantizers
from tfcompress.quantization.config import (
    QuantizeConfig,
    float_only_reason,
    get_quantize_config,
    register_quantize_config,
)
from tfcompress.quantization.custom import CustomQuantizeWrapper
from tfcompress.quantization.integer_friendly import integer_friendly
from tfcompress.quantization.layers import (
    IntegerELU,
    IntegerGroupNormalization,
    IntegerLayerNormalization,
    IntegerNormalization,
    IntegerPReLU,
    IntegerRMSNormalization,
    IntegerUnitNormalization,
    QuantizedMultiHeadAttention,
    integer_elu,
)
from tfcompress.quantization.masking import IntegerGlobalAveragePooling1D, IntegerMasking, StepMask
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
from tfcompress.quantization.rewrite import (
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)
from tfcompress.quantization.scheme import (
    Default8BitQuantizeScheme,
    QuantizeScheme,
    quantize_scope,
)
from tfcompress.quantization.strip import is_quantization_aware, strip_quantization
from tfcompress.quantization.wrapper import QuantizeWrapper

# tfmot names that have one class here: QuantizeWrapperV2 is tfmot's newer wrapper, and the
# registry tfmot exposes as a class is `register_quantize_config` / `get_quantize_config`.
QuantizeWrapperV2 = QuantizeWrapper

__all__ = [
    "IntegerGlobalAveragePooling1D",
    "IntegerMasking",
    "StepMask",
    "ActivationQuantizer",
    "CustomQuantizeWrapper",
    "IntegerELU",
    "IntegerGroupNormalization",
    "IntegerLayerNormalization",
    "IntegerNormalization",
    "IntegerPReLU",
    "IntegerRMSNormalization",
    "IntegerUnitNormalization",
    "QuantizedMultiHeadAttention",
    "QuantizeConfig",
    "QuantizeScheme",
    "QuantizeWrapper",
    "QuantizeWrapperV2",
    "Default8BitQuantizeScheme",
    "default_8bit",
    "quantizers",
    "quantize_annotate_model",
    "quantize_scope",
    "UnrolledBidirectional",
    "UnrolledGRU",
    "UnrolledLSTM",
    "UnrolledSimpleRNN",
    "WeightQuantizer",
    "float_only_reason",
    "get_quantize_config",
    "integer_elu",
    "integer_friendly",
    "is_quantization_aware",
    "learned_step_fake_quant",
    "quantize_annotate_layer",
    "quantize_apply",
    "quantize_model",
    "register_quantize_config",
    "strip_quantization",
    "unroll_recurrent",
]
