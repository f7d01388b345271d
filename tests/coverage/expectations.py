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
KNOWN_GAPS: dict[str, str] = {}
