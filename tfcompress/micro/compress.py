"""`compress`: a TFLite file whose clustered weights are stored as look-up tables that TFLM decodes.

A clustered layer's kernel holds few distinct values (16 for 16 clusters), and after int8
quantization each output channel still holds at most that many. TensorFlow Lite Micro (TFLM)
decodes such tensors at run time with its `TFLM_DECODE` operator: the tensor's data becomes
bit-packed indices (4 bits each for 16 values) and a small ancillary tensor holds the value
table (one table per channel for per-channel quantized weights). `compress` rewrites a file
that way, so its flash shrinks; a pruned tensor can get TFLM's prune encoding instead (a bit
per weight saying whether it is zero, then the non-zero weights). `decompress` is the exact
inverse (LiteRT, which has no `TFLM_DECODE` kernel, runs the decompressed file).

The format is TFLM's (`tensorflow/lite/micro/compression/` and `kernels/decode_state_lut.cc`,
`decode_state_prune.cc` in tflite-micro), written here by our own flatbuffer editing; the choices (DECODE operators
rather than the older compression metadata, which weights, the limits) are in
docs/dev/decisions/2026-12-06-tflm-compression.md.

Imports `tfcompress.tflite` and `tfcompress.core` only, and never TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.micro.errors import MicroError
from tfcompress.tflite.flatbuffer import TFLiteSource, load_bytes, pack, read_model

DECODE_OP = (
    "TFLM_DECODE"  # the custom op name TFLM registers with MicroMutableOpResolver::AddDecode
)
MAX_INDEX_BITS = 7  # TFLM's LUT decoder reads indices of 1 to 7 bits
MAX_TABLE = 128  # and value tables of at most 128 entries per channel
_HEADER = 16  # the DECODE common metadata that starts every ancillary tensor
_LUT = 0  # decode type of look-up tables
_PRUNE = 2  # decode type of pruned tensors: a bit mask and the values the mask keeps
_VERSION = 1  # version of the common metadata and of the LUT format
# What a compressed tensor costs beyond its indices and table: two tensor tables, a DECODE op
# and a buffer entry, in bytes (measured on converter files; it decides only tiny tensors).
_OVERHEAD = 160
# Ops whose constant inputs (kernels, biases) TFLM's kernels read only when invoked, the ops
# TFLM's compression documentation lists. A kernel that reads a constant while preparing
# (PAD's paddings, RESHAPE's shape, ...) would fail on a decoded tensor, so no other op's
# inputs are touched.
WEIGHT_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONCATENATION"}
)
_TYPES = {
    "FLOAT32": np.dtype("<f4"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("u1"),
}
_INTEGER_TYPES = {"INT8", "INT16"}


@dataclass
class LookUpTable:
    """A tensor as value tables and indices into them, the way TFLM's LUT decoder reads it.

    Attributes:
        tables: one row per channel (a single row for a per-tensor table), each the channel's
            distinct values in ascending order of their bytes, padded with zeros to `stride`.
        indices: each element's position in its channel's row, in the tensor's element order.
        bits: the width of one packed index (1 to 7).
        channel_axis: the axis the rows follow (0 or the last), or None for one table.

    Example:
        >>> import numpy as np
        >>> from tfcompress.micro.compress import lut_encode
        >>> lut = lut_encode(np.array([[3, 3, -1], [5, 5, 5]], np.int8), channel_axis=0)
        >>> lut.bits, lut.stride, lut.indices.tolist()
        (1, 2, [0, 0, 1, 0, 0, 0])
    """

    tables: np.ndarray
    indices: np.ndarray
    bits: int
    channel_axis: int | None

    @property
    def stride(self) -> int:
        """Entries per channel table."""
        return int(self.tables.shape[1])


def lut_encode(
    array: np.ndarray, channel_axis: int | None = None, max_bits: int = MAX_INDEX_BITS
) -> LookUpTable | None:
    """`array` as look-up tables (one per slice along `channel_axis`), or None when it needs more
    than `max_bits` bits per index.

    Values are told apart by their bytes, so a float -0.0 stays -0.0 and the decoded tensor is
    bit for bit the original.

    Args:
        array: the tensor's values.
        channel_axis: 0 or the last axis for one table per channel (per-channel quantized
            weights), None for one table.
        max_bits: the widest index allowed (at most 7, TFLM's limit).

    Example:
        >>> import numpy as np
        >>> from tfcompress.micro.compress import lut_decode, lut_encode
        >>> weights = np.random.default_rng(0).choice(np.arange(-8, 8), (4, 3, 3, 2)).astype("i1")
        >>> lut = lut_encode(weights, channel_axis=0)
        >>> lut.bits, bool(np.array_equal(lut_decode(lut, weights.shape), weights))
        (4, True)
    """
    array = np.ascontiguousarray(array)
    raw = array.view(f"u{array.dtype.itemsize}") if array.dtype.itemsize > 1 else array.view("u1")
    if channel_axis is None:
        rows = raw.reshape(1, -1)
    elif channel_axis == 0:
        rows = raw.reshape(array.shape[0], -1)
    elif channel_axis == array.ndim - 1:
        rows = raw.reshape(-1, array.shape[-1]).T
    else:
        raise ValueError(f"channel_axis must be 0, the last axis or None; got {channel_axis}.")
    uniques = []
    indices = np.empty(rows.shape, np.int64)
    for position, row in enumerate(rows):
        values, inverse = np.unique(row, return_inverse=True)
        uniques.append(values)
        indices[position] = inverse.reshape(-1)
    stride = max(len(values) for values in uniques)
    bits = max(1, (stride - 1).bit_length())
    if bits > min(max_bits, MAX_INDEX_BITS) or stride > MAX_TABLE:
        return None
    tables = np.zeros((len(uniques), stride), raw.dtype)
    for position, values in enumerate(uniques):
        tables[position, : len(values)] = values
    if channel_axis is not None and channel_axis == array.ndim - 1 and channel_axis != 0:
        indices = indices.T
    return LookUpTable(tables.view(array.dtype), indices.reshape(-1), bits, channel_axis)


def lut_decode(lut: LookUpTable, shape: tuple[int, ...] | list[int]) -> np.ndarray:
    """The tensor of shape `shape` that `lut` describes (the inverse of `lut_encode`).

    Example:
        >>> import numpy as np
        >>> from tfcompress.micro.compress import lut_decode, lut_encode
        >>> x = np.array([1.5, -0.0, 1.5, 2.0], np.float32)
        >>> np.signbit(lut_decode(lut_encode(x), x.shape)).tolist()
        [False, True, False, False]
    """
    channels = lut.tables.shape[0]
    if lut.channel_axis is None or channels == 1:
        return lut.tables[0][lut.indices].reshape(shape)
    if lut.channel_axis == 0:
        rows = lut.indices.reshape(channels, -1)
        return np.take_along_axis(lut.tables, rows, axis=1).reshape(shape)
    columns = lut.indices.reshape(-1, channels)
    return lut.tables.T[columns, np.arange(channels)].reshape(shape)


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """`indices` as `bits`-wide unsigned fields, most significant bit first, zero-padded to a byte.

    Example:
        >>> from tfcompress.micro.compress import pack_indices
        >>> pack_indices([7, 0, 3, 2], 3).hex()  # 111 000 011 010 + 4 zero bits
        'e1a0'
    """
    values = np.asarray(indices, dtype=np.int64).reshape(-1)
    shifts = np.arange(bits - 1, -1, -1)
    fields = ((values[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(fields.reshape(-1)).tobytes()


def unpack_indices(data: bytes, bits: int, count: int) -> np.ndarray:
    """The first `count` `bits`-wide fields of `data` (the inverse of `pack_indices`).

    Example:
        >>> from tfcompress.micro.compress import unpack_indices
        >>> unpack_indices(bytes.fromhex("e1a0"), 3, 4).tolist()
        [7, 0, 3, 2]
    """
    stream = np.unpackbits(np.frombuffer(data, np.uint8))
    if stream.size < count * bits:
        raise MicroError(f"{len(data)} bytes hold fewer than {count} indices of {bits} bits.")
    fields = stream[: count * bits].reshape(count, bits).astype(np.int64)
    return fields @ (1 << np.arange(bits - 1, -1, -1))


def ancillary_bytes(lut: LookUpTable) -> bytes:
    """The ancillary tensor TFLM's DECODE reads: the 16-byte common header, then the tables.

    Header: decode type 0 (LUT) and version 1 in bytes 0-1; the LUT format's version 1, the
    index width and the table stride in bytes 4-6; zeros elsewhere. The tables follow, little
    endian, one row per channel.

    Example:
        >>> import numpy as np
        >>> from tfcompress.micro.compress import ancillary_bytes, lut_encode
        >>> data = ancillary_bytes(lut_encode(np.array([4, -4, 4], np.int8)))
        >>> data[:7].hex(), data[16:].hex()
        ('00010000010102', '04fc')
    """
    header = bytearray(_HEADER)
    header[0], header[1] = _LUT, _VERSION
    header[4], header[5], header[6] = _VERSION, lut.bits, lut.stride
    tables = np.ascontiguousarray(lut.tables)
    return bytes(header) + tables.astype(tables.dtype.newbyteorder("<")).tobytes()


def zero_values(shape: list[int], zero_points: list[int], channel_axis: int | None) -> np.ndarray:
    """Each element's zero point (what a pruned weight holds), as TFLM's prune decoder fills it.

    Example:
        >>> from tfcompress.micro.compress import zero_values
        >>> zero_values([2, 3], [1, -2], 0).tolist()
        [[1, 1, 1], [-2, -2, -2]]
    """
    points = np.asarray(zero_points if zero_points else [0], np.int64)
    if channel_axis is None or len(points) == 1:
        return np.full(shape, points[0], np.int64)
    view = [1] * len(shape)
    view[channel_axis] = len(points)
    return np.broadcast_to(points.reshape(view), shape).copy()


def prune_encode(array: np.ndarray, zeros: np.ndarray) -> tuple[bytes, bytes]:
    """(bit mask, ancillary tensor) of TFLM's prune decoding: a 1 bit (most significant first)
    for each element that differs from its zero point, whose value follows in the table.

    Example:
        >>> import numpy as np
        >>> from tfcompress.micro.compress import prune_encode
        >>> mask, ancillary = prune_encode(np.array([0, 5, 0, 0, -3], np.int8), np.zeros(5, int))
        >>> mask.hex(), ancillary[0], ancillary[16:].hex()
        ('48', 2, '05fd')
    """
    array = np.ascontiguousarray(array)
    raw = array.view(f"u{array.dtype.itemsize}")
    kept = raw.reshape(-1) != zeros.astype(array.dtype).view(raw.dtype).reshape(-1)
    header = bytearray(_HEADER)
    header[0], header[1], header[4] = _PRUNE, _VERSION, _VERSION
    values = array.reshape(-1)[kept]
    table = values.astype(values.dtype.newbyteorder("<")).tobytes()
    return np.packbits(kept).tobytes(), bytes(header) + table


def prune_decode(mask: bytes, ancillary: bytes, zeros: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The tensor `prune_encode` described, of `zeros`' shape (the inverse of `prune_encode`)."""
    count = zeros.size
    kept = np.unpackbits(np.frombuffer(mask, np.uint8))[:count].astype(bool)
    values = np.frombuffer(ancillary[_HEADER:], np.dtype(dtype).newbyteorder("<"))
    if kept.size < count or values.size < kept.sum():
        raise MicroError("a pruned tensor's mask or values are damaged.")
    result = zeros.astype(dtype).reshape(-1)
    result[kept] = values[: kept.sum()]
    return result.reshape(zeros.shape)


@dataclass
class _Candidate:
    index: int
    encoded: bytes
    ancillary: bytes
    consumers: list[int]


def compress(
    model_file: TFLiteSource,
    *,
    max_bits: int = MAX_INDEX_BITS,
    max_decoded_bytes: int | None = None,
) -> bytes:
    """The file with every weight tensor of few distinct values stored as a TFLM look-up table.

    A constant input of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV or
    CONCATENATION with at most 2**`max_bits` distinct values per table (per output channel for
    per-channel quantized weights; at most 128, TFLM's limit) becomes bit-packed indices plus its
    value tables, decoded by a `TFLM_DECODE` op just before each op that reads it. A 16-cluster
    model's kernels take 4 bits per weight instead of 8. A tensor mostly of zeros (a pruned
    model) is stored as TFLM's prune encoding instead where that is smaller: one bit per weight
    saying whether it is zero, then the weights that are not. Tensors that would not shrink
    (biases: one value per channel) stay as they are. The outputs on TFLM are the same bits: the
    decoded tensors are the original ones, exactly.

    The file needs TFLM's DECODE kernel: `MicroMutableOpResolver::AddDecode()` (what
    `tfc.micro.export` registers for such a file), in TFLM sources from late 2025 on. The
    decoded tensors live in the tensor arena while their op runs: the arena grows by about the
    largest decoded tensor (`tfc.micro.check` measures it). Invoking takes longer (each weight is
    looked up before use). LiteRT has no `TFLM_DECODE` kernel: keep the uncompressed file for
    phones, or run `decompress` on this one.

    Args:
        model_file: an integer (`tfc.convert(model, "int8", data)`) `.tflite` path or bytes,
            from a clustered model for a real gain (`tfc.cluster_weights` then
            `tfc.strip_clustering`).
        max_bits: the widest index to use, 1 to 7: a tensor needing more stays uncompressed.
        max_decoded_bytes: leave tensors larger than this uncompressed, which bounds what the
            arena grows by (a decoded tensor lives in the arena while its op runs). None: no
            bound.

    Returns:
        The compressed flatbuffer.

    Raises:
        MicroError: the file is a float model, is compressed already, or no tensor has few
            enough distinct values (the message says what to do).
        TFLiteFileError: not a TFLite flatbuffer. FileNotFoundError: no such path.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> model = build_digits_cnn(width=8)
        >>> x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
        >>> clustered = tfc.cluster_weights(model, number_of_clusters=16)
        >>> flat = tfc.convert(tfc.strip_clustering(clustered), "int8", x)
        >>> small = tfc.micro.compress(flat)
        >>> len(small) < len(flat), tfc.micro.check(small).op_counts["CUSTOM:TFLM_DECODE"] > 0
        (True, True)
    """
    if isinstance(max_bits, bool) or not isinstance(max_bits, int) or not 1 <= max_bits <= 7:
        raise ValueError(
            f"max_bits must be an integer from 1 to 7 (TFLM's limit); got {max_bits!r}."
        )
    if max_decoded_bytes is not None and (
        isinstance(max_decoded_bytes, bool) or not isinstance(max_decoded_bytes, int)
    ):
        raise ValueError(
            f"max_decoded_bytes must be a number of bytes or None; got {max_decoded_bytes!r}."
        )
    content, origin = load_bytes(model_file)
    model = read_model(content, origin)
    schema = compat.tflite_schema()
    types = {value: name for name, value in vars(schema.TensorType).items() if name.isupper()}
    if _decode_code(model) is not None:
        raise MicroError(f"{origin} is compressed already (it has {DECODE_OP} ops).")
    _refuse_float(model, types, origin)
    buffer_users = _buffer_users(model)
    chosen: dict[int, list[_Candidate]] = {}
    widest = ""
    for number, subgraph in enumerate(model.subgraphs):
        found, reason = _candidates(
            model, subgraph, types, buffer_users, max_bits, max_decoded_bytes
        )
        chosen[number] = found
        widest = widest or reason
    if not any(chosen.values()):
        raise MicroError(
            f"{origin} has no weight tensor that look-up tables or a zero mask would "
            f"shrink{widest}. Cluster the "
            "model before converting it (tfc.strip_clustering(tfc.cluster_weights(model, "
            "number_of_clusters=16)), then fine-tune), so that each kernel holds at most "
            f"2**{max_bits} distinct values per output channel, or prune it "
            "(tfc.prune_low_magnitude, then tfc.strip_pruning)."
        )
    decode_code = _add_decode_code(model, schema)
    for number, found in chosen.items():
        if found:
            _rewrite(model, model.subgraphs[number], found, decode_code, schema)
    result = pack(model, len(content))
    read_model(result, "the compressed file")
    return result


def _refuse_float(model: Any, types: dict[int, str], origin: str) -> None:
    tensors = [t for subgraph in model.subgraphs for t in subgraph.tensors or []]
    if not any(types.get(t.type) in _INTEGER_TYPES for t in tensors):
        raise MicroError(
            f"{origin} is a float model (it has no int8 or int16 tensor). TFLM runs integer "
            "models: convert to int8 first (tfc.convert(model, 'int8', data, target='micro')), "
            "then compress that file."
        )


def _buffer_users(model: Any) -> dict[int, int]:
    users: dict[int, int] = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    return users


def _op_names(model: Any) -> list[str]:
    schema = compat.tflite_schema()
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if name.isupper()}
    result = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = names.get(builtin, f"OP_{builtin}")
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        result.append(f"CUSTOM:{custom}" if name == "CUSTOM" else name)
    return result


def _decode_code(model: Any) -> int | None:
    for position, name in enumerate(_op_names(model)):
        if name == f"CUSTOM:{DECODE_OP}":
            return position
    return None


def _channel_axis(tensor: Any, shape: list[int]) -> tuple[bool, int | None]:
    """(can TFLM decode it, its table axis): per-channel tables along axis 0 or the last one."""
    quantization = tensor.quantization
    scales = 0 if quantization is None or quantization.scale is None else len(quantization.scale)
    if scales <= 1:
        return True, None
    axis = int(quantization.quantizedDimension)
    if axis not in (0, len(shape) - 1) or shape[axis] != scales:
        return False, None
    return True, axis


def _candidates(
    model: Any,
    subgraph: Any,
    types: dict[int, str],
    buffer_users: dict[int, int],
    max_bits: int,
    max_decoded_bytes: int | None = None,
) -> tuple[list[_Candidate], str]:
    """The tensors of `subgraph` worth compressing, and why the largest refused one was not."""
    names = _op_names(model)
    consumers: dict[int, list[int]] = {}
    for position, op in enumerate(subgraph.operators or []):
        for index in dict.fromkeys(int(i) for i in (op.inputs if op.inputs is not None else [])):
            if index >= 0:
                consumers.setdefault(index, []).append(position)
    ends = {int(i) for i in [*_ints(subgraph.inputs), *_ints(subgraph.outputs)]}
    found: list[_Candidate] = []
    refused: tuple[int, str] = (0, "")
    for index, tensor in enumerate(subgraph.tensors or []):
        data = _data(model, tensor)
        dtype = _TYPES.get(types.get(tensor.type, ""))
        readers = consumers.get(index, [])
        if (
            not data
            or (max_decoded_bytes is not None and len(data) > max_decoded_bytes)
            or dtype is None
            or not readers
            or index in ends
            or tensor.isVariable
            or tensor.sparsity is not None
            or buffer_users.get(tensor.buffer, 0) != 1
            or any(names[subgraph.operators[p].opcodeIndex] not in WEIGHT_OPS for p in readers)
        ):
            continue
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        decodable, axis = _channel_axis(tensor, shape)
        array = np.frombuffer(data, dtype)
        if not decodable or array.size != int(np.prod(shape)):
            continue
        encodings = []
        lut = lut_encode(array.reshape(shape), axis, max_bits)
        if lut is not None:
            encodings.append((pack_indices(lut.indices, lut.bits), ancillary_bytes(lut)))
        elif len(data) > refused[0]:
            name = _text(tensor.name)
            refused = (len(data), f" (the largest, '{name}', has more than {2**max_bits} "
                       "distinct values per table)")  # fmt: skip
        zeros = _zeros_of(tensor, types, shape, axis)
        if zeros is not None:
            encodings.append(prune_encode(array.reshape(shape), zeros))
        if not encodings:
            continue
        encoded, ancillary = min(encodings, key=lambda pair: len(pair[0]) + len(pair[1]))
        if len(encoded) + len(ancillary) + _OVERHEAD * len(readers) < len(data):
            found.append(_Candidate(index, encoded, ancillary, readers))
    return found, refused[1]


def _zeros_of(
    tensor: Any, types: dict[int, str], shape: list[int], axis: int | None
) -> np.ndarray | None:
    """Each element's zero point, or None where TFLM's prune decoder cannot restore the tensor
    (a type other than int8 with a non-zero zero point)."""
    quantization = tensor.quantization
    points = (
        []
        if quantization is None or quantization.zeroPoint is None
        else _ints(quantization.zeroPoint)
    )
    if any(points) and types.get(tensor.type) != "INT8":
        return None
    if points and len(points) > 1 and not any(points):
        points = [0]
    return zero_values(shape, points, axis if len(points) > 1 else None)


def _rewrite(model: Any, subgraph: Any, found: list[_Candidate], code: int, schema: Any) -> None:
    """Give each found tensor packed indices, a table, and a DECODE op before each reader.

    The original tensor (its index, name, shape, quantization) becomes the decoded output read
    by its first reader, so nothing else in the file moves; a later reader gets a copy, since
    TFLM decodes once per reader and frees the decoded tensor after its op.
    """
    tensors = subgraph.tensors
    empty = _empty_buffer(model, schema)
    decodes: dict[int, list[tuple[int, int, int]]] = {}
    for candidate in found:
        tensor = tensors[candidate.index]
        name = _text(tensor.name)
        model.buffers[tensor.buffer].data = np.frombuffer(candidate.encoded, np.uint8)
        indices = _new_tensor(
            schema, [len(candidate.encoded)], tensor.buffer, f"{name}/lut_indices"
        )
        model.buffers.append(_buffer(schema, candidate.ancillary))
        table = _new_tensor(
            schema, [len(candidate.ancillary)], len(model.buffers) - 1, f"{name}/lut_table"
        )
        tensors.extend([indices, table])
        indices_at, table_at = len(tensors) - 2, len(tensors) - 1
        tensor.buffer = empty
        for order, reader in enumerate(candidate.consumers):
            output = candidate.index
            if order:
                copy = _copy_tensor(schema, tensor, f"{name}/decoded_{order}")
                tensors.append(copy)
                output = len(tensors) - 1
                op = subgraph.operators[reader]
                op.inputs = [output if int(i) == candidate.index else int(i) for i in op.inputs]
            decodes.setdefault(reader, []).append((indices_at, table_at, output))
    operators = []
    for position, op in enumerate(subgraph.operators):
        if position in decodes:
            decode = schema.OperatorT()
            decode.opcodeIndex = code
            decode.inputs = [i for triple in decodes[position] for i in triple[:2]]
            decode.outputs = [triple[2] for triple in decodes[position]]
            operators.append(decode)
        operators.append(op)
    subgraph.operators = operators


def _empty_buffer(model: Any, schema: Any) -> int:
    """The index of an empty buffer (the converter's buffer 0), added when the file has none."""
    first = model.buffers[0] if model.buffers else None
    if first is not None and (first.data is None or len(first.data) == 0) and not first.offset:
        return 0
    model.buffers.append(schema.BufferT())
    return len(model.buffers) - 1


def _buffer(schema: Any, data: bytes) -> Any:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    return buffer


def _new_tensor(schema: Any, shape: list[int], buffer: int, name: str) -> Any:
    tensor = schema.TensorT()
    tensor.shape = np.array(shape, np.int32)
    tensor.type = schema.TensorType.UINT8
    tensor.buffer = buffer
    tensor.name = name.encode()
    return tensor


def _copy_tensor(schema: Any, tensor: Any, name: str) -> Any:
    copy = schema.TensorT()
    for key, value in vars(tensor).items():
        setattr(copy, key, value)
    copy.name = name.encode()
    return copy


def _add_decode_code(model: Any, schema: Any) -> int:
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = DECODE_OP.encode()
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _data(model: Any, tensor: Any) -> bytes:
    buffers = model.buffers or []
    if not 0 <= tensor.buffer < len(buffers):
        return b""
    buffer = buffers[tensor.buffer]
    if buffer.offset and buffer.offset > 1:
        raise MicroError(
            "The file keeps its weights outside the flatbuffer (a model over 2 GB): far too "
            "large for a microcontroller."
        )
    return b"" if buffer.data is None else bytes(np.asarray(buffer.data, np.uint8))


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _text(raw: Any) -> str:
    if raw is None:
        return ""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def decompress(model_file: TFLiteSource) -> bytes:
    """The file with every `TFLM_DECODE` look-up table decoded back into a plain constant tensor.

    The inverse of `compress`: each decoded tensor holds exactly the values its look-up table
    (or zero mask) describes, the DECODE ops and the tables are gone, and LiteRT (which has no
    `TFLM_DECODE` kernel) runs the result. A file without DECODE ops comes back as it is. Reads
    the LUT and prune decode types (what `compress` writes), not Huffman or custom ones.

    Args:
        model_file: a `.tflite` path or bytes.

    Returns:
        The decompressed flatbuffer.

    Raises:
        MicroError: a DECODE op of another decode type (Huffman, pruning, custom) or a damaged
            table. TFLiteFileError: not a TFLite flatbuffer.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
        >>> model = tfc.strip_clustering(tfc.cluster_weights(build_digits_cnn(), number_of_clusters=8))
        >>> flat = tfc.convert(model, "int8", x)
        >>> back = tfc.micro.decompress(tfc.micro.compress(flat))
        >>> sorted(tfc.inspect(back).op_counts) == sorted(tfc.inspect(flat).op_counts)
        True
    """
    content, origin = load_bytes(model_file)
    model = read_model(content, origin)
    code = _decode_code(model)
    if code is None:
        return content
    schema = compat.tflite_schema()
    types = {value: name for name, value in vars(schema.TensorType).items() if name.isupper()}
    dropped_buffers: set[int] = set()
    for subgraph in model.subgraphs:
        dropped_buffers |= _decode_subgraph(model, subgraph, code, types, origin)
    in_use = {t.buffer for sg in model.subgraphs for t in sg.tensors or []}
    in_use |= {entry.buffer for entry in model.metadata or []} | {0}
    _drop_buffers(model, dropped_buffers - in_use)
    if not any(op.opcodeIndex == code for sg in model.subgraphs for op in sg.operators or []):
        del model.operatorCodes[code]
        for subgraph in model.subgraphs:
            for op in subgraph.operators or []:
                op.opcodeIndex -= int(op.opcodeIndex > code)
    result = pack(model, len(content))
    read_model(result, "the decompressed file")
    return result


def _decode_subgraph(
    model: Any, subgraph: Any, code: int, types: dict[int, str], origin: str
) -> set[int]:
    """Decode the DECODE ops of one subgraph in place; the buffers left unused."""
    tensors = subgraph.tensors
    decoded: dict[int, tuple[int, np.ndarray]] = {}  # indices tensor -> (first output, values)
    rename: dict[int, int] = {}
    ours: set[int] = set()
    kept = []
    for op in subgraph.operators or []:
        if op.opcodeIndex != code:
            kept.append(op)
            continue
        inputs, outputs = _ints(op.inputs), _ints(op.outputs)
        if len(inputs) != 2 * len(outputs):
            raise MicroError(
                f"{origin}: a {DECODE_OP} op has {len(inputs)} inputs for {len(outputs)} outputs."
            )
        for position, output in enumerate(outputs):
            indices_at, table_at = inputs[2 * position], inputs[2 * position + 1]
            ours.update((indices_at, table_at))
            if indices_at in decoded:
                rename[output] = decoded[indices_at][0]
                ours.add(output)
                continue
            values = _decode_tensor(model, tensors, indices_at, table_at, output, types, origin)
            decoded[indices_at] = (output, values)
    subgraph.operators = kept
    for indices_at, (output, values) in decoded.items():
        tensors[output].buffer = tensors[indices_at].buffer
        model.buffers[tensors[output].buffer].data = np.frombuffer(values.tobytes(), np.uint8)
    for op in kept:
        op.inputs = [rename.get(int(i), int(i)) for i in op.inputs]
    unused = ours - _referenced(subgraph)
    still_used = {t.buffer for i, t in enumerate(tensors) if i not in unused}
    dropped_buffers = {tensors[i].buffer for i in unused} - still_used
    _drop_tensors(model, subgraph, unused)
    return dropped_buffers


def _decode_tensor(
    model: Any,
    tensors: list[Any],
    indices_at: int,
    table_at: int,
    output: int,
    types: dict[int, str],
    origin: str,
) -> np.ndarray:
    ancillary = _data(model, tensors[table_at])
    target = tensors[output]
    dtype = _TYPES.get(types.get(target.type, ""))
    if len(ancillary) < _HEADER or ancillary[0] not in (_LUT, _PRUNE) or dtype is None:
        kind = ancillary[0] if ancillary else "none"
        raise MicroError(
            f"{origin}: tensor '{_text(target.name)}' uses decode type {kind}; decompress reads "
            "look-up tables (type 0) and pruned tensors (type 2) of FLOAT32, INT8, INT16, INT32, "
            "INT64 or BOOL tensors only."
        )
    bits, stride = ancillary[5] & 0x07, ancillary[6]
    shape = [int(d) for d in (target.shape if target.shape is not None else [])]
    count = int(np.prod(shape))
    decodable, axis = _channel_axis(target, shape)
    if ancillary[0] == _PRUNE:
        zeros = _zeros_of(target, types, shape, axis)
        if not decodable or zeros is None:
            raise MicroError(f"{origin}: the pruned tensor '{_text(target.name)}' is damaged.")
        return prune_decode(_data(model, tensors[indices_at]), ancillary, zeros, dtype)
    channels = shape[axis] if axis is not None else 1
    tables = np.frombuffer(ancillary[_HEADER:], dtype)
    if not decodable or bits == 0 or tables.size < channels * stride:
        raise MicroError(f"{origin}: the look-up table of '{_text(target.name)}' is damaged.")
    indices = unpack_indices(_data(model, tensors[indices_at]), bits, count)
    table = tables[: channels * stride].reshape(channels, stride)
    if indices.size and indices.max() >= stride:
        raise MicroError(f"{origin}: the look-up table of '{_text(target.name)}' is damaged.")
    return lut_decode(LookUpTable(table, indices, bits, axis), shape).astype(dtype)


def _referenced(subgraph: Any) -> set[int]:
    used = {*_ints(subgraph.inputs), *_ints(subgraph.outputs)}
    for op in subgraph.operators or []:
        used.update(_ints(op.inputs))
        used.update(_ints(op.outputs))
        used.update(_ints(op.intermediates))
    return used


def _drop_tensors(model: Any, subgraph: Any, unused: set[int]) -> None:
    """Remove the `unused` tensors and renumber every reference to the others."""
    if not unused:
        return
    number = {}
    for index in range(len(subgraph.tensors)):
        if index not in unused:
            number[index] = len(number)
    subgraph.tensors = [t for i, t in enumerate(subgraph.tensors) if i not in unused]

    def renumber(values: Any) -> Any:
        return (
            None if values is None else [number[int(v)] if int(v) >= 0 else int(v) for v in values]
        )

    subgraph.inputs = renumber(subgraph.inputs)
    subgraph.outputs = renumber(subgraph.outputs)
    for op in subgraph.operators or []:
        op.inputs = renumber(op.inputs)
        op.outputs = renumber(op.outputs)
        if op.intermediates is not None:
            op.intermediates = renumber(op.intermediates)
    position = model.subgraphs.index(subgraph)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == position:
            for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                entry.tensorIndex = number[int(entry.tensorIndex)]


def _drop_buffers(model: Any, dropped: set[int]) -> None:
    """Remove the `dropped` buffers and renumber the tensors and metadata pointing past them."""
    if not dropped:
        return
    number = {}
    for index in range(len(model.buffers)):
        if index not in dropped:
            number[index] = len(number)
    model.buffers = [b for i, b in enumerate(model.buffers) if i not in dropped]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            tensor.buffer = number[tensor.buffer]
    for entry in model.metadata or []:
        entry.buffer = number[entry.buffer]
