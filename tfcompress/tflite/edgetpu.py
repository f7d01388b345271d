"""Offline prediction of what the Coral Edge TPU compiler would map to the TPU.

The compiler cannot be installed here, so this applies Coral's published requirements to the
flatbuffer: 8-bit tensors only, static shapes, at most 3 innermost dimensions larger than 1, one
subgraph, the supported-op list with each op's constraints, and the op versions the compiler
(version 16) knows. The compiler cuts the graph once: the first op it cannot map, and every op
after it, runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tfcompress.tflite.flatbuffer import (
    OpInfo,
    SubgraphReport,
    TensorInfo,
    TFLiteReport,
    TFLiteSource,
    inspect,
)

_QUANTIZED = {"INT8", "UINT8"}
_BIAS_TYPES = {"INT32"}  # int32 biases of conv/fully-connected are part of an 8-bit model

# Highest op version of each supported op that compiler 16 accepts. Coral does not publish this
# table; it is the version TFLite's 8-bit kernels carried when compiler 16 shipped (TF 2.5 era).
# A newer version (for example RESIZE_* v3, half_pixel_centers) is reported as not supported.
MAX_OP_VERSION: dict[str, int] = {
    "ADD": 2,
    "AVERAGE_POOL_2D": 2,
    "CONCATENATION": 2,
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 5,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 2,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 2,
    "LSTM": 3,
    "MAXIMUM": 2,
    "MAX_POOL_2D": 2,
    "MEAN": 2,
    "MINIMUM": 2,
    "MUL": 3,
    "PACK": 2,
    "PAD": 2,
    "PADV2": 2,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": 2,
    "REDUCE_MIN": 2,
    "RELU": 2,
    "RELU6": 2,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 2,
    "RESIZE_NEAREST_NEIGHBOR": 2,
    "RSQRT": 2,
    "SLICE": 2,
    "SOFTMAX": 2,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 2,
    "SQUEEZE": 1,
    "STRIDED_SLICE": 2,
    "SUB": 2,
    "SUM": 2,
    "SQUARED_DIFFERENCE": 2,
    "TANH": 2,
    "TRANSPOSE": 2,
    "TRANSPOSE_CONV": 2,
    "HARD_SWISH": 1,
}


@dataclass
class EdgeTPUOp:
    index: int
    name: str
    version: int
    on_tpu: bool
    reason: str
    subgraph: int = 0


@dataclass
class EdgeTPUReport:
    """Per-op prediction: which ops the Edge TPU compiler would map, and why the others would not."""

    origin: str
    ops: list[EdgeTPUOp]
    model_problems: list[str]

    @property
    def tpu_ops(self) -> list[EdgeTPUOp]:
        return [op for op in self.ops if op.on_tpu]

    @property
    def cpu_ops(self) -> list[EdgeTPUOp]:
        return [op for op in self.ops if not op.on_tpu]

    @property
    def fully_mapped(self) -> bool:
        return not self.cpu_ops and not self.model_problems

    def subgraph_verdicts(self) -> list[dict[str, Any]]:
        """Per subgraph: how many of its ops map to the TPU, how many run on the CPU.

        Example:
            >>> import tfcompress as tfc
            >>> from tfcompress.models import build_digits_cnn
            >>> tfc.edgetpu_report(tfc.convert(build_digits_cnn())).subgraph_verdicts()[0]["subgraph"]
            0
        """
        numbers = sorted({op.subgraph for op in self.ops} | {0})
        verdicts = []
        for number in numbers:
            ops = [op for op in self.ops if op.subgraph == number]
            tpu = sum(op.on_tpu for op in ops)
            verdicts.append(
                {
                    "subgraph": number,
                    "tpu_op_count": tpu,
                    "cpu_op_count": len(ops) - tpu,
                    "fully_mapped": tpu == len(ops),
                }
            )
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "fully_mapped": self.fully_mapped,
            "tpu_op_count": len(self.tpu_ops),
            "cpu_op_count": len(self.cpu_ops),
            "model_problems": self.model_problems,
            "subgraphs": self.subgraph_verdicts(),
            "ops": [asdict(op) for op in self.ops],
        }

    def summary(self) -> str:
        lines = [
            f"Edge TPU prediction for {self.origin}: {len(self.tpu_ops)} ops on the TPU, "
            f"{len(self.cpu_ops)} on the CPU (offline estimate from Coral's published rules, "
            "not the compiler)"
        ]
        lines += [f"model: {problem}" for problem in self.model_problems]
        verdicts = self.subgraph_verdicts()
        for verdict in verdicts:
            number = verdict["subgraph"]
            if len(verdicts) > 1:
                lines.append(
                    f"subgraph {number}: {verdict['tpu_op_count']} ops on the TPU, "
                    f"{verdict['cpu_op_count']} on the CPU"
                )
            for op in (op for op in self.ops if op.subgraph == number):
                where = "TPU" if op.on_tpu else "CPU"
                lines.append(f"{op.index:>4}  {op.name:<24} v{op.version:<2} {where}  {op.reason}")
        return "\n".join(lines)


def edgetpu_report(source: TFLiteSource | TFLiteReport) -> EdgeTPUReport:
    """Predict, op by op, what the Edge TPU compiler would run on the TPU and what on the CPU.

    Every subgraph is covered: ops of a control-flow branch or body (subgraph 1 and later) are
    reported on the CPU with the reason, and `subgraph_verdicts()` sums up each subgraph.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_train[:50]
        >>> report = tfc.edgetpu_report(tfc.convert(build_digits_cnn(), "edgetpu", x))
        >>> report.fully_mapped
        True
    """
    report = source if isinstance(source, TFLiteReport) else inspect(source)
    problems = []
    if report.subgraph_count > 1:
        problems.append(
            f"{report.subgraph_count} subgraphs: the compiler maps only the first one, so control flow "
            "(while/if) must be removed"
        )
    ops: list[EdgeTPUOp] = []
    subgraphs = report.subgraphs or [
        SubgraphReport(0, "main", report.ops, report.tensors, report.inputs, report.outputs)
    ]
    for subgraph in subgraphs:
        cut = False
        for op in subgraph.ops:
            reason = _why_not(op, subgraph.tensors)
            if reason is None and subgraph.index > 0:
                reason = (
                    f"supported, but subgraph {subgraph.index} ('{subgraph.name}') is a "
                    "control-flow branch or body; the compiler maps only subgraph 0"
                )
            if reason is None and cut:
                reason = (
                    "supported, but follows an op that runs on the CPU (the compiler cuts once)"
                )
            if reason is not None:
                cut = True
            ops.append(
                EdgeTPUOp(
                    op.index,
                    op.name,
                    op.version,
                    reason is None,
                    reason or "mapped",
                    subgraph.index,
                )
            )
    return EdgeTPUReport(report.origin, ops, problems)


def _why_not(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    if op.name not in MAX_OP_VERSION:
        return f"{op.name} is not in the Edge TPU's supported-op list"
    if op.version > MAX_OP_VERSION[op.name]:
        return f"op version {op.version} is newer than compiler 16 supports (max {MAX_OP_VERSION[op.name]})"
    for index in op.inputs + op.outputs:
        tensor = tensors[index]
        if tensor.dtype not in _QUANTIZED and not (
            tensor.dtype in _BIAS_TYPES and tensor.is_constant
        ):
            return f"tensor '{tensor.name}' is {tensor.dtype}; only int8/uint8 tensors map"
        if any(d < 0 for d in tensor.shape_signature):
            return (
                f"tensor '{tensor.name}' has a dynamic shape {tensor.shape_signature}; use batch 1"
            )
        if not tensor.is_constant and sum(1 for d in tensor.shape if d > 1) > 3:
            return f"tensor '{tensor.name}' {tensor.shape} has more than 3 dimensions larger than 1"
        if (
            not tensor.is_constant
            and len(tensor.shape) > 3
            and any(d > 1 for d in tensor.shape[:-3])
        ):
            return f"tensor '{tensor.name}' {tensor.shape}: only the 3 innermost dimensions may exceed 1"
    check = _CONSTRAINTS.get(op.name)
    return check(op, tensors) if check else None


def _activation(op: OpInfo) -> int:
    return int(op.options.get("fusedActivationFunction", 0))


def _no_fused_activation(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    return "fused activation function not supported here" if _activation(op) else None


def _concatenation(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    if _activation(op):
        return "fused activation function not supported here"
    constants = [tensors[i] for i in op.inputs if tensors[i].is_constant]
    if constants and (
        len(op.inputs) != 2 or any(t.buffer is not None and t.buffer.any() for t in constants)
    ):
        return "a constant input is allowed only as the zero half of a 2-input concatenation"
    return None


def _same_dilation(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    if op.options.get("dilationHFactor", 1) != op.options.get("dilationWFactor", 1):
        return "dilation must be the same in x and y"
    return None


def _not_on_batch(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    axes = [
        tensors[i]
        for i in op.inputs[1:2]
        if tensors[i].is_constant and tensors[i].buffer is not None
    ]
    rank = len(tensors[op.inputs[0]].shape)
    for axis_tensor in axes:
        if any(int(a) % max(rank, 1) == 0 for a in axis_tensor.buffer.reshape(-1)):
            return f"{op.name} on the batch dimension is not supported"
    return None


def _pack(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    return (
        "packing along the batch dimension is not supported"
        if op.options.get("axis", 1) == 0
        else None
    )


def _split(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    axis = tensors[op.inputs[0]]
    if axis.buffer is not None and int(axis.buffer.reshape(-1)[0]) == 0:
        return "splitting along the batch dimension is not supported"
    return None


def _pad(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    paddings = tensors[op.inputs[1]]
    if paddings.buffer is not None and paddings.buffer.reshape(-1, 2)[0].any():
        return "padding the batch dimension is not supported"
    return None


def _softmax(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    shape = tensors[op.inputs[0]].shape
    if sum(1 for d in shape if d > 1) > 1 or (shape and shape[-1] > 16000):
        return "softmax maps only for a 1-D input of at most 16,000 elements"
    return None


def _fully_connected(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    weights = tensors[op.inputs[1]]
    if weights.quantization is not None and weights.quantization.per_channel:
        return "per-channel FULLY_CONNECTED weights; convert with mode='edgetpu' for per-tensor"
    if op.options.get("weightsFormat", 0) != 0:
        return "only the default weights format is supported"
    if sum(1 for d in tensors[op.outputs[0]].shape if d > 1) > 1:
        return "the output must be one-dimensional"
    return None


def _strided_slice(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    strides = tensors[op.inputs[3]] if len(op.inputs) > 3 else None
    if strides is not None and strides.buffer is not None and (strides.buffer != 1).any():
        return "only strides of 1 are supported"
    if op.options.get("ellipsisMask", 0) or op.options.get("newAxisMask", 0):
        return "ellipsis and new-axis masks are not supported"
    return None


def _resize(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    if sum(1 for d in tensors[op.inputs[0]].shape if d > 1) > 3:
        return "input must be a 3-D tensor"
    return None


def _prelu(op: OpInfo, tensors: list[TensorInfo]) -> str | None:
    alpha = tensors[op.inputs[1]]
    if sum(1 for d in alpha.shape if d > 1) > 1:
        return "alpha must be one-dimensional: use PReLU(shared_axes=[1, 2])"
    return None


_CONSTRAINTS: dict[str, Callable[[OpInfo, list[TensorInfo]], str | None]] = {
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation,
    "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _not_on_batch,
    "SUM": _not_on_batch,
    "REDUCE_MAX": _not_on_batch,
    "REDUCE_MIN": _not_on_batch,
    "PACK": _pack,
    "SPLIT": _split,
    "PAD": _pad,
    "PADV2": _pad,
    "SOFTMAX": _softmax,
    "STRIDED_SLICE": _strided_slice,
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "PRELU": _prelu,
}
