"""Turn the int8 filters of a file converted from 4-bit-grid weights into 4-bit levels.

A kernel rounded by `adaround(..., bits=4)` holds `scale * q` with `q` in [-7, 7] and the
largest `|q|` of each channel (or of the tensor) equal to 7. TFLite's converter quantizes it with
its own scale `max|w| / 127`, so the int8 file holds `round(q * 127 / 7)`. This rewrite divides
that back (`q = round(q8 * 7 / 127)`, checked to give the file's integers again), stores the 4-bit
scale and rescales the int32 bias to `input scale * 4-bit scale`, so the file holds the 4-bit
levels that `tfcompress.tflite.int4.pack_int4` packs as INT4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import pack, read_model
from tfcompress.tflite.int4 import INT4_OPS

_RATIO = 127 / 7


@dataclass
class FourBitLevels:
    """What `four_bit_levels` did.

    Attributes:
        flatbuffer: the rewritten file.
        rewritten: names of the filters now holding 4-bit levels.
        kept: `{filter name: reason}` for the filters left as they were.
    """

    flatbuffer: bytes
    rewritten: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


def _name(tensor: object) -> str:
    raw = tensor.name
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _channel_view(values: np.ndarray, shape: list[int], axis: int) -> np.ndarray:
    return np.moveaxis(values.reshape(shape), axis, 0).reshape(shape[axis], -1)


def four_bit_levels(flatbuffer: bytes, *, require: bool = False) -> FourBitLevels:
    """Rewrite the int8 filters that come from a 4-bit weight grid as 4-bit levels (same outputs).

    Args:
        flatbuffer: an int8 file converted from a model rounded by `adaround(..., bits=4)`.
        require: raise when no filter comes from a 4-bit grid.

    Returns:
        A `FourBitLevels`; its `.flatbuffer` runs on LiteRT as it is (int8 levels in [-7, 7]) and
        packs to INT4 with `tfcompress.tflite.int4.pack_int4`.

    Raises:
        ConversionError: with `require=True`, no filter holds a 4-bit grid.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> from tfcompress.recovery import adaround
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        >>> x = np.random.rand(32, 4).astype("float32")
        >>> rounded = adaround(model, x, bits=4, iterations=0)
        >>> result = four_bit_levels(tfc.convert(rounded, "int8", x))
        >>> len(result.rewritten)
        1
    """
    model = read_model(flatbuffer, origin="the file given to four_bit_levels")
    schema = compat.tflite_schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = FourBitLevels(flatbuffer=flatbuffer)
    done: set[tuple[int, int]] = set()
    for s_index, subgraph in enumerate(model.subgraphs or []):
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "") not in INT4_OPS:
                continue
            inputs = [int(i) for i in op.inputs]
            filter_index = inputs[1]
            if (s_index, filter_index) in done:
                continue
            done.add((s_index, filter_index))
            tensor = subgraph.tensors[filter_index]
            reason = _rewrite(model, subgraph, tensor, inputs, schema)
            if reason:
                result.kept[_name(tensor)] = reason
            else:
                result.rewritten.append(_name(tensor))
    if not result.rewritten:
        if require:
            raise ConversionError(
                "four_bit_levels: no filter of this file comes from a 4-bit weight grid. Round "
                "the model with tfcompress.ptq.adaround(model, data, bits=4) before converting."
            )
        return result
    result.flatbuffer = pack(model, len(flatbuffer))
    return result


def _rewrite(
    model: object, subgraph: object, tensor: object, inputs: list[int], schema: object
) -> str:
    if tensor.type != schema.TensorType.INT8:
        return "not an int8 filter"
    buffer = model.buffers[tensor.buffer]
    quantization = tensor.quantization
    if buffer.data is None or not len(buffer.data) or quantization is None:
        return "not a quantized constant"
    if np.any(np.asarray(quantization.zeroPoint) != 0):
        return "non-zero zero point"
    values = np.asarray(buffer.data, dtype=np.uint8).view(np.int8).astype(np.int32)
    shape = [int(d) for d in tensor.shape]
    scales = np.asarray(quantization.scale, dtype=np.float64)
    axis = int(quantization.quantizedDimension) if len(scales) > 1 else 0
    per_channel = _channel_view(values, shape, axis) if len(scales) > 1 else values[None]
    levels = np.round(per_channel / _RATIO)
    if np.any(np.round(levels * _RATIO) != per_channel) or np.abs(levels).max() > 7:
        return "its values are not a 4-bit grid (not rounded with bits=4)"
    if len(scales) > 1:
        moved = [shape[axis], *(d for i, d in enumerate(shape) if i != axis)]
        back = np.moveaxis(levels.reshape(moved), 0, axis)
    else:
        back = levels.reshape(shape)
    flat = back.reshape(-1).astype(np.int8)
    buffer.data = flat.view(np.uint8)
    quantization.scale = (scales * _RATIO).astype(np.float32).tolist()
    if len(inputs) > 2 and inputs[2] >= 0:
        _rescale_bias(model, subgraph.tensors[inputs[2]], scales.size)
    return ""


def _rescale_bias(model: object, bias: object, channels: int) -> None:
    buffer = model.buffers[bias.buffer]
    if buffer.data is None or not len(buffer.data) or bias.quantization is None:
        return
    # int32, or int64 for an op with 16-bit activations
    wide = bias.type == compat.tflite_schema().TensorType.INT64
    dtype = np.int64 if wide else np.int32
    values = np.asarray(buffer.data, dtype=np.uint8).view(dtype).astype(np.float64)
    buffer.data = np.round(values / _RATIO).astype(dtype).view(np.uint8)
    scales = np.asarray(bias.quantization.scale, dtype=np.float64) * _RATIO
    bias.quantization.scale = scales.astype(np.float32).tolist()
