"""What the coverage matrix expects beyond "works": float-only kernels and the known gaps.

Both tables are printed in docs/reference/coverage.md. A known gap is tested as an expected failure
(strict), so fixing one fails its test until its line here is removed.
"""

from __future__ import annotations

_IO = {"QUANTIZE", "DEQUANTIZE"}

# Layers whose TFLite kernel has no int8 version: an int8 file computes them in float between a
# DEQUANTIZE and a QUANTIZE. quantize_model warns with this reason (the QAT test checks it).
FLOAT_IN_INT8: dict[str, tuple[set[str], str]] = {
    "Conv3D": (
        {"CONV_3D", *_IO},
        "TFLite's CONV_3D kernel runs in float only",
    ),
    "Conv3DTranspose": (
        {"CONV_3D_TRANSPOSE", "SHAPE", *_IO},
        "TFLite's CONV_3D_TRANSPOSE kernel runs in float only",
    ),
}

# "<row id>/<technique>": why it does not work yet. Each is a bug or a converter limit to fix.
_LUT = (
    "the int8 file computes {op} with an integer look-up table that QAT does not simulate: the "
    "logits differ from the Keras QAT model by up to {steps} int8 steps (top-1 still agrees)"
)
KNOWN_GAPS: dict[str, str] = {
    "Activation-softplus/qat": _LUT.format(op="SOFTPLUS", steps=54),
    "Activation-selu/qat": _LUT.format(op="SELU (ELU and MUL)", steps=31),
    "Activation-mish/qat": _LUT.format(op="MISH (SOFTPLUS, TANH, MUL)", steps=23),
    "Activation-elu/qat": _LUT.format(op="ELU", steps=10),
    "ELU/qat": _LUT.format(op="ELU", steps=10),
    "UnitNormalization/qat": (
        "the int8 file computes the L2 norm's RSQRT in integers that QAT does not simulate: up to "
        "14 int8 steps at the logits"
    ),
}
