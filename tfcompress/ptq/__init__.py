"""Post-training quantization tools: find the layers that lose accuracy and fix them.

`debug_quantization` measures, per Keras layer, the error the integer file adds (accumulated
and isolated); `suggest_keep_float` and `convert(..., keep_float=[...])` keep chosen layers float;
`four_bit_sensitivity` and `choose_int4_layers` pick the layers whose weights can be 4-bit.

Example:
    >>> import tfcompress.ptq as ptq
    >>> callable(ptq.debug_quantization)
    True
"""

from tfcompress.ptq.auto import AutoQuantizeResult, Candidate, auto_quantize
from tfcompress.ptq.bit_widths import LayerSensitivity, choose_int4_layers, four_bit_sensitivity
from tfcompress.ptq.debug import LayerError, QuantizationDebugReport, debug_quantization
from tfcompress.ptq.recovery import (
    STEPS,
    adaround,
    bias_correction,
    equalize,
    fold_batch_norms,
    four_bit_levels,
)
from tfcompress.ptq.selective import (
    CalibratedModel,
    KeepFloatSuggestion,
    calibrate,
    suggest_keep_float,
)

__all__ = [
    "AutoQuantizeResult",
    "Candidate",
    "auto_quantize",
    "LayerSensitivity",
    "choose_int4_layers",
    "four_bit_sensitivity",
    "STEPS",
    "CalibratedModel",
    "KeepFloatSuggestion",
    "LayerError",
    "adaround",
    "bias_correction",
    "equalize",
    "fold_batch_norms",
    "four_bit_levels",
    "QuantizationDebugReport",
    "calibrate",
    "debug_quantization",
    "suggest_keep_float",
]
