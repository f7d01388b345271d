"""Find quantization error and choose what to do about it: the per-layer debugger,
`suggest_keep_float`, 4-bit sensitivity and `auto_quantize` (their figures: `Score`, one
`OutputScore` per output, on held-out rows and a named runtime). Above `tfcompress.export`, which it
calls stage by stage; nothing below imports it.
"""

from tfcompress.diagnose.auto import AutoQuantizeResult, Candidate, auto_quantize
from tfcompress.diagnose.bit_widths import (
    LayerSensitivity,
    choose_int4_layers,
    four_bit_sensitivity,
)
from tfcompress.diagnose.debug import LayerError, QuantizationDebugReport, debug_quantization
from tfcompress.diagnose.keep_float import KeepFloatSuggestion, suggest_keep_float
from tfcompress.diagnose.scoring import OutputScore, Score

__all__ = [
    "AutoQuantizeResult",
    "Candidate",
    "KeepFloatSuggestion",
    "LayerError",
    "LayerSensitivity",
    "OutputScore",
    "QuantizationDebugReport",
    "Score",
    "auto_quantize",
    "choose_int4_layers",
    "debug_quantization",
    "four_bit_sensitivity",
    "suggest_keep_float",
]
