"""PTQ accuracy recovery without retraining: steps that return an equivalent float model whose
weights quantize better.

- `fold_batch_norms`: BatchNormalization folded into the kernel before it (`tfcompress.core.batchnorm`).
- `equalize`: cross-layer equalization and high-bias absorption (Nagel et al. 2019).
- `bias_correction`: empirical correction of the output mean shift of quantized weights.
- `adaround`: learned rounding of each layer's weights, 8 or 4 bits (Nagel et al. 2020).

`tfcompress.convert(model, "int8", data, optimize=[...])` runs them in the fixed order `STEPS`.
"""

from tfcompress.core.batchnorm import fold_batch_norms
from tfcompress.recovery.bias import bias_correction
from tfcompress.recovery.equalization import EqualizationReport, equalize
from tfcompress.recovery.rounding import adaround, round_layer
from tfcompress.recovery.steps import STEPS, optimize_model, parse_steps
from tfcompress.tflite.four_bit import FourBitLevels, four_bit_levels

__all__ = [
    "STEPS",
    "EqualizationReport",
    "FourBitLevels",
    "adaround",
    "bias_correction",
    "equalize",
    "fold_batch_norms",
    "four_bit_levels",
    "optimize_model",
    "parse_steps",
    "round_layer",
]
