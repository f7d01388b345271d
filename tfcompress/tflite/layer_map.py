"""Which TFLite ops implement which Keras layer, read from the tensor names the converter keeps.

TF 2.21's converter names every op's output tensor after the TF ops it was made of, and a Keras 3
layer runs its ops inside a name scope of its own name, so a tensor is named
`"<model>_1/<layer>_1/<op>"`; an op that fuses several TF ops joins their names with `";"`
(`"m_1/relu1_1/Relu;m_1/conv1_1/convolution"`: one CONV_2D computes `conv1` and `relu1`). Name
scopes may carry a `_<n>` suffix that TF adds to keep names unique in the traced graph.

A Keras layer whose output is a tensor of the file gets a `LayerOps` of its own; a layer that
leaves no tensor (a BatchNormalization folded into its convolution, a ReLU fused into it, a
Dropout) is listed in `fused` of the first layer downstream that has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tfcompress.core import catalog
from tfcompress.core.graph import inbound_nodes, outbound_nodes, producer_of
from tfcompress.tflite.flatbuffer import SubgraphReport, inspect

_SUFFIX = re.compile(r"^(.*)_\d+$")
_QDQ = ("QUANTIZE", "DEQUANTIZE")
_TRAILING_DIGITS = re.compile(r"\d+$")
# layers that compute nothing at inference or only reshape: their output is the tensor before
_PASS_THROUGH = {klass.__name__ for klass in catalog.classes(lambda row: row.pass_through)}


@dataclass
class LayerOps:
    """The TFLite ops that implement one Keras layer (and the layers fused into it).

    Attributes:
        layer: the Keras layer whose output the file holds in `tensor_name`.
        fused: Keras layers computed by the same ops that leave no tensor of their own
            (a folded BatchNormalization, a fused activation, a Dropout).
        ops: `"INDEX:OPNAME"` of each op, in execution order.
        op_outputs: the output tensor names of those ops (the converter's node names).
        tensor: index of the tensor holding the layer's output.
        tensor_name: its name.
        named: every Keras layer named by the ops' output tensors (what `keep_float` matches).
        reference: the Keras layer whose output equals that tensor (`layer`, or a layer after it
            that the file does not compute apart: a QAT fake-quant layer, a Dropout).

    Example:
        >>> from tfcompress.tflite.layer_map import LayerOps
        >>> LayerOps("conv1", [], ["0:CONV_2D"], ["m/conv1/BiasAdd"], 3, "m/conv1/BiasAdd").layer
        'conv1'
    """

    layer: str
    fused: list[str]
    ops: list[str]
    op_outputs: list[str]
    tensor: int
    tensor_name: str
    reference: str = ""
    named: list[str] = field(default_factory=list, repr=False)
    _op_indices: list[int] = field(default_factory=list, repr=False)

    @property
    def layers(self) -> list[str]:
        """The row's layer and the layers fused into it."""
        return [*self.fused, self.layer]

    @property
    def op_indices(self) -> list[int]:
        """Indices of the row's ops in the file's main graph, in execution order."""
        return sorted(self._op_indices)


def top_level_layers(model: Any) -> list[Any]:
    """The model's own layers in topological order, its InputLayers left out."""
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def output_layer_names(model: Any) -> list[str]:
    """Name of the layer that produces each model output, in output order."""
    names = []
    for tensor in model.outputs:
        producer = producer_of(tensor)
        names.append(producer.name if producer is not None else "")
    return names


class _NameMatcher:
    """Finds the top-level Keras layers named in a converter tensor name."""

    def __init__(self, model: Any) -> None:
        self.model_name = model.name
        self.names = {layer.name for layer in top_level_layers(model)}

    def _component(self, component: str) -> str | None:
        if component in self.names:
            return component
        match = _SUFFIX.match(component)
        if match and match.group(1) in self.names:
            return match.group(1)
        return None

    def layers_in(self, tensor_name: str) -> set[str]:
        found = set()
        for location in tensor_name.split(";"):
            parts = location.split("/")
            if len(parts) < 2:
                continue
            head = parts[0]
            if head != self.model_name and _SUFFIX.sub(r"\1", head) != self.model_name:
                continue
            # prefer the suffix-stripped name: TF's unique-name suffix is on every scope
            candidate = _SUFFIX.sub(r"\1", parts[1])
            name = candidate if candidate in self.names else self._component(parts[1])
            if name is not None:
                found.add(name)
        return found


def map_layers(flatbuffer: bytes, model: Any) -> list[LayerOps]:
    """Map the ops of a converted file (float, calibrated or quantized) to the model's layers.

    Args:
        flatbuffer: a TFLite file converted from `model` by `tfcompress.convert`.
        model: the Keras 3 functional or Sequential model it was converted from.

    Returns:
        One `LayerOps` per Keras layer whose output the file holds, in execution order.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.tflite.layer_map import map_layers
        >>> model = build_digits_cnn()
        >>> rows = map_layers(tfc.convert(model), model)
        >>> rows[0].layer, rows[0].fused, rows[0].ops
        ('relu1', ['conv1', 'bn1'], ['0:CONV_2D'])
    """
    graph = inspect(flatbuffer).subgraphs[0]
    layers = top_level_layers(model)
    order = {layer.name: index for index, layer in enumerate(layers)}
    matcher = _NameMatcher(model)
    outputs = output_layer_names(model)
    output_tensors = {
        graph.tensors[index].name: outputs[position]
        for position, index in enumerate(graph.outputs)
        if position < len(outputs)
    }
    producer: dict[int, str] = {}  # tensor index -> row layer of the op that writes it
    op_rows: list[tuple[Any, str]] = []
    mentioned_by_row: dict[str, set[str]] = {}
    op_named: list[set[str]] = []
    for op in graph.ops:
        named: set[str] = set()
        for tensor_index in op.outputs:
            name = graph.tensors[tensor_index].name
            if tensor_index in graph.outputs:
                named.add(outputs[graph.outputs.index(tensor_index)])
            elif op.name not in _QDQ and _TRAILING_DIGITS.sub("", name) in output_tensors:
                # a requantize added after an output op takes its name; the op gets a digit more
                named.add(output_tensors[_TRAILING_DIGITS.sub("", name)])
            named |= matcher.layers_in(name)
        named &= set(order)
        if named:
            row = max(named, key=order.__getitem__)
        else:  # an op with no name of ours (a requantize): it belongs to its input's layer
            row = next((producer[i] for i in op.inputs if i in producer), "")
            if not row:
                continue
        for tensor_index in op.outputs:
            producer[tensor_index] = row
        op_rows.append((op, row))
        op_named.append(named)
    op_rows = _merge_split_layers(op_rows, op_named)
    for (_, row), named in zip(op_rows, op_named, strict=True):
        mentioned_by_row.setdefault(row, set()).update(named)
    return _rows(graph, layers, op_rows, mentioned_by_row)


def _merge_split_layers(
    op_rows: list[tuple[Any, str]], op_named: list[set[str]]
) -> list[tuple[Any, str]]:
    """A layer named again by a later op of another row ends there: its earlier ops join it.

    Conv1D is `EXPAND_DIMS -> CONV_2D -> SQUEEZE`; the CONV_2D fuses the BatchNorm and ReLU that
    follow, so its row is the ReLU's, and the EXPAND_DIMS row named after the Conv1D holds only
    its reshaped input. The Conv1D's ops are all one row, whose output is the ReLU's.
    """
    for _ in range(len(op_rows)):
        last_row: dict[str, str] = {}
        for (_, row), named in zip(op_rows, op_named, strict=True):
            for name in named:
                last_row[name] = row
        merged = [(op, last_row.get(row, row)) for op, row in op_rows]
        if merged == op_rows:
            break
        op_rows = merged
    return op_rows


def _rows(
    graph: SubgraphReport,
    layers: list[Any],
    op_rows: list[tuple[Any, str]],
    mentioned_by_row: dict[str, set[str]],
) -> list[LayerOps]:
    rows: dict[str, LayerOps] = {}
    for op, row in op_rows:
        entry = rows.setdefault(row, LayerOps(row, [], [], [], -1, ""))
        entry.ops.append(f"{op.index}:{op.name}")
        entry.op_outputs.extend(graph.tensors[i].name for i in op.outputs)
        entry._op_indices.append(op.index)
        if op.name not in _QDQ or entry.tensor < 0:
            entry.tensor = op.outputs[0]
    for entry in rows.values():
        last = max(entry._op_indices)
        # a trailing requantize holds the same values as the op before it: measure the op itself
        tensor = graph.ops[last].outputs[0] if graph.ops[last].name not in _QDQ else entry.tensor
        entry.tensor = tensor
        entry.tensor_name = graph.tensors[tensor].name
    placed = set(rows)
    by_name = {layer.name: layer for layer in layers}
    for entry in rows.values():  # layers after the row's op whose values are its tensor's
        entry.reference = entry.layer
        consumer = _sole_consumer(by_name[entry.layer])
        while consumer is not None and consumer.name in by_name and consumer.name not in rows:
            named_elsewhere = any(consumer.name in m for m in mentioned_by_row.values())
            if not _is_fake_quant(consumer) and (
                named_elsewhere or type(consumer).__name__ not in _PASS_THROUGH
            ):
                break
            entry.fused.append(consumer.name)
            entry.reference = consumer.name
            placed.add(consumer.name)
            consumer = _sole_consumer(consumer)
    for row, mentioned in mentioned_by_row.items():
        rows[row].named = sorted(mentioned, key=[x.name for x in layers].index)
        for name in sorted(mentioned - placed, key=lambda n: [x.name for x in layers].index(n)):
            rows[row].fused.append(name)
            placed.add(name)
    for layer in layers:  # layers with no tensor and no name: the first row downstream holds them
        if layer.name in placed:
            continue
        target = _downstream_row(layer, rows)
        if target is not None:
            rows[target].fused.append(layer.name)
            placed.add(layer.name)
    order = {layer.name: index for index, layer in enumerate(layers)}
    for entry in rows.values():
        entry.fused.sort(key=order.__getitem__)
    return sorted(rows.values(), key=lambda entry: min(entry._op_indices))


def _is_fake_quant(layer: Any) -> bool:
    """A QAT activation fake-quant layer: the file holds its values in the tensor before it."""
    return "Quantizer" in type(layer).__name__


def _sole_consumer(layer: Any) -> Any:
    """The one layer fed by `layer` when it has exactly one consumer with that one input."""
    nodes = outbound_nodes(layer)
    if len(nodes) != 1:
        return None
    consumer = nodes[0].operation
    inbound = inbound_nodes(consumer)
    if len(inbound) != 1 or len(inbound[0].input_tensors) != 1:
        return None
    return consumer


def _downstream_row(layer: Any, rows: dict[str, LayerOps]) -> str | None:
    frontier = [layer]
    seen = set()
    while frontier:
        current = frontier.pop(0)
        for node in outbound_nodes(current):
            consumer = node.operation
            if consumer.name in seen:
                continue
            seen.add(consumer.name)
            if consumer.name in rows:
                return consumer.name
            frontier.append(consumer)
    return None
