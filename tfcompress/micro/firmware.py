"""`export`: the C++ files firmware compiles to run a TFLite file on TensorFlow Lite Micro."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.micro import ops as micro_ops
from tfcompress.micro.errors import MicroError
from tfcompress.micro.report import DEFAULT_ARENA_MARGIN, MicroReport, check
from tfcompress.tflite.flatbuffer import TensorInfo, TFLiteReport, TFLiteSource, inspect, load_bytes

MODEL_ALIGNMENT = 16  # TFLM reads the flatbuffer in place: its tables want 16-byte alignment
_BYTES_PER_LINE = 12
_ITEM_BYTES = {"INT8": 1, "UINT8": 1, "BOOL": 1, "INT16": 2, "FLOAT16": 2, "INT32": 4}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {
    "alignas", "auto", "bool", "break", "case", "char", "class", "const", "constexpr", "default",
    "delete", "do", "double", "else", "enum", "extern", "float", "for", "if", "inline", "int",
    "long", "main", "namespace", "new", "operator", "private", "public", "return", "short",
    "signed", "sizeof", "static", "struct", "switch", "template", "this", "typedef", "union",
    "unsigned", "using", "virtual", "void", "volatile", "while",
}  # fmt: skip


@dataclass
class ExportedFiles:
    """The files `export` wrote, and the check they rest on.

    Attributes:
        source: `NAME.cc`, the model as a 16-byte aligned `const unsigned char NAME[]` and its
            length `NAME_len`.
        header: `NAME.h`, their declarations, the arena size and each input's and output's
            type, shape, scale and zero point as constants.
        ops_header: `NAME_ops.h`, `NAME_register_ops(resolver)`, registering exactly the file's
            ops on a `tflite::MicroMutableOpResolver<N>` (`NAME_OpResolver`).
        report: the `MicroReport` of the file (arena measured, ops).

    Example:
        >>> from pathlib import Path
        >>> from tfcompress.micro import ExportedFiles
        >>> files = ExportedFiles(Path("m.cc"), Path("m.h"), Path("m_ops.h"), None)
        >>> [p.name for p in files.paths]
        ['m.cc', 'm.h', 'm_ops.h']
    """

    source: Path
    header: Path
    ops_header: Path
    report: MicroReport | None

    @property
    def paths(self) -> list[Path]:
        """The three files, source first."""
        return [self.source, self.header, self.ops_header]


def export(
    model_file: TFLiteSource,
    out_dir: str | Path,
    *,
    name: str = "model",
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    report: MicroReport | None = None,
) -> ExportedFiles:
    """Write the C++ files that firmware needs to run a TFLite file on TFLM.

    The file is checked on TFLM first (`tfcompress.micro.check`, or the `report` you pass for
    the same bytes): a file TFLM cannot run is refused with the failing op and what to do. Then
    `out_dir` gets (existing files of the same names are replaced):

    - `NAME.cc`: the model as `alignas(16) const unsigned char NAME[]` and `NAME_len`;
    - `NAME.h`: their declarations; `NAME_arena_size`, the tensor arena (`arena_bytes`
      measured by `check`, the smallest that allocates and invokes on TFLM's host interpreter,
      plus `arena_margin`, rounded up to 16) and `NAME_arena_measured`; for each input and
      output `NAME_input0_scale`, `_zero_point`, `_dims`, `_rank`, `_bytes` (and `output0_...`);
    - `NAME_ops.h`: `NAME_OpResolver`, a `tflite::MicroMutableOpResolver<N>` with N the number
      of distinct ops, and `NAME_register_ops(resolver)`, which calls TFLM's `AddXxx` method of
      each op once. It includes TFLM's headers, so it compiles inside a TFLM build only.

    Args:
        model_file: a `.tflite` path or the bytes `tfcompress.convert` returns.
        out_dir: the folder to write into (created if missing).
        name: the C identifier the files and symbols are named after.
        arena_margin: share of the measured arena added to `NAME_arena_size` (when `report`
            is not given).
        report: `check`'s report of these same bytes, to skip checking them again.

    Returns:
        `ExportedFiles`: the three paths and the report.

    Raises:
        MicroError: TFLM cannot run the file (the message says why and what to do), `report` is
            of another file, `name` is not a C identifier, or `tflite-micro` is not installed.

    Example:
        >>> import tempfile, numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> flatbuffer = tfc.convert(build_digits_cnn(width=4), "int8", x)
        >>> files = tfc.micro.export(flatbuffer, tempfile.mkdtemp(), name="digits")
        >>> [path.name for path in files.paths]
        ['digits.cc', 'digits.h', 'digits_ops.h']
        >>> "tflite::MicroMutableOpResolver<4>" in files.ops_header.read_text()
        True
    """
    _check_name(name)
    content, origin = load_bytes(model_file)
    if report is None:
        report = check(content, arena_margin=arena_margin)
    elif report.sha256 and report.sha256 != hashlib.sha256(content).hexdigest():
        raise MicroError(
            f"The report given is of another file than {origin} (their SHA-256 differ): pass "
            "the report check() made of these bytes, or none."
        )
    if not report.runs or report.recommended_arena_bytes is None:
        raise MicroError(_refusal(origin, report))
    info = inspect(content)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = ExportedFiles(
        folder / f"{name}.cc", folder / f"{name}.h", folder / f"{name}_ops.h", report
    )
    files.source.write_text(model_source(content, name))
    files.header.write_text(model_header(info, report, name))
    files.ops_header.write_text(ops_header(info, name))
    return files


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or name in _RESERVED:
        raise MicroError(
            f"name={name!r} must be a C identifier (letters, digits and underscores, not starting "
            "with a digit, not a C++ keyword): it names the files and the symbols."
        )


def _refusal(origin: str, report: MicroReport) -> str:
    failing = report.failing_op
    where = ""
    if failing is not None:
        layer = f" (Keras layer '{failing.layer}')" if failing.layer else ""
        where = f" It stops at op {failing.index} {failing.name}{layer}. {failing.advice}"
    return f"TFLM cannot run {origin}, so there is nothing to export: {report.error}.{where}"


def _banner(file: str, report: MicroReport) -> str:
    return (
        f"// {file}: generated by tfcompress.micro.export from {report.origin}; do not edit.\n"
        f"// Checked on TensorFlow Lite Micro ({report.tflm_version}); "
        f"model SHA-256 {report.sha256}.\n"
    )


def model_source(content: bytes, name: str) -> str:
    """`NAME.cc`: the model bytes as an aligned array, and their count.

    Example:
        >>> from tfcompress.micro.firmware import model_source
        >>> print(model_source(b"\\x01\\x02", "m").splitlines()[-1])
        const unsigned int m_len = 2;
    """
    rows = []
    for start in range(0, len(content), _BYTES_PER_LINE):
        chunk = content[start : start + _BYTES_PER_LINE]
        rows.append("    " + ", ".join(f"0x{byte:02x}" for byte in chunk) + ",")
    return "\n".join(
        [
            f"// {name}.cc: generated by tfcompress.micro.export; do not edit.",
            f'#include "{name}.h"',
            "",
            f"alignas({MODEL_ALIGNMENT}) const unsigned char {name}[] = {{",
            *rows,
            "};",
            f"const unsigned int {name}_len = {len(content)};",
            "",
        ]
    )


def model_header(info: TFLiteReport, report: MicroReport, name: str) -> str:
    """`NAME.h`: the model's declarations, the arena size and the input/output constants."""
    guard = f"TFCOMPRESS_{name.upper()}_H_"
    measured = report.arena_bytes or 0
    lines = [
        _banner(f"{name}.h", report),
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"// The model: {report.flash_bytes} bytes of flash ({report.constant_bytes} of them",
        f"// constant data), aligned to {MODEL_ALIGNMENT} bytes as TFLM reads it in place.",
        f"extern const unsigned char {name}[];",
        f"extern const unsigned int {name}_len;",
        "",
        f"// Tensor arena: {measured} bytes measured (the smallest arena with which TFLM's Python",
        "// interpreter allocated and invoked this file on the host; "
        f"{measured - 1} bytes failed; the plain",
        "// allocator of firmware needs a little less), plus a "
        f"{report.arena_margin:.0%} margin for optimized kernels'",
        "// scratch buffers, rounded up to 16.",
        f"// Declare it as: alignas(16) static unsigned char tensor_arena[{name}_arena_size];",
        f"constexpr unsigned int {name}_arena_size = {report.recommended_arena_bytes};",
        f"constexpr unsigned int {name}_arena_measured = {measured};",
        "",
        "// Quantized values: real = (q - zero_point) * scale; q = round(real / scale) + "
        "zero_point.",
        "// A float tensor has scale 0 and zero point 0.",
        f"constexpr int {name}_input_count = {len(info.inputs)};",
        f"constexpr int {name}_output_count = {len(info.outputs)};",
    ]
    for kind, indices in (("input", info.inputs), ("output", info.outputs)):
        for position, index in enumerate(indices):
            lines.extend(_tensor_constants(info.tensors[index], f"{name}_{kind}{position}", kind))
    lines += ["", f"#endif  // {guard}", ""]
    return "\n".join(lines)


def _tensor_constants(tensor: TensorInfo, prefix: str, kind: str) -> list[str]:
    quantization = tensor.quantization
    scale = quantization.scale[0] if quantization is not None else 0.0
    zero_point = quantization.zero_point[0] if quantization is not None else 0
    dims = [max(int(d), 1) for d in tensor.shape]
    listed = ", ".join(map(str, dims)) or "1"  # a scalar: one value
    count = math.prod(dims)
    item = _ITEM_BYTES.get(tensor.dtype, 4 if tensor.dtype in ("FLOAT32", "INT32") else 8)
    return [
        "",
        f"// {kind} '{tensor.name}': {tensor.dtype} {dims}",
        f"constexpr float {prefix}_scale = {_float_literal(scale)};",
        f"constexpr int {prefix}_zero_point = {int(zero_point)};",
        f"constexpr int {prefix}_rank = {len(dims)};",
        f"constexpr int {prefix}_dims[{max(len(dims), 1)}] = {{{listed}}};",
        f"constexpr unsigned int {prefix}_bytes = {count * item};",
    ]


def _float_literal(value: float) -> str:
    text = str(np.float32(value))  # the shortest text that reads back as the same float32
    if not any(mark in text for mark in (".", "e", "inf", "nan")):
        text += ".0"
    return f"{text}f"


def ops_header(info: TFLiteReport, name: str) -> str:
    """`NAME_ops.h`: registers exactly the file's ops, every subgraph's, on TFLM's op resolver.

    Raises:
        MicroError: an op without a TFLM resolver method (`check` would not have passed it).

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.micro.firmware import ops_header
        >>> from tfcompress.models import build_digits_cnn
        >>> info = tfc.inspect(tfc.convert(build_digits_cnn(width=4)))
        >>> "resolver.AddConv2D()" in ops_header(info, "m")
        True
    """
    counts = info.all_op_counts
    missing = [op for op in counts if micro_ops.resolver_method(op) is None]
    if missing:
        raise MicroError(
            f"TFLM has no kernel for {', '.join(sorted(missing))}: "
            + " ".join(micro_ops.advice(op) for op in sorted(missing))
        )
    guard = f"TFCOMPRESS_{name.upper()}_OPS_H_"
    calls = []
    for op in sorted(counts):
        method = micro_ops.resolver_method(op)
        calls.append(f"  status = resolver.{method}();  // {op} x{counts[op]}")
        calls.append("  if (status != kTfLiteOk) return status;")
    return "\n".join(
        [
            f"// {name}_ops.h: generated by tfcompress.micro.export; do not edit.",
            f"// Registers exactly the {len(counts)} distinct ops of the model {name} on "
            "TFLM's op resolver.",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
            "",
            f"constexpr unsigned int {name}_op_count = {len(counts)};",
            f"using {name}_OpResolver = tflite::MicroMutableOpResolver<{len(counts)}>;",
            "",
            f"// Usage: static {name}_OpResolver resolver; {name}_register_ops(resolver);",
            f"inline TfLiteStatus {name}_register_ops({name}_OpResolver& resolver) {{",
            "  TfLiteStatus status = kTfLiteOk;",
            *calls,
            "  return kTfLiteOk;",
            "}",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )


def registered_ops(ops_header_text: str) -> dict[str, str]:
    """The op -> `AddXxx` method pairs an `ops_header` text registers (for tests and tools).

    Example:
        >>> from tfcompress.micro.firmware import registered_ops
        >>> registered_ops("  status = resolver.AddConv2D();  // CONV_2D x3")
        {'CONV_2D': 'AddConv2D'}
    """
    found: dict[str, Any] = {}
    for method, op in re.findall(r"resolver\.(Add\w+)\(\);\s+// (\S+) x\d+", ops_header_text):
        found[op] = method
    return found
