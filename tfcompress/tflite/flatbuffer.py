"""Read and validate TFLite flatbuffers, and describe what is inside them (`inspect`)."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.errors import TFLiteFileError

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


#: digests of the byte strings `read_model` parsed completely, most recent last
_VALID: OrderedDict[bytes, None] = OrderedDict()
_VALID_KEPT = 256


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def validate(data: bytes, origin: str = "the TFLite model") -> None:
    """Refuse bytes that are not a complete TFLite model, as `read_model` does, without the
    parsed model: the bytes `read_model` accepted lately (the last 256) are not parsed again.

    Raises:
        TFLiteFileError: `data` is truncated, corrupted or not a TFLite flatbuffer.

    Example:
        >>> validate(b"not a model")
        Traceback (most recent call last):
        ...
        tfcompress.tflite.errors.TFLiteFileError: the TFLite model is not a TFLite flatbuffer (it lacks the 'TFL3' identifier): pass a .tflite file written by tfcompress.convert / save_tflite.
    """
    if len(data) >= 8 and _digest(data) in _VALID:
        return
    read_model(data, origin)


def read_model(data: bytes, origin: str = "the TFLite model") -> Any:
    """Parse a flatbuffer with the TFLite schema, refusing anything truncated, corrupted or foreign.

    Weights that the file stores after the flatbuffer, by offset (LiteRT's quantizer writes such
    files, and TF's converter above 2 GB), are read into their buffers, so a rewrite of the
    returned model (`pack`) keeps them.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteFileError(
            f"{origin} is not a TFLite flatbuffer (it lacks the 'TFL3' identifier): pass a .tflite "
            "file written by tfcompress.convert / save_tflite."
        )
    schema = compat.tflite_schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        _check_complete(model, len(data))
        _inline_offset_buffers(model, data)
    except TFLiteFileError:
        raise
    except Exception as error:  # struct.error, IndexError...: the bytes end or point nowhere
        raise TFLiteFileError(
            f"{origin} is truncated or corrupted ({type(error).__name__}: {error}); convert the "
            "model again or copy the file again."
        ) from error
    _VALID[_digest(bytes(data))] = None
    if len(_VALID) > _VALID_KEPT:
        _VALID.popitem(last=False)
    return model


def _inline_offset_buffers(model: Any, data: bytes) -> None:
    for buffer in model.buffers or []:
        offset = getattr(buffer, "offset", 0) or 0
        if offset > 1:  # (1 marks an empty buffer in the offset scheme)
            buffer.data = np.frombuffer(data, np.uint8, count=buffer.size, offset=offset)
        if offset:
            buffer.offset, buffer.size = 0, 0


def pack(model: Any, size_hint: int = 1024) -> bytes:
    """The TFLite bytes of `model` (the schema's object API, `ModelT`), each equal vector once.

    Every rewrite of a file (requantize pairs, INT4 packing, 4-bit levels, `share_vectors`)
    writes through here. The schema's own writer stores every array anew: the same per-channel
    scales and zero points of each step of an unrolled LSTM, eight times over.

    Example:
        >>> import keras
        >>> import tfcompress as tfc
        >>> from tfcompress.core import compat
        >>> flat = tfc.convert(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        >>> model = compat.tflite_schema().ModelT.InitFromPackedBuf(flat, 0)
        >>> read_model(pack(model, len(flat))) is not None
        True
    """
    builder = _SharingBuilder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def share_vectors(flatbuffer: bytes) -> bytes:
    """`flatbuffer` with each repeated vector (scales, zero points, shapes, data) stored once, and
    without the float ranges no runtime reads (`drop_ranges`).

    TF's converter gives every tensor its own copy: the unrolled steps of a recurrent layer all
    read one bias with the same per-channel quantization, stored once per step. Sharing makes the
    file smaller (most for unrolled recurrent layers, docs/dev/decisions/2026-11-24-shared-vectors.md);
    the model and its outputs are the same.

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> flat = tfc.convert(model, "int8", np.random.rand(16, 4).astype("float32"))
        >>> len(share_vectors(flat)) <= len(flat)
        True
    """
    return share_vectors_of(read_model(flatbuffer), flatbuffer)


def share_vectors_of(model: Any, flatbuffer: bytes, rewritten: bool = False) -> bytes:
    """`share_vectors` of `model`, parsed from `flatbuffer` (`read_model`) and maybe rewritten
    in place since: its bytes, shared and without ranges; `flatbuffer` itself when the model was
    not `rewritten` and sharing saves nothing."""
    drop_ranges_in_place(model)
    shared = pack(model, len(flatbuffer))
    return shared if rewritten or len(shared) < len(flatbuffer) else flatbuffer


def drop_ranges(flatbuffer: bytes) -> bytes:
    """`flatbuffer` without the float `min`/`max` ranges TF's converter leaves in quantization
    parameters (an int16x8 file keeps every weight's per-channel range and every activation's).

    No runtime reads them: LiteRT and TensorFlow Lite Micro compute with the scales and zero
    points, which stay. An int16x8 file is about 9 % smaller without them; a file without ranges
    comes back as it is.

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> flat = tfc.convert(model, "int8", np.random.rand(16, 4).astype("float32"))
        >>> drop_ranges(flat) == flat  # int8 files carry no ranges
        True
    """
    model = read_model(flatbuffer)
    return pack(model, len(flatbuffer)) if drop_ranges_in_place(model) else flatbuffer


def drop_ranges_in_place(model: Any) -> bool:
    """`drop_ranges` on a parsed model (`read_model`), in place: whether any range was there."""
    dropped = False
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            quantization = tensor.quantization
            if quantization is not None and (
                quantization.min is not None or quantization.max is not None
            ):
                quantization.min = quantization.max = None
                dropped = True
    return dropped


class _SharingBuilder(flatbuffers.Builder):
    """A flatbuffer builder that writes each distinct numeric vector once.

    The schema's object API writes every array (zero points, scales, shapes, buffer data) anew;
    this one returns the offset of an equal vector written before. Vectors are written before the
    tables that point to them, so a shared offset still points forward, as flatbuffers require.
    Byte vectors of 16 bytes or more (tensor data) start on a 16-byte boundary of the file, as
    TF's converter writes them, so a runtime can read weights in place.
    """

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._written: dict[tuple[str, bytes], int] = {}
        self._alignment = 1

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
        key = (np.asarray(x).dtype.str, np.ascontiguousarray(x).tobytes())
        if key not in self._written:
            self._alignment = 16 if x.dtype == np.uint8 and x.size >= 16 else 1
            try:
                self._written[key] = super().CreateNumpyVector(x)
            finally:
                self._alignment = 1
        return self._written[key]

    def StartVector(self, elemSize: int, numElems: int, alignment: int) -> int:  # noqa: N802, N803
        return super().StartVector(elemSize, numElems, max(alignment, self._alignment))


def _check_complete(model: Any, size: int) -> None:
    if not model.subgraphs:
        raise TFLiteFileError("The TFLite model has no subgraph: it is empty or corrupted.")
    buffers = model.buffers or []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            if not 0 <= tensor.buffer < max(len(buffers), 1):
                raise TFLiteFileError(f"Tensor '{_name(tensor.name)}' points at a missing buffer.")
        count = len(subgraph.tensors or [])
        ends = [*_ints(subgraph.inputs), *_ints(subgraph.outputs)]
        if any(not 0 <= i < count for i in ends):
            raise TFLiteFileError(
                "A subgraph input or output points at a missing tensor: the file is corrupted."
            )
        for op in subgraph.operators or []:
            if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
                raise TFLiteFileError(
                    "An operator points at a missing op code: the file is corrupted."
                )
            # -1 marks an optional input left out
            if any(i >= count or i < -1 for i in [*_ints(op.inputs), *_ints(op.outputs)]):
                raise TFLiteFileError(
                    "An operator points at a missing tensor: the file is corrupted."
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
class SparseEncoding:
    """How a sparse-encoded tensor is stored: its values buffer and its index arrays.

    `values_bytes` are the stored values (the tensor's buffer), `index_bytes` the segment and
    index arrays kept in the tensor table, `sparsity` the share of the dense tensor not stored
    (a block-sparse encoding stores the zeros inside its blocks).

    Example:
        >>> import keras, tfcompress as tfc
        >>> dense = keras.layers.Dense(64, kernel_initializer="identity")
        >>> model = keras.Sequential([keras.Input((64,)), dense])
        >>> report = tfc.inspect(tfc.convert(model, sparsity=True))
        >>> encoding = report.sparse_tensors[0].sparse
        >>> encoding.dense_shape, encoding.sparsity > 0.9, encoding.index_bytes > 0
        ([64, 64], True, True)
    """

    dense_shape: list[int]
    values_bytes: int
    index_bytes: int
    stored_values: int
    sparsity: float
    block_map: list[int]


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
    buffer_index: int = 0
    sparse: SparseEncoding | None = None


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
    subgraph: int = 0


def _op_counts(ops: list[OpInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    return counts


def _op_dict(op: OpInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(op).items() if k != "options"}


def _tensor_dict(tensor: TensorInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(tensor).items() if k != "buffer"}


@dataclass
class SubgraphReport:
    """One subgraph of a flatbuffer: the entry graph (index 0) or a control-flow body/condition.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> report = tfc.inspect(tfc.convert(build_digits_cnn()))
        >>> [s.index for s in report.subgraphs], report.subgraphs[0].op_counts["CONV_2D"]
        ([0], 3)
    """

    index: int
    name: str
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]

    @property
    def float_ops(self) -> list[str]:
        """Names of this subgraph's ops that read or write float tensors."""
        return [op.name for op in self.ops if op.computes_in_float]

    @property
    def op_counts(self) -> dict[str, int]:
        return _op_counts(self.ops)

    @property
    def input_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "input_dtypes": self.input_dtypes,
            "output_dtypes": self.output_dtypes,
            "op_counts": self.op_counts,
            "float_ops": self.float_ops,
            "ops": [_op_dict(op) for op in self.ops],
            "tensors": [_tensor_dict(t) for t in self.tensors],
        }


@dataclass
class TFLiteReport:
    """What `inspect` found in a flatbuffer: every subgraph's ops and tensors, and the sizes.

    `ops`, `tensors`, `inputs` and `outputs` describe subgraph 0, the graph the interpreter runs;
    `subgraphs` holds every subgraph (control flow adds WHILE/IF bodies); `float_ops`,
    `all_ops` and `all_op_counts` cover them all, `op_counts` counts subgraph 0. `weights_bytes` counts each buffer once, however many tensors
    share it; a sparse tensor's index arrays are `sparse_index_bytes`, not graph bytes.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> report = tfc.inspect(tfc.convert(build_digits_cnn()))
        >>> report.weights_bytes + report.sparse_index_bytes + report.graph_bytes == report.size_bytes
        True
    """

    origin: str
    size_bytes: int
    weights_bytes: int
    subgraph_count: int
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: list[SubgraphReport] = field(default_factory=list)
    sparse_index_bytes: int = 0
    output_names: list[str] = field(default_factory=list)

    @property
    def graph_bytes(self) -> int:
        """Everything else: op graph, tensor metadata, strings, padding."""
        return self.size_bytes - self.weights_bytes - self.sparse_index_bytes

    @property
    def all_ops(self) -> list[OpInfo]:
        """The ops of every subgraph, subgraph 0 first."""
        return [op for subgraph in self.subgraphs for op in subgraph.ops] or self.ops

    @property
    def float_ops(self) -> list[str]:
        """Names of the ops of any subgraph that still read or write float tensors."""
        return [op.name for op in self.all_ops if op.computes_in_float]

    @property
    def op_counts(self) -> dict[str, int]:
        """How many times each op appears in subgraph 0 (`all_op_counts`: every subgraph)."""
        return _op_counts(self.ops)

    @property
    def all_op_counts(self) -> dict[str, int]:
        """How many times each op appears, over every subgraph."""
        return _op_counts(self.all_ops)

    @property
    def input_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [self.tensors[i].dtype for i in self.outputs]

    @property
    def sparse_tensors(self) -> list[TensorInfo]:
        """The sparse-encoded tensors of every subgraph (`convert(..., sparsity=True)` writes them)."""
        tensors = [t for subgraph in self.subgraphs for t in subgraph.tensors] or self.tensors
        return [t for t in tensors if t.sparse is not None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (tensor buffers left out); `subgraphs` lists each subgraph."""
        return {
            "origin": self.origin,
            "size_bytes": self.size_bytes,
            "weights_bytes": self.weights_bytes,
            "sparse_index_bytes": self.sparse_index_bytes,
            "graph_bytes": self.graph_bytes,
            "subgraph_count": self.subgraph_count,
            "input_dtypes": self.input_dtypes,
            "output_dtypes": self.output_dtypes,
            "output_names": self.output_names,
            "op_counts": self.op_counts,
            "all_op_counts": self.all_op_counts,
            "float_ops": self.float_ops,
            "sparse_tensors": [
                {"index": t.index, "name": t.name, **asdict(t.sparse)}
                for t in self.sparse_tensors
                if t.sparse is not None
            ],
            "ops": [_op_dict(op) for op in self.ops],
            "tensors": [_tensor_dict(t) for t in self.tensors],
            "subgraphs": [subgraph.to_dict() for subgraph in self.subgraphs],
        }

    def summary(self) -> str:
        """A short human-readable description, as `tfcompress inspect` prints it."""
        sizes = f"{self.weights_bytes:,} weights"
        if self.sparse_index_bytes:
            sizes += f", {self.sparse_index_bytes:,} sparse indices"
        lines = [
            f"{self.origin}: {self.size_bytes:,} bytes ({sizes}, {self.graph_bytes:,} graph), "
            f"{len(self.all_ops)} ops in {self.subgraph_count} subgraph(s)",
            f"inputs {self.input_dtypes} -> outputs {self.output_dtypes}",
            ("ops (every subgraph): " if self.subgraph_count > 1 else "ops: ")
            + ", ".join(f"{name} x{count}" for name, count in sorted(self.all_op_counts.items())),
        ]
        float_ops = sorted(set(self.float_ops))
        lines.append("float ops: " + (", ".join(float_ops) if float_ops else "none (full integer)"))
        for tensor in self.sparse_tensors:
            sparse = tensor.sparse
            assert sparse is not None
            lines.append(
                f"sparse tensor '{tensor.name}' {sparse.dense_shape}: {sparse.sparsity:.1%} not "
                f"stored, {sparse.values_bytes:,} value bytes + {sparse.index_bytes:,} index bytes"
            )
        for subgraph in self.subgraphs or [SubgraphReport(0, "", self.ops, self.tensors, [], [])]:
            lines.append("")
            if self.subgraph_count > 1:
                float_text = ", ".join(sorted(set(subgraph.float_ops))) or "none"
                lines.append(
                    f"subgraph {subgraph.index} '{subgraph.name}': {len(subgraph.ops)} ops, "
                    f"float ops: {float_text}"
                )
            lines.append(f"{'#':>4}  {'op':<24} {'v':>2}  {'inputs':<28} outputs")
            for op in subgraph.ops:
                lines.append(
                    f"{op.index:>4}  {op.name:<24} {op.version:>2}  "
                    f"{','.join(op.input_dtypes):<28} {','.join(op.output_dtypes)}"
                )
        return "\n".join(lines)


def inspect(source: TFLiteSource) -> TFLiteReport:
    """Describe a TFLite flatbuffer: every subgraph's ops, tensor dtypes and quantization, sizes.

    Needs neither TensorFlow nor Keras (only LiteRT's flatbuffer schema), so it is fast.

    Args:
        source: a `.tflite` path or the bytes returned by `tfcompress.convert`.

    Returns:
        A `TFLiteReport`; `report.float_ops` lists ops still computing in float,
        `report.subgraphs` each subgraph, `report.sparse_tensors` the sparse-encoded weights,
        `report.summary()` prints a table, `report.to_dict()` is JSON-ready.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> report = tfc.inspect(tfc.convert(build_digits_cnn(), "float32"))
        >>> report.input_dtypes, report.subgraph_count
        (['FLOAT32'], 1)
    """
    data, origin = load_bytes(source)
    model = read_model(data, origin)
    schema = compat.tflite_schema()
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    buffer_bytes: dict[int, int] = {}
    index_bytes = 0
    subgraphs = []
    for number, subgraph in enumerate(model.subgraphs):
        tensors = [
            _tensor_info(i, t, model, data, type_names)
            for i, t in enumerate(subgraph.tensors or [])
        ]
        for tensor in tensors:
            if tensor.is_constant:
                buffer_bytes[tensor.buffer_index] = tensor.nbytes
            if tensor.sparse is not None:
                index_bytes += tensor.sparse.index_bytes
        ops = [
            _op_info(i, op, model, tensors, op_names, number)
            for i, op in enumerate(subgraph.operators or [])
        ]
        subgraphs.append(
            SubgraphReport(
                index=number,
                name=_name(subgraph.name),
                ops=ops,
                tensors=tensors,
                inputs=[int(i) for i in _ints(subgraph.inputs)],
                outputs=[int(i) for i in _ints(subgraph.outputs)],
            )
        )
    main = subgraphs[0]
    return TFLiteReport(
        origin=origin,
        size_bytes=len(data),
        weights_bytes=sum(buffer_bytes.values()),
        subgraph_count=len(subgraphs),
        ops=main.ops,
        tensors=main.tensors,
        inputs=main.inputs,
        outputs=main.outputs,
        subgraphs=subgraphs,
        sparse_index_bytes=index_bytes,
        output_names=_output_names(model, main),
    )


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values] if values is not None else []


def _output_names(model: Any, main: SubgraphReport) -> list[str]:
    """A name for each output of subgraph 0: the signature's output key, else the tensor name."""
    names = {index: main.tensors[index].name for index in main.outputs}
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in signature.outputs or []:
                if entry.tensorIndex in names:
                    names[entry.tensorIndex] = _name(entry.name)
    return [names[index] for index in main.outputs]


def op_name(model: Any, op: Any) -> str:
    """The builtin name of `op` ("CONV_2D") in `model` (the schema's object API, `ModelT`); ""
    for a custom op."""
    code = model.operatorCodes[op.opcodeIndex]
    names = _enum_names(compat.tflite_schema().BuiltinOperator)
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")


def _enum_names(enum: Any) -> dict[int, str]:
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def _name(raw: Any) -> str:
    # a damaged file may hold bytes that are not UTF-8: show them rather than fail on a name
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")


def _tensor_info(
    index: int, tensor: Any, model: Any, data: bytes, type_names: dict[int, str]
) -> TensorInfo:
    dtype = type_names.get(tensor.type, f"TYPE_{tensor.type}")
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    signature = (
        [int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None else shape
    )
    raw = _buffer_bytes(model.buffers[tensor.buffer], data) if tensor.buffer else b""
    sparse = _sparse_encoding(tensor.sparsity, shape, dtype, len(raw))
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
        buffer_index=int(tensor.buffer),
        sparse=sparse,
    )


_INDEX_ITEM_BYTES = {1: 4, 2: 2, 3: 1}  # SparseIndexVector: Int32Vector, Uint16Vector, Uint8Vector
_ITEM_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1, "UINT8": 1, "INT16": 2, "INT32": 4}


def _index_vector_bytes(kind: int, vector: Any) -> int:
    values = getattr(vector, "values", None) if vector is not None else None
    return 0 if values is None else len(values) * _INDEX_ITEM_BYTES.get(int(kind), 4)


def _sparse_encoding(
    sparsity: Any, shape: list[int], dtype: str, values_bytes: int
) -> SparseEncoding | None:
    """Values and index bytes of a tensor stored in TFLite's sparse format, or None if dense."""
    if sparsity is None or not sparsity.dimMetadata:
        return None
    index_bytes = 0
    for dimension in sparsity.dimMetadata:
        index_bytes += _index_vector_bytes(dimension.arraySegmentsType, dimension.arraySegments)
        index_bytes += _index_vector_bytes(dimension.arrayIndicesType, dimension.arrayIndices)
    dense_count = int(np.prod(shape)) if shape else 0
    stored = values_bytes // _ITEM_BYTES.get(dtype, 1)
    return SparseEncoding(
        dense_shape=shape,
        values_bytes=values_bytes,
        index_bytes=index_bytes,
        stored_values=stored,
        sparsity=1.0 - stored / dense_count if dense_count else 0.0,
        block_map=_ints(sparsity.blockMap),
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
    index: int,
    op: Any,
    model: Any,
    tensors: list[TensorInfo],
    op_names: dict[int, str],
    subgraph: int = 0,
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
        subgraph,
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


def name_outputs(flatbuffer: bytes, names: list[str]) -> bytes:
    """`flatbuffer` with its model outputs named `names` (in the file's output order).

    The converter names the outputs of a traced function `Identity`, `Identity_1`, ...; a Keras
    model with named outputs (a dict) keeps its names in the file this way, in the output
    tensors and in every signature's output keys, so `evaluate_tflite(output="name")` and a
    runtime's signature runner find them.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, {"score": keras.layers.Dense(1)(inputs)})
        >>> tfc.inspect(name_outputs(tfc.convert(model), ["score"])).output_names
        ['score']
    """
    model = read_model(flatbuffer)
    name_outputs_in_place(model, names)
    return pack(model, len(flatbuffer))


def name_outputs_in_place(model: Any, names: list[str]) -> None:
    """`name_outputs` on a parsed model (`read_model`), in place."""
    main = model.subgraphs[0]
    if len(names) != len(main.outputs):
        raise ValueError(f"{len(names)} names for {len(main.outputs)} outputs of the file.")
    for index, name in zip(main.outputs, names, strict=True):
        main.tensors[index].name = name.encode()
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex != 0:
            continue
        for entry in signature.outputs or []:
            if entry.tensorIndex in main.outputs:
                entry.name = names[list(main.outputs).index(entry.tensorIndex)].encode()
