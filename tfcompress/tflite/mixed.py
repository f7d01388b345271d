"""16-bit activations for chosen ops inside an int8 file.

TF's converter gives a whole file one activation type: int8 (`mode="int8"`) or int16
(`mode="int16x8"`). Both runtimes also requantize between the two in integer arithmetic
(`QUANTIZE` int8 -> int16 and int16 -> int8, on LiteRT and on TensorFlow Lite Micro), so one file
can mix them. `widen_activations` builds that file from the two conversions of one model: the
chosen ops and their tensors come from the int16x8 file (16-bit activations, the same int8
weights, int64 biases), every other op from the int8 file, and a `QUANTIZE` joins them wherever an
int8 tensor feeds a chosen op or a chosen op's output feeds an int8 op or leaves the model.
`convert` then stores the biases that fit in 32 bits (`tfcompress.tflite.biases`).

The two conversions come from the same traced graph with the same calibration data, so their ops
correspond one to one, in order, with the same output tensor names; where they do not (an op TF
quantizes in one mode and not in the other), the file is refused, naming the op.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import numpy as np

from tfcompress.core import compat
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import op_name, pack, read_model
from tfcompress.tflite.requantize import REQUANTIZE_VERSION

_INTEGER = ("INT8", "INT16")


def widen_activations(
    int8_file: bytes, int16x8_file: bytes, ops: Collection[int], origin: str = "the model"
) -> bytes:
    """An int8 file whose ops `ops` (indices into its main graph) compute with 16-bit activations.

    Args:
        int8_file: the model converted with `mode="int8"` (TF's converter output, before
            tfcompress's byte passes).
        int16x8_file: the same model, same calibration data, converted with `mode="int16x8"`.
        ops: indices of the int8 file's ops to run with 16-bit activations.
        origin: the model's name, for the error messages.

    Returns:
        The mixed file: int8 inputs and outputs; the chosen ops read and write int16 tensors.

    Raises:
        ConversionError: the two files do not correspond op by op, or a chosen op has no
            integer 16-bit form in the int16x8 file (it stayed float there).

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        ...                           keras.layers.Dense(2)])
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> int8 = tfc.convert(model, "int8", x, check=False)
        >>> int16x8 = tfc.convert(model, "int16x8", x, check=False)
        >>> mixed = widen_activations(int8, int16x8, {0, 1})  # both Dense layers
        >>> [op.name for op in tfc.inspect(mixed).ops]
        ['QUANTIZE', 'FULLY_CONNECTED', 'FULLY_CONNECTED', 'QUANTIZE']
    """
    schema = compat.tflite_schema()
    narrow, wide = read_model(int8_file), read_model(int16x8_file)
    graph, graph16 = narrow.subgraphs[0], wide.subgraphs[0]
    chosen = {int(index) for index in ops}
    _check_correspondence(narrow, wide, chosen, origin)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    readers: dict[int, set[int]] = {}
    for index, op in enumerate(graph.operators):
        for tensor in _ints(op.inputs):
            readers.setdefault(int(tensor), set()).add(index)
    outputs = {int(tensor) for tensor in _ints(graph.outputs)}

    def add_tensor(template: Any, data: Any = None) -> int:
        tensor = copy.deepcopy(template)
        buffer = schema.BufferT()
        if data is not None:
            buffer.data = data
        narrow.buffers.append(buffer)
        tensor.buffer = len(narrow.buffers) - 1
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    requantize = _opcode(narrow, schema.BuiltinOperator.QUANTIZE, REQUANTIZE_VERSION)

    def quantize_op(source: int, target: int) -> Any:
        op = schema.OperatorT()
        op.opcodeIndex = requantize
        op.inputs = np.asarray([source], np.int32)
        op.outputs = np.asarray([target], np.int32)
        return op

    sixteen: dict[int, int] = {}  # int8 tensor -> its int16 copy
    operators: list[Any] = []
    for index, (op8, op16) in enumerate(zip(graph.operators, graph16.operators, strict=True)):
        if index not in chosen:
            operators.append(op8)
            continue
        op = copy.deepcopy(op16)
        code = wide.operatorCodes[op16.opcodeIndex]
        op.opcodeIndex = _opcode(narrow, _builtin(code), code.version)
        inputs = []
        for tensor8, tensor16 in zip(_ints(op8.inputs), _ints(op16.inputs), strict=True):
            tensor8, tensor16 = int(tensor8), int(tensor16)
            if tensor8 < 0:
                inputs.append(-1)
                continue
            template = graph16.tensors[tensor16]
            data = wide.buffers[template.buffer].data if template.buffer else None
            if data is not None and len(data):  # weights (as in the int8 file) and 64-bit bias
                same = _same_constant(narrow, graph.tensors[tensor8], wide, template)
                inputs.append(tensor8 if same else add_tensor(template, data))
                continue
            if tensor8 not in sixteen:  # an int8 activation: requantized to 16 bits first
                sixteen[tensor8] = add_tensor(template)
                operators.append(quantize_op(tensor8, sixteen[tensor8]))
            inputs.append(sixteen[tensor8])
        op.inputs = np.asarray(inputs, np.int32)
        results, back = [], []
        for tensor8, tensor16 in zip(_ints(op8.outputs), _ints(op16.outputs), strict=True):
            tensor8, tensor16 = int(tensor8), int(tensor16)
            if types.get(graph16.tensors[tensor16].type) not in _INTEGER:
                raise _not_integer(origin, index, graph, op8, narrow)
            sixteen[tensor8] = add_tensor(graph16.tensors[tensor16])
            results.append(sixteen[tensor8])
            if tensor8 in outputs or readers.get(tensor8, set()) - chosen:
                back.append(quantize_op(sixteen[tensor8], tensor8))  # int8 for the int8 ops
        op.outputs = np.asarray(results, np.int32)
        op.intermediates = None
        operators.append(op)
        operators.extend(back)
    graph.operators = operators
    _drop_unread(narrow)
    return pack(narrow, 2 * len(int8_file))


def _same_constant(model8: Any, tensor8: Any, model16: Any, tensor16: Any) -> bool:
    """Whether two constant tensors hold the same values with the same quantization."""
    q8, q16 = tensor8.quantization, tensor16.quantization
    return (
        tensor8.type == tensor16.type
        and np.array_equal(
            model8.buffers[tensor8.buffer].data, model16.buffers[tensor16.buffer].data
        )
        and q8 is not None
        and q16 is not None
        and np.array_equal(np.asarray(q8.scale), np.asarray(q16.scale))
        and np.array_equal(np.asarray(q8.zeroPoint), np.asarray(q16.zeroPoint))
    )


def _drop_unread(model: Any) -> None:
    """Remove the main graph's tensors no op, input or output uses, and the buffers left unused
    (the int8 biases the 64-bit ones replaced), renumbering what refers to them."""
    graph = model.subgraphs[0]
    used = {int(t) for t in _ints(graph.inputs)} | {int(t) for t in _ints(graph.outputs)}
    for op in graph.operators:
        for field in (op.inputs, op.outputs, op.intermediates):
            used |= {int(t) for t in _ints(field) if t >= 0}
    kept = sorted(used)
    number = {old: new for new, old in enumerate(kept)}

    def renumber(values: Any) -> np.ndarray:
        return np.asarray([number[int(t)] if t >= 0 else -1 for t in _ints(values)], np.int32)

    graph.tensors = [graph.tensors[old] for old in kept]
    graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)
    for op in graph.operators:
        op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
        if op.intermediates is not None:
            op.intermediates = renumber(op.intermediates)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                entry.tensorIndex = number[int(entry.tensorIndex)]
    buffers_used = {0} | {int(t.buffer) for subgraph in model.subgraphs for t in subgraph.tensors}
    buffers_used |= {int(m.buffer) for m in model.metadata or []}
    kept_buffers = sorted(buffers_used)
    buffer_number = {old: new for new, old in enumerate(kept_buffers)}
    model.buffers = [model.buffers[old] for old in kept_buffers]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = buffer_number[int(tensor.buffer)]
    for entry in model.metadata or []:
        entry.buffer = buffer_number[int(entry.buffer)]


# ops that move their input's values without computing new ones: their output has the input's
# range, so a wide tensor stays wide through them and its 16 bits must go on to their readers
_MOVES = {
    "MAX_POOL_2D",
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TRANSPOSE",
    "PAD",
    "PADV2",
    "GATHER",
    "STRIDED_SLICE",
    "SLICE",
    "SPLIT",
    "SPLIT_V",
    "UNPACK",
    "PACK",
    "CONCATENATION",
    "RESIZE_NEAREST_NEIGHBOR",
    "DEPTH_TO_SPACE",
    "SPACE_TO_DEPTH",
}


def readers_of(flatbuffer: bytes, ops: Collection[int]) -> set[int]:
    """Indices of the main graph's ops that read a tensor one of `ops` writes, and, through ops
    that only move values (pooling by maximum, reshapes, slices, concatenation), their readers.

    Example:
        >>> import keras, numpy as np
        >>> import tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4, 4, 1), batch_size=1),
        ...     keras.layers.Conv2D(4, 3), keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        ...     keras.layers.Dense(2)])
        >>> flat = tfc.convert(model, "int8", np.random.rand(8, 4, 4, 1).astype("float32"))
        >>> [op.name for op in tfc.inspect(flat).ops], sorted(readers_of(flat, {0}))
        (['CONV_2D', 'MAX_POOL_2D', 'FULLY_CONNECTED'], [1, 2])
    """
    model = read_model(flatbuffer)
    operators = model.subgraphs[0].operators or []
    found: set[int] = set()
    frontier = set(ops)
    while frontier:
        written = {int(t) for index in frontier for t in _ints(operators[index].outputs)}
        frontier = {
            index
            for index, op in enumerate(operators)
            if index not in found and written & {int(t) for t in _ints(op.inputs)}
        }
        found |= frontier
        frontier = {index for index in frontier if op_name(model, operators[index]) in _MOVES}
    return found


def _check_correspondence(narrow: Any, wide: Any, chosen: set[int], origin: str) -> None:
    ops8, ops16 = narrow.subgraphs[0].operators or [], wide.subgraphs[0].operators or []
    if len(narrow.subgraphs) > 1 or len(wide.subgraphs) > 1:
        raise ConversionError(
            f"int16_layers: '{origin}' converts to a file with control flow (several "
            "subgraphs); 16-bit activations for chosen layers need a single graph: use "
            "mode='int16x8' for the whole model."
        )
    outside = sorted(index for index in chosen if not 0 <= index < len(ops8))
    if outside:
        raise ConversionError(
            f"int16_layers: ops {outside} are not in the int8 file of '{origin}'."
        )
    if len(ops8) != len(ops16):
        raise ConversionError(
            f"int16_layers: the int8 file of '{origin}' has {len(ops8)} ops and its int16x8 file "
            f"{len(ops16)}: they cannot be mixed. Use mode='int16x8' for the whole model."
        )
    for index, (op8, op16) in enumerate(zip(ops8, ops16, strict=True)):
        name8 = op_name(narrow, op8)
        name16 = op_name(wide, op16)
        tensors8 = [narrow.subgraphs[0].tensors[int(t)].name for t in _ints(op8.outputs)]
        tensors16 = [wide.subgraphs[0].tensors[int(t)].name for t in _ints(op16.outputs)]
        if name8 != name16 or tensors8 != tensors16:
            raise ConversionError(
                f"int16_layers: the int8 and int16x8 files of '{origin}' differ at op {index} "
                f"({name8} {_text(tensors8)} against {name16} {_text(tensors16)}): TF's "
                "converter quantized the two modes differently, so they cannot be mixed. Use "
                "mode='int16x8' for the whole model, or keep_float=[...] for the layers."
            )


def _not_integer(origin: str, index: int, graph: Any, op: Any, model: Any) -> ConversionError:
    tensor = graph.tensors[int(_ints(op.outputs)[0])].name
    return ConversionError(
        f"int16_layers: op {index} ({op_name(model, op)}, '{_text([tensor])}') of '{origin}' has "
        "no 16-bit integer kernel in TF's converter (it stays float in mode='int16x8'): leave "
        "its layer out of int16_layers, or keep it float with keep_float."
    )


def _opcode(model: Any, builtin: int, version: int) -> int:
    """Index of `builtin` in the model's operator codes (added if missing), at `version` or more."""
    for index, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin:
            code.version = max(code.version, version)
            return index
    code = compat.tflite_schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the schema's placeholder above 127
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _builtin(code: Any) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _text(names: list[Any]) -> str:
    return ", ".join(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _ints(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int32)
