"""Read and validate TFLite flatbuffers, and describe what is inside them (`inspect`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress import compat
from tfcompress.converter.errors import TFLiteFileError

TFLiteSource = str | os.PathLike | bytes | bytearray
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}


def load_bytes(source: TFLiteSource) -> tuple[bytes, str]:
    """The bytes of a TFLite model given as bytes or a path, and a name for messages."""
    if isinstance(source, bytes | bytearray):
        return bytes(source), "the given TFLite bytes"
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"Expected a .tflite path or bytes, got {type(source).__name__}.")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"TFLite file '{path}' does not exist: check the path.")
    if path.is_dir():
        raise TFLiteFileError(f"'{path}' is a directory, not a .tflite file.")
    try:
        return path.read_bytes(), f"'{path}'"
    except PermissionError as error:
        raise PermissionError(
            f"TFLite file '{path}' is not readable: check its permissions."
        ) from error


def read_model(data: bytes, origin: str = "the TFLite model") -> Any:
    """Parse a flatbuffer with the TFLite schema, refusing anything truncated, corrupted or foreign."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteFileError(
            f"{origin} is not a TFLite flatbuffer (it lacks the 'TFL3' identifier): pass a .tflite "
            "file written by tfcompress.convert / save_tflite."
        )
    schema = compat.tflite_schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        _check_complete(model, len(data))
    except TFLiteFileError:
        raise
    except Exception as error:  # struct.error, IndexError...: the bytes end or point nowhere
        raise TFLiteFileError(
            f"{origin} is truncated or corrupted ({type(error).__name__}: {error}); convert the "
            "model again or copy the file again."
        ) from error
    return model


def _check_complete(model: Any, size: int) -> None:
    if not model.subgraphs:
        raise TFLiteFileError("The TFLite model has no subgraph: it is empty or corrupted.")
    buffers = model.buffers or []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            if not 0 <= tensor.buffer < max(len(buffers), 1):
                raise TFLiteFileError(f"Tensor '{_name(tensor.name)}' points at a missing buffer.")
        for op in subgraph.operators or []:
            if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
                raise TFLiteFileError(
                    "An operator points at a missing op code: the file is corrupted."
                )
    for buffer in buffers:
        offset = getattr(buffer, "offset", 0) or 0
        if offset and offset + (getattr(buffer, "size", 0) or 0) > size:
            raise TFLiteFileError("A weight buffer lies past the end of the file: it is truncated.")


@dataclass
class Quantization:
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list[int]
    shape_signature: list[int]
    quantization: Quantization | None
    is_constant: bool
    nbytes: int
    buffer: np.ndarray | None = field(default=None, repr=False)


@dataclass
class OpInfo:
    index: int
    name: str
    version: int
    inputs: list[int]
    outputs: list[int]
    input_dtypes: list[str]
    output_dtypes: list[str]
    computes_in_float: bool
    options: dict = field(default_factory=dict, repr=False)


@dataclass
class TFLiteReport:
    """What `inspect` found in a flatbuffer: ops, tensors, float ops left and the size breakdown."""

    origin: str
    size_bytes: int
    weights_bytes: int
    subgraph_count: int
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]

    @property
    def graph_bytes(self) -> int:
        """Everything that is not a weight buffer: op graph, tensor metadata, strings, padding."""
        return self.size_bytes - self.weights_bytes

    @property
    def float_ops(self) -> list[str]:
        """Names of the ops that still read or write float tensors (empty for a full-integer model)."""
        return [op.name for op in self.ops if op.computes_in_float]

    @property
    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    @property
    def input_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (tensor buffers left out)."""
        return {
            "origin": self.origin,
            "size_bytes": self.size_bytes,
            "weights_bytes": self.weights_bytes,
            "graph_bytes": self.graph_bytes,
            "subgraph_count": self.subgraph_count,
            "input_dtypes": self.input_dtypes,
            "output_dtypes": self.output_dtypes,
            "op_counts": self.op_counts,
            "float_ops": self.float_ops,
            "ops": [{k: v for k, v in asdict(op).items() if k != "options"} for op in self.ops],
            "tensors": [
                {k: v for k, v in asdict(t).items() if k != "buffer"} for t in self.tensors
            ],
        }

    def summary(self) -> str:
        """A short human-readable description, as `tfcompress inspect` prints it."""
        lines = [
            f"{self.origin}: {self.size_bytes:,} bytes ({self.weights_bytes:,} weights, "
            f"{self.graph_bytes:,} graph), {len(self.ops)} ops in {self.subgraph_count} subgraph(s)",
            f"inputs {self.input_dtypes} -> outputs {self.output_dtypes}",
            "ops: "
            + ", ".join(f"{name} x{count}" for name, count in sorted(self.op_counts.items())),
        ]
        float_ops = sorted(set(self.float_ops))
        lines.append("float ops: " + (", ".join(float_ops) if float_ops else "none (full integer)"))
        lines.append("")
        lines.append(f"{'#':>4}  {'op':<24} {'v':>2}  {'inputs':<28} outputs")
        for op in self.ops:
            lines.append(
                f"{op.index:>4}  {op.name:<24} {op.version:>2}  "
                f"{','.join(op.input_dtypes):<28} {','.join(op.output_dtypes)}"
            )
        return "\n".join(lines)


def inspect(source: TFLiteSource) -> TFLiteReport:
    """Describe a TFLite flatbuffer: ops with versions, tensor dtypes and quantization, sizes.

    Args:
        source: a `.tflite` path or the bytes returned by `tfcompress.convert`.

    Returns:
        A `TFLiteReport`; `report.float_ops` lists ops still computing in float,
        `report.summary()` prints a table, `report.to_dict()` is JSON-ready.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> report = tfc.inspect(tfc.convert(build_digits_cnn(), "float32"))
        >>> report.input_dtypes
        ['FLOAT32']
    """
    data, origin = load_bytes(source)
    model = read_model(data, origin)
    schema = compat.tflite_schema()
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    subgraph = model.subgraphs[0]
    tensors = [
        _tensor_info(i, t, model, data, type_names) for i, t in enumerate(subgraph.tensors or [])
    ]
    ops = [
        _op_info(i, op, model, tensors, op_names) for i, op in enumerate(subgraph.operators or [])
    ]
    weights = sum(t.nbytes for t in tensors if t.is_constant)
    return TFLiteReport(
        origin=origin,
        size_bytes=len(data),
        weights_bytes=weights,
        subgraph_count=len(model.subgraphs),
        ops=ops,
        tensors=tensors,
        inputs=[int(i) for i in subgraph.inputs],
        outputs=[int(i) for i in subgraph.outputs],
    )


def _enum_names(enum: Any) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def _name(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def _tensor_info(
    index: int, tensor: Any, model: Any, data: bytes, type_names: dict[int, str]
) -> TensorInfo:
    dtype = type_names.get(tensor.type, f"TYPE_{tensor.type}")
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    signature = (
        [int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None else shape
    )
    raw = _buffer_bytes(model.buffers[tensor.buffer], data) if tensor.buffer else b""
    buffer = _as_array(raw, dtype, shape) if raw else None
    quant = tensor.quantization
    quantization = None
    if quant is not None and quant.scale is not None and len(quant.scale):
        quantization = Quantization(
            scale=[float(s) for s in quant.scale],
            zero_point=[int(z) for z in quant.zeroPoint] if quant.zeroPoint is not None else [0],
            quantized_dimension=int(quant.quantizedDimension),
        )
    return TensorInfo(
        index=index,
        name=_name(tensor.name),
        dtype=dtype,
        shape=shape,
        shape_signature=signature,
        quantization=quantization,
        is_constant=bool(raw),
        nbytes=len(raw),
        buffer=buffer,
    )


def _buffer_bytes(buffer: Any, data: bytes) -> bytes:
    if buffer.data is not None and len(buffer.data):
        return bytes(np.asarray(buffer.data, dtype=np.uint8))
    offset = getattr(buffer, "offset", 0) or 0
    if offset > 1:
        return data[offset : offset + buffer.size]
    return b""


_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


def _unpack_int4(raw: bytes) -> np.ndarray:
    """INT4 tensors hold two signed values per byte, the first in the low nibble."""
    packed = np.frombuffer(raw, dtype=np.uint8)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1).astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def _as_array(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray | None:
    if dtype == "INT4":
        array = _unpack_int4(raw)[: int(np.prod(shape))]
        return array.reshape(shape) if int(np.prod(shape)) == array.size else array
    numpy_type = _NUMPY_TYPES.get(dtype)
    if numpy_type is None:
        return None
    array = np.frombuffer(raw, dtype=numpy_type)
    return array.reshape(shape) if int(np.prod(shape)) == array.size else array


def _op_info(
    index: int, op: Any, model: Any, tensors: list[TensorInfo], op_names: dict[int, str]
) -> OpInfo:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = op_names.get(builtin, f"OP_{builtin}")
    if name == "CUSTOM":
        name = f"CUSTOM:{_name(code.customCode)}"
    inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
    outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
    input_dtypes = [tensors[i].dtype for i in inputs]
    output_dtypes = [tensors[i].dtype for i in outputs]
    in_float = any(d in _FLOAT_TYPES for d in input_dtypes + output_dtypes)
    options = _options_dict(op.builtinOptions)
    return OpInfo(
        index,
        name,
        int(code.version),
        inputs,
        outputs,
        input_dtypes,
        output_dtypes,
        in_float,
        options,
    )


def _options_dict(options: Any) -> dict:
    if options is None:
        return {}
    result = {}
    for key, value in vars(options).items():
        if isinstance(value, int | float | bool | str):
            result[key] = value
        elif isinstance(value, list | np.ndarray):
            result[key] = [int(v) for v in value]
    return result
