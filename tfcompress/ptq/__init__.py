"""Post-training quantization tools: find the layers that lose accuracy and fix them.

The user-facing namespace of two packages: `tfcompress.diagnose` (`debug_quantization` measures,
per Keras layer, the error the integer file adds; `suggest_keep_float` and
`convert(..., keep_float=[...])` keep chosen layers float; `four_bit_sensitivity` and
`choose_int4_layers` pick the layers whose weights can be 4-bit; `auto_quantize`) and
`tfcompress.recovery` (fold, equalize, bias correction, AdaRound).

Example:
    >>> import tfcompress.ptq as ptq
    >>> callable(ptq.debug_quantization)
    True
"""

from tfcompress.diagnose import (
    AutoQuantizeResult,
    Candidate,
    KeepFloatSuggestion,
    LayerError,
    LayerSensitivity,
    OutputScore,
    QuantizationDebugReport,
    Score,
    auto_quantize,
    choose_int4_layers,
    debug_quantization,
    four_bit_sensitivity,
    suggest_keep_float,
)
from tfcompress.export import calibrate
from tfcompress.recovery import (
    STEPS,
    adaround,
    bias_correction,
    equalize,
    fold_batch_norms,
)
from tfcompress.tflite.four_bit import four_bit_levels
from tfcompress.tflite.selective import CalibratedModel

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
    "OutputScore",
    "Score",
    "calibrate",
    "debug_quantization",
    "suggest_keep_float",
]
