"""Packed 4-bit weights: rewrite the int8 weights that hold 4-bit levels as TFLite INT4.

A model trained with `weight_bits <= 4` (LSQ or min/max, `tfcompress.quantize_model`), or any
post-training method that leaves weights on a grid of at most 16 levels (AdaRound 4-bit), converts
to an int8 file whose CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED filters only hold integers in
[-8, 7] with zero point 0. `pack_int4` stores those filters as INT4, two values per byte (the
first in the low nibble), and raises the op versions to those LiteRT's kernels register for an
int4 filter (7, 7 and 10). Scales, zero points, biases and activations are untouched, so the
packed file computes exactly what the int8 file computes: the integers are the same.

Which runtimes run it: LiteRT's builtin CPU kernels (the `ai-edge-litert` interpreter,
TFLite >= 2.15) unpack INT4 filters of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED. XNNPACK
takes INT4 FULLY_CONNECTED filters (its `qc4` kernels); the convolutions with an INT4 filter run
on the builtin kernels, which are slower than XNNPACK's int8 ones: the file and the weight memory
shrink (about half the int8 file), the latency grows (several times, on x86): choose INT4 for
size, int8 levels for speed (docs/dev/decisions/2026-11-23-int4-weights.md). The
Edge TPU compiler, NNAPI and the GPU delegate do not take INT4: keep the int8 levels file for them
(`convert(..., mode="edgetpu")` refuses `int4_weights=True`).

What else the file holds: per output channel, every filter and bias has a float32 scale and an
int64 zero point (TFLite's schema types; the interpreter refuses a tensor whose scale and zero
point arrays differ in length, so neither can be dropped). Once the filters are INT4 those are a
tenth of a small model's file, and the zero points are all zero: the packed file stores each
distinct vector once and lets every tensor that holds the same values point to it (a flatbuffer
may reference one vector from many tables; the interpreter only reads them). `byte_breakdown`
lists where the bytes of a file go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import pack, read_model, validate

#: op -> (index of its filter input, op version whose kernel takes an INT4 filter)
INT4_OPS: dict[str, tuple[int, int]] = {
    "CONV_2D": (1, 7),
    "DEPTHWISE_CONV_2D": (1, 7),
    "FULLY_CONNECTED": (1, 10),
}
_INT4_LOW, _INT4_HIGH = -8, 7


@dataclass
class Int4Packing:
    """What `pack_int4` did to a flatbuffer.

    Attributes:
        flatbuffer: the rewritten file (the input bytes when nothing was packed).
        packed: names of the weight tensors now stored as INT4.
        kept: `{tensor name: reason}` for the filters left in int8 (values outside [-8, 7],
            a non-zero zero point, a tensor shared with another op).
        bytes_before: size of the input file.
    """

    flatbuffer: bytes
    packed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0

    @property
    def ratio(self) -> float:
        """Size of the packed file over the input file."""
        return len(self.flatbuffer) / max(self.bytes_before, 1)


def pack_int4(flatbuffer: bytes, *, require: bool = False) -> Int4Packing:
    """Store every int8 filter whose values fit 4 bits as a packed TFLite INT4 tensor.

    Signature (stable, for other tools that write 4-bit weights):
    `pack_int4(flatbuffer: bytes, *, require: bool = False) -> Int4Packing`; the packed bytes are
    `.flatbuffer`. Use it on an integer (`mode="int8"`) file; `convert(..., int4_weights=True)`
    calls it for you.

    Args:
        flatbuffer: an int8 TFLite file (bytes), e.g. from `tfcompress.convert(..., "int8")`.
        require: raise `ConversionError` when no filter fits 4 bits, instead of returning the
            file unchanged.

    Returns:
        An `Int4Packing` with the new bytes, the packed tensor names and the filters kept in int8.

    Raises:
        ConversionError: with `require=True`, no filter holds 4-bit levels.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.data import load_digits
        >>> x = load_digits().x_train[:32]
        >>> qat = tfc.quantize_model(build_digits_cnn(width=4), weight_bits=4)
        >>> result = pack_int4(tfc.convert(qat, "int8", x))
        >>> len(result.packed) > 0, result.ratio < 1.0
        (True, True)
    """
    model = read_model(flatbuffer, origin="the file given to pack_int4")
    schema = compat.tflite_schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    int8, int4 = schema.TensorType.INT8, schema.TensorType.INT4
    result = Int4Packing(flatbuffer=flatbuffer, bytes_before=len(flatbuffer))
    for subgraph in model.subgraphs or []:
        uses: dict[int, list[tuple[Any, str, int]]] = {}
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            op_name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            for position, tensor_index in enumerate(_ints(op.inputs)):
                if tensor_index >= 0:
                    uses.setdefault(int(tensor_index), []).append((op, op_name, position))
        for tensor_index, users in uses.items():
            tensor = subgraph.tensors[tensor_index]
            if tensor.type != int8 or not any(
                name in INT4_OPS and position == INT4_OPS[name][0] for _, name, position in users
            ):
                continue
            label = _label(tensor)
            reason = _why_not_int4(model, tensor, users)
            if reason:
                result.kept[label] = reason
                continue
            buffer = model.buffers[tensor.buffer]
            values = np.asarray(buffer.data, dtype=np.uint8).view(np.int8)
            buffer.data = pack_nibbles(values)
            tensor.type = int4
            for op, name, _ in users:
                code = model.operatorCodes[op.opcodeIndex]
                code.version = max(code.version, INT4_OPS[name][1])
            result.packed.append(label)
    if not result.packed:
        if require:
            kept = "; ".join(f"{name}: {why}" for name, why in list(result.kept.items())[:5])
            raise ConversionError(
                "int4_weights: no weight of this model holds 4-bit levels, so nothing can be "
                "packed as INT4. Train it with tfcompress.quantize_model(model, weight_bits=4) "
                "(or give 4-bit layers QuantizeConfig(weight_bits=4)) and convert with mode='int8'."
                + (f" Filters left in int8: {kept}." if kept else "")
            )
        return result
    result.flatbuffer = pack(model, len(flatbuffer))
    return result


def byte_breakdown(flatbuffer: bytes) -> dict[str, int]:
    """Where the bytes of a TFLite file go, by kind, largest first.

    Keys: `"data <TYPE>"` (constant tensors by type: filters, biases), `"quantization scales"`,
    `"quantization zero points"`, `"tensor names"`, `"metadata"` (buffers no tensor reads) and
    `"tables and padding"` (the rest: operators, shapes, vtables, alignment). A vector stored
    once and shared by several tensors is counted once, as it is stored.

    Args:
        flatbuffer: a TFLite file (bytes).

    Returns:
        `{kind: bytes}`, summing to the file size.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.data import load_digits
        >>> flat = tfc.convert(build_digits_cnn(width=4), "int8", load_digits().x_train[:16])
        >>> parts = byte_breakdown(flat)
        >>> sum(parts.values()) == len(flat), parts["data INT8"] > 0
        (True, True)
    """
    validate(flatbuffer, origin="the file given to byte_breakdown")  # refuses a bad file
    schema = compat.tflite_schema()
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    base = np.frombuffer(flatbuffer, np.uint8).__array_interface__["data"][0]
    parts: dict[str, int] = {}
    stored: set[int] = set()  # where each counted vector starts in the file

    def add(kind: str, view: Any) -> None:
        if isinstance(view, np.ndarray) and view.size:
            where = view.__array_interface__["data"][0] - base
            if where not in stored:
                stored.add(where)
                parts[kind] = parts.get(kind, 0) + view.nbytes

    read: set[int] = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            read.add(tensor.Buffer())
            data = model.Buffers(tensor.Buffer()).DataAsNumpy()
            add(f"data {types.get(tensor.Type(), tensor.Type())}", data)
            quantization = tensor.Quantization()
            if quantization is not None:
                add("quantization scales", quantization.ScaleAsNumpy())
                add("quantization zero points", quantization.ZeroPointAsNumpy())
            parts["tensor names"] = parts.get("tensor names", 0) + len(tensor.Name() or b"")
    for index in range(model.BuffersLength()):
        if index not in read:
            add("metadata", model.Buffers(index).DataAsNumpy())
    parts["tables and padding"] = len(flatbuffer) - sum(parts.values())
    return dict(sorted(parts.items(), key=lambda item: -item[1]))


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Two signed 4-bit values per byte, the first in the low nibble (TFLite's INT4 layout).

    Example:
        >>> pack_nibbles(np.array([1, -1, 7], dtype=np.int8)).tolist()
        [241, 7]
    """
    flat = np.asarray(values, dtype=np.int8).reshape(-1)
    if flat.size and (flat.min() < _INT4_LOW or flat.max() > _INT4_HIGH):
        raise ValueError(
            f"pack_nibbles: values must lie in [{_INT4_LOW}, {_INT4_HIGH}]; got "
            f"[{flat.min()}, {flat.max()}]."
        )
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    nibbles = (flat.astype(np.int16) & 0x0F).astype(np.uint8).reshape(-1, 2)
    return (nibbles[:, 0] | (nibbles[:, 1] << 4)).astype(np.uint8)


def _why_not_int4(model: Any, tensor: Any, users: list[tuple[Any, str, int]]) -> str:
    for _, name, position in users:
        if name not in INT4_OPS or position != INT4_OPS[name][0]:
            return f"also read by {name} (input {position}), which has no INT4 kernel"
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or not len(buffer.data):
        return "not a constant stored in the file"
    quantization = tensor.quantization
    zero_points = getattr(quantization, "zeroPoint", None) if quantization else None
    if zero_points is not None and np.any(np.asarray(zero_points) != 0):
        return "non-zero zero point"
    values = np.asarray(buffer.data, dtype=np.uint8).view(np.int8)
    low, high = int(values.min()), int(values.max())
    if low < _INT4_LOW or high > _INT4_HIGH:
        return f"values in [{low}, {high}] need more than 4 bits"
    return ""


def _label(tensor: Any) -> str:
    raw = tensor.name
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _ints(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int64)
