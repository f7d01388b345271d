"""Replace the float requantize pairs TF's converter leaves in integer files by integer ops.

Where a tensor carries two int8 ranges (the one calibrated on `representative_data` and the one a
fake-quant node trained, for instance on the model input of a QAT model whose first layer is
elementwise), TF 2.21's converter writes `DEQUANTIZE (int8 -> float) -> QUANTIZE (float -> int8)`.
The two scales often differ only in the last bits of a float32 (the same range, nudged in two
places). LiteRT's QUANTIZE kernel requantizes int8 -> int8 in integer arithmetic, so the pair is
rewritten as one integer QUANTIZE, or dropped when the two ranges are the same. The arithmetic
is unchanged up to one rounding step; the file then has no float op there.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.flatbuffer import op_name, pack, read_model

_SAME_SCALE = 1e-6  # relative: float32 rounding of one scale computed in two places
_INTEGER = {"INT8", "UINT8", "INT16"}
REQUANTIZE_VERSION = 2  # QUANTIZE with an integer input (LiteRT's op version rules)
_RESHAPES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}  # copy their input's integers as they are


def fold_float_requantize(flatbuffer: bytes) -> tuple[bytes, int]:
    """`flatbuffer` with each integer DEQUANTIZE -> QUANTIZE pair made integer.

    Returns the new bytes and the number of pairs rewritten (the input bytes when none).

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> flat = tfc.convert(model, "int8", np.random.rand(16, 4).astype("float32"))
        >>> fold_float_requantize(flat)[1]
        0
    """
    model = read_model(flatbuffer)
    rewritten = fold_float_requantize_in_place(model)
    if rewritten == 0:
        return flatbuffer, 0
    return pack(model, len(flatbuffer) + 1024), rewritten


def fold_float_requantize_in_place(model: Any) -> int:
    """`fold_float_requantize` on a parsed model (`read_model`), in place: the pairs rewritten."""
    schema = compat.tflite_schema()
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    rewritten = 0
    for subgraph in model.subgraphs or []:
        rewritten += _fold_subgraph(model, subgraph, lambda op: op_name(model, op), types)
    return rewritten


def _fold_subgraph(model: Any, subgraph: Any, name_of: Any, types: dict) -> int:
    operators = list(subgraph.operators or [])
    tensors = subgraph.tensors
    protected = set(_ints(subgraph.outputs))

    def consumers(index: int) -> list[Any]:
        return [op for op in operators if index in _ints(op.inputs)]

    rewritten = 0
    for dequantize in [op for op in operators if name_of(op) == "DEQUANTIZE"]:
        source = int(_ints(dequantize.inputs)[0])
        middle = int(_ints(dequantize.outputs)[0])
        if types.get(tensors[source].type) not in _INTEGER or middle in protected:
            continue
        users = consumers(middle)
        if not users or any(name_of(op) != "QUANTIZE" for op in users):
            continue
        for quantize in users:
            target = int(_ints(quantize.outputs)[0])
            if types.get(tensors[target].type) not in _INTEGER:
                break
            if target not in protected and _same_range(tensors[source], tensors[target]):
                for op in consumers(target):  # read the source directly
                    op.inputs = np.where(_ints(op.inputs) == target, source, _ints(op.inputs))
                operators.remove(quantize)
            else:  # one integer requantize instead of int -> float -> int
                quantize.inputs = np.asarray([source], dtype=np.int32)
                code = model.operatorCodes[quantize.opcodeIndex]
                code.version = max(code.version, REQUANTIZE_VERSION)
            rewritten += 1
        else:
            operators.remove(dequantize)
    subgraph.operators = operators
    return rewritten


def _ints(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int32)


def _same_range(a: Any, b: Any) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None or qa.scale is None or qb.scale is None:
        return False
    sa, sb = np.asarray(qa.scale, np.float64), np.asarray(qb.scale, np.float64)
    za, zb = np.asarray(qa.zeroPoint), np.asarray(qb.zeroPoint)
    return (
        a.type == b.type
        and sa.shape == sb.shape
        and np.array_equal(za, zb)
        and bool(np.all(np.abs(sa - sb) <= _SAME_SCALE * np.abs(sb)))
    )


def outputs_before_requantize(flatbuffer: bytes) -> tuple[bytes, int]:
    """`flatbuffer` with each model output read before the requantize a later op forced on it.

    TF's converter gives an op that needs its inputs at one scale (CONCATENATION, for one) that
    scale on each input, and where an input is also a model output, the output gets it too: a
    sigmoid output (scale 1/256) that also feeds a concatenation comes out at the
    concatenation's much coarser scale, behind an int8 -> int8 QUANTIZE. The output is then
    taken from that QUANTIZE's input, at its own scale (through the reshapes between them, which
    then carry that scale); the requantized copy still feeds the ops that need it, so nothing
    else changes. Only outputs whose requantized copy has other
    readers are changed (a requantize made for the output alone is the model's own range, as
    a QAT model trains it), and the output tensors keep their names.

    Returns the new bytes and the number of outputs changed (the input bytes when none).

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> inputs = keras.Input((4,))
        >>> note = keras.layers.Dense(2, activation="sigmoid")(inputs)
        >>> wide = keras.layers.Rescaling(50.0)(keras.layers.Dense(2)(inputs))
        >>> both = keras.layers.Dense(2)(keras.layers.Concatenate()([note, wide]))
        >>> model = keras.Model(inputs, [note, both])
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> flat = tfc.convert(model, "int8", x, check=False)
        >>> report = tfc.inspect(flat)
        >>> report.tensors[report.outputs[0]].quantization.scale[0] == 1 / 256
        True
    """
    model = read_model(flatbuffer)
    changed = outputs_before_requantize_in_place(model)
    if changed == 0:
        return flatbuffer, 0
    return pack(model, len(flatbuffer) + 1024), changed


def outputs_before_requantize_in_place(model: Any) -> int:
    """`outputs_before_requantize` on a parsed model (`read_model`), in place: the outputs
    changed."""
    schema = compat.tflite_schema()
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    changed = 0
    for number, subgraph in enumerate(model.subgraphs or []):
        operators = list(subgraph.operators or [])
        producer = {int(out): op for op in operators for out in _ints(op.outputs)}
        readers: dict[int, int] = {}
        for op in operators:
            for index in _ints(op.inputs):
                readers[int(index)] = readers.get(int(index), 0) + 1
        outputs = [int(i) for i in _ints(subgraph.outputs)]
        tensors = subgraph.tensors

        def name_of(op: Any) -> str:
            return op_name(model, op)

        for position, output in enumerate(outputs):
            # back from the output through reshapes, which copy their input's integers
            chain, tensor = [], output
            while (op := producer.get(tensor)) is not None and name_of(op) in _RESHAPES:
                if chain and readers.get(tensor, 0) != 1:
                    break
                chain.append(op)
                tensor = int(_ints(op.inputs)[0])
            requantize = producer.get(tensor)
            if requantize is None or name_of(requantize) != "QUANTIZE":
                continue
            if readers.get(tensor, 0) <= (1 if chain else 0):  # nothing else needs the copy
                continue
            source = int(_ints(requantize.inputs)[0])
            kind = types.get(tensors[source].type)
            if kind not in _INTEGER or kind != types.get(tensors[tensor].type):
                continue
            if source in outputs or tensors[source].quantization is None:
                continue
            if chain:  # the reshapes read the output's own values, at their scale
                first = chain[-1]
                first.inputs = np.where(_ints(first.inputs) == tensor, source, _ints(first.inputs))
                for op in chain:
                    moved = int(_ints(op.outputs)[0])
                    tensors[moved].quantization = copy.deepcopy(tensors[source].quantization)
                changed += 1
                continue
            outputs[position] = source
            tensors[source].name, tensors[output].name = tensors[output].name, tensors[source].name
            for signature in model.signatureDefs or []:
                if signature.subgraphIndex == number:
                    for entry in signature.outputs or []:
                        if entry.tensorIndex == output:
                            entry.tensorIndex = source
            changed += 1
        subgraph.outputs = np.asarray(outputs, dtype=np.int32)
    return changed
