"""PTQ accuracy recovery without retraining: steps that return an equivalent float model whose
weights quantize better.

- `fold_batch_norms`: BatchNormalization folded into the kernel before it (`tfcompress.core.batchnorm`).
- `equalize`: cross-layer equalization and high-bias absorption (Nagel et al. 2019).
- `bias_correction`: empirical correction of the output mean shift of quantized weights.
- `adaround`: learned rounding of each layer's weights, 8 or 4 bits (Nagel et al. 2020).

`tfcompress.convert(model, "int8", data, optimize=[...])` runs them in the fixed order `STEPS`,
keeps each data-driven step only if the file with it is not worse on held-out rows
(`optimize_model(..., return_report=True)` returns a `RecoveryReport`), and splits separable
convolutions into the two convolutions TFLite runs (`split_separable`) so every step covers them.
"""

from tfcompress.core.batchnorm import fold_batch_norms
from tfcompress.recovery.bias import bias_correction
from tfcompress.recovery.equalization import EqualizationReport, equalize
from tfcompress.recovery.rounding import adaround, round_layer
from tfcompress.recovery.steps import (
    STEPS,
    RecoveryReport,
    StepCheck,
    optimize_model,
    parse_steps,
)
from tfcompress.recovery.weights import split_separable
from tfcompress.tflite.four_bit import FourBitLevels, four_bit_levels

__all__ = [
    "STEPS",
    "EqualizationReport",
    "FourBitLevels",
    "RecoveryReport",
    "StepCheck",
    "adaround",
    "bias_correction",
    "equalize",
    "fold_batch_norms",
    "four_bit_levels",
    "optimize_model",
    "parse_steps",
    "round_layer",
    "split_separable",
]
