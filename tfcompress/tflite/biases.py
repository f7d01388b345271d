"""32-bit biases for the 16-bit convolutions and fully connected layers of a file.

TF's converter stores the bias of every op with int16 activations as int64 (8 bytes a channel,
where an int8 op's bias takes 4). `CONV_2D` and `FULLY_CONNECTED` also take an int32 bias on
LiteRT and on TensorFlow Lite Micro, named by the op's `quantized_bias_type` option.
`narrow_biases` stores a bias in 32 bits when no accumulator of its op can leave the int32 range:
for each output channel, `32768 * sum(|w|) + |b| < 2**31` over the channel's int8 weights `w` and
its bias `b` (an int16 input is at most 32768 in size, its zero point 0), so the sum stays in
range whatever the input and in whatever order it is added. A bias that fails the bound, or that
another kind of op reads, stays 64-bit: LiteRT's `DEPTHWISE_CONV_2D` takes int64 only, and TFLM's
`TRANSPOSE_CONV` reads an int32 bias of a 16-bit op wrongly.

The int32-bias kernels rescale the accumulator with the int8 kernels' rounding, so an output can
differ from the int64 file's by one int16 step; the error against the float model is the same
(`tests/tflite/test_biases.py` compares both files on LiteRT's kernels and on TFLite Micro's).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.flatbuffer import op_name, pack, read_model

#: the ops whose int32 bias LiteRT and TFLM both take with int16 activations
NARROWED_OPS = ("CONV_2D", "FULLY_CONNECTED")
_INT16_MAGNITUDE = 32768
_INT32_LIMIT = 2**31 - 1


def narrow_biases(flatbuffer: bytes) -> bytes:
    """`flatbuffer` with the int64 biases of its 16-bit ops stored as int32 where they provably fit.

    A file without int64 biases (int8, float) comes back as it is.

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, bias_initializer="ones")])
        >>> x = np.random.rand(16, 4).astype("float32")
        >>> flat = tfc.convert(model, "int16x8", x, check=False)  # convert narrows them itself
        >>> sorted({t.dtype for t in tfc.inspect(flat).tensors})
        ['INT16', 'INT32', 'INT8']
        >>> narrow_biases(flat) == flat
        True
    """
    model = read_model(flatbuffer, origin="the file given to narrow_biases")
    if narrow_biases_in_place(model):
        return pack(model, len(flatbuffer))
    return flatbuffer


def narrow_biases_in_place(model: Any) -> bool:
    """`narrow_biases` on a parsed model (`read_model`), in place: whether any bias changed."""
    return _narrow(model, compat.tflite_schema())


def _narrow(model: Any, schema: Any) -> bool:
    """Narrow the eligible biases of a parsed model in place; whether any changed."""
    changed = False
    holders = Counter(
        tensor.buffer for subgraph in model.subgraphs or [] for tensor in subgraph.tensors or []
    )
    for subgraph in model.subgraphs or []:
        if not any(tensor.type == schema.TensorType.INT64 for tensor in subgraph.tensors or []):
            continue  # no 64-bit bias: an int8 or float subgraph
        for bias_index, ops in _bias_readers(model, subgraph).items():
            bias = subgraph.tensors[bias_index]
            # only a buffer no other tensor holds can change type
            if bias.type != schema.TensorType.INT64 or holders[bias.buffer] != 1:
                continue
            if not all(_fits(model, subgraph, op, schema) for op in ops):
                continue
            values = _values(model, bias.buffer, np.int64)
            model.buffers[bias.buffer].data = values.astype("<i4").view(np.uint8)
            bias.type = schema.TensorType.INT32
            for op in ops:
                op.builtinOptions.quantizedBiasType = schema.TensorType.INT32
            changed = True
    return changed


def _bias_readers(model: Any, subgraph: Any) -> dict[int, list[Any]]:
    """The tensors read only as the bias of `NARROWED_OPS`, with the ops that read them."""
    readers: dict[int, list[Any]] = {}
    elsewhere = set(_indices(subgraph.inputs)) | set(_indices(subgraph.outputs))
    for op in subgraph.operators or []:
        inputs, outputs = _indices(op.inputs), _indices(op.outputs)
        bias_slot = 2 if op_name(model, op) in NARROWED_OPS else None
        for slot, index in enumerate(inputs):
            if slot == bias_slot and index >= 0:
                readers.setdefault(index, []).append(op)
            else:
                elsewhere.add(index)
        elsewhere.update(outputs)
    return {index: ops for index, ops in readers.items() if index not in elsewhere}


def _indices(values: Any) -> list[int]:
    return [] if values is None else [int(i) for i in values]


def _fits(model: Any, subgraph: Any, op: Any, schema: Any) -> bool:
    """Whether every accumulator of `op` stays within int32 with its bias added."""
    name = op_name(model, op)
    if name not in NARROWED_OPS or op.builtinOptions is None:
        return False
    if not hasattr(op.builtinOptions, "quantizedBiasType"):
        return False
    data, weights, bias = (int(i) for i in op.inputs[:3])
    source, kernel = subgraph.tensors[data], subgraph.tensors[weights]
    if source.type != schema.TensorType.INT16 or kernel.type != schema.TensorType.INT8:
        return False
    if _nonzero(source.quantization) or _nonzero(kernel.quantization):
        return False
    if not _has_data(model, kernel.buffer) or not _has_data(model, subgraph.tensors[bias].buffer):
        return False
    shape = [int(d) for d in kernel.shape]
    filters = _values(model, kernel.buffer, np.int8).astype(np.int64).reshape(shape)
    channels = filters.reshape(shape[0], -1)  # [out, ...] for CONV_2D and FULLY_CONNECTED
    biases = _values(model, subgraph.tensors[bias].buffer, np.int64)
    if biases.size != channels.shape[0]:
        return False
    worst = _INT16_MAGNITUDE * np.abs(channels).sum(axis=1) + np.abs(biases)
    return bool(np.all(worst <= _INT32_LIMIT))


def _nonzero(quantization: Any) -> bool:
    points = None if quantization is None else quantization.zeroPoint
    return points is not None and bool(np.any(np.asarray(points) != 0))


def _values(model: Any, buffer_index: int, dtype: Any) -> np.ndarray:
    return np.frombuffer(bytes(bytearray(model.buffers[buffer_index].data)), dtype=dtype)


def _has_data(model: Any, buffer_index: int) -> bool:
    data = model.buffers[buffer_index].data
    return data is not None and len(data) > 0
