"""What TensorFlow Lite Micro can run: its op resolver's methods and the known gaps, with advice.

`RESOLVER_METHODS` maps each builtin op of the TFLite schema that TFLM has a kernel for to the
method of `tflite::MicroMutableOpResolver` that registers it (read from TFLM's
`tensorflow/lite/micro/micro_mutable_op_resolver.h`, August 2026; the `tflite-micro` Python
package's interpreter registers the same ops). `CUSTOM_RESOLVER_METHODS` does the same for the
custom ops TFLM ships (its signal library and the SSD post-processing).

`advice(op)` says what to do about an op TFLM lacks: the measured cases first (the Keras layers
that produce them), a general answer otherwise. For an int16x8 file (16-bit activations) it
knows the ops whose TFLM kernel takes int8 but not int16 (`INT16_REFUSALS`, measured by
`benchmarks/micro_int16_bench.py`).
"""

from __future__ import annotations

RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}

CUSTOM_RESOLVER_METHODS: dict[str, str] = {
    "CIRCULAR_BUFFER": "AddCircularBuffer",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "TFLM_DECODE": "AddDecode",  # look-up-table weights (tfcompress.micro.compress)
    "SignalDelay": "AddDelay",
    "SignalEnergy": "AddEnergy",
    "SignalFftAutoScale": "AddFftAutoScale",
    "SignalFilterBank": "AddFilterBank",
    "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "SignalFramer": "AddFramer",
    "SignalIrfft": "AddIrfft",
    "SignalOverlapAdd": "AddOverlapAdd",
    "SignalPCAN": "AddPCAN",
    "SignalRfft": "AddRfft",
    "SignalStacker": "AddStacker",
    "SignalWindow": "AddWindow",
}

_STATIC_BATCH = (
    "convert for the microcontroller, which writes a static batch of 1 and folds the shape "
    "arithmetic away: tfc.convert(model, 'int8', data, target='micro')"
)
_FEATURES_OUTSIDE = (
    "compute the spectrogram (or other signal features) outside the model, in the firmware's "
    "input pipeline (TFLM's signal library has framing, windows, RFFT and filter banks), and "
    "feed the features to a model that starts after them"
)
# op TFLM has no kernel for -> (the Keras layers it comes from, what to do); measured on
# TF 2.21 / Keras 3.15 with tfc.convert(model, "int8", data) (the coverage matrix's models)
KNOWN_GAPS: dict[str, tuple[str, str]] = {
    "TILE": (
        "UpSampling1D/2D/3D, RepeatVector, GroupQueryAttention (it repeats key/value heads) and "
        "keras.ops.repeat/tile; a static batch keeps it",
        "for UpSampling2D convert with target='micro', which rewrites it as "
        'keras.layers.Resizing(height, width, interpolation="nearest") (RESIZE_NEAREST_NEIGHBOR, '
        "a TFLM kernel); for RepeatVector or a "
        "repeat, concatenate the copies (CONCATENATION) or repeat outside the model",
    ),
    "REDUCE_PROD": (
        "a Dense (or Dot, or an attention's projections) applied to a tensor of rank 3 or more "
        "with a dynamic batch: Keras's tensordot multiplies the shape out at run time",
        _STATIC_BATCH,
    ),
    "CONV_3D": (
        "Conv3D",
        "TFLM has 2-D convolutions only: fold the depth (or time) axis into the channels or the "
        "batch and use Conv2D",
    ),
    "CONV_3D_TRANSPOSE": (
        "Conv3DTranspose",
        "TFLM has 2-D convolutions only: use Conv2DTranspose (TRANSPOSE_CONV) on 2-D slices, or "
        "Resizing then Conv2D",
    ),
    "GELU": (
        'activation="gelu"',
        'use activation="relu", "relu6" or "hard_swish" (TFLM kernels) and fine-tune',
    ),
    "RANGE": ("tf.range: spectrogram/STFT layers, or positions computed in the graph", ""),
    "RFFT2D": ("a spectrogram/STFT layer (keras.layers.STFTSpectrogram, MelSpectrogram)", ""),
    "COMPLEX_ABS": ("a spectrogram/STFT layer", ""),
    "REAL": ("a spectrogram/STFT layer", ""),
    "IMAG": ("a spectrogram/STFT layer", ""),
}
_SIGNAL_OPS = ("RANGE", "RFFT2D", "COMPLEX_ABS", "REAL", "IMAG")
# op TFLM has a kernel for, which refuses the types an int8 file gives it -> (source, fix);
# {layer} is the Keras layer named by the op's output tensor
KNOWN_REFUSALS: dict[str, tuple[str, str]] = {
    "EXP": (
        "TFLM's EXP kernel takes float32 only; in an int8 file EXP comes from the elu, selu, "
        "softplus and mish activations (and ELU layers)",
        "keep that layer in float, TFLM then runs the float EXP between QUANTIZE and "
        "DEQUANTIZE: tfc.convert(model, 'int8', data, keep_float=['{layer}']); or use relu, "
        "relu6, leaky_relu or hard_swish",
    ),
    "SELECT_V2": (
        "TFLM's SELECT_V2 takes int8, int16 and float32 only; Embedding (and "
        "ReversibleEmbedding) clamp their int32 ids with one",
        "look the embedding up outside the model and feed the vectors, or feed one-hot ids "
        "to a Dense layer",
    ),
    "DEQUANTIZE": (
        "TFLM's DEQUANTIZE takes int8, int16 and uint8 only; a float16 file (mode='float16') "
        "dequantizes float16 weights",
        "convert with mode='int8' (or 'float32')",
    ),
}


_INT8_INSTEAD = "convert with mode='int8', where TFLM runs it"
# op whose TFLM kernel runs int8 but refuses the int16 activations of an int16x8 file ->
# (the Keras layers it comes from, what to do); measured on TF 2.21 / Keras 3.15 with
# tfc.convert(model, "int16x8", data, target="micro") (benchmarks/micro_int16_bench.py)
INT16_REFUSALS: dict[str, tuple[str, str]] = {
    "REDUCE_MAX": (
        "GlobalMaxPooling1D/2D/3D (and keras.ops.max over an axis)",
        f"{_INT8_INSTEAD}; or use MaxPooling2D with the whole feature map as pool size "
        "(MAX_POOL_2D runs in int16), or GlobalAveragePooling",
    ),
    "GATHER": (
        "AdaptiveMaxPooling1D/2D (and keras.ops.take)",
        f"{_INT8_INSTEAD}; or use MaxPooling with a fixed pool size",
    ),
    "RESIZE_BILINEAR": (
        'Resizing(interpolation="bilinear") (the default)',
        f'{_INT8_INSTEAD}; or use Resizing(interpolation="nearest") '
        "(RESIZE_NEAREST_NEIGHBOR runs in int16)",
    ),
    "EXP": (
        "the elu, selu, softplus and mish activations (and ELU layers); TFLM's EXP takes "
        "float32 only",
        "use relu, relu6, leaky_relu, tanh or sigmoid (TFLM runs them in int16); or convert "
        "with mode='int8' and keep_float=['{layer}'] (TFLM then runs EXP in float)",
    ),
}


def resolver_method(op: str) -> str | None:
    """The `MicroMutableOpResolver` method that registers `op` (an `inspect` op name), or None.

    Args:
        op: a builtin op name (`"CONV_2D"`) or `"CUSTOM:<name>"`, as `tfc.inspect` names ops.

    Returns:
        The method name (`"AddConv2D"`), or None where TFLM has no kernel for the op.

    Example:
        >>> from tfcompress.micro.ops import resolver_method
        >>> resolver_method("CONV_2D"), resolver_method("TILE")
        ('AddConv2D', None)
    """
    if op.startswith("CUSTOM:"):
        return CUSTOM_RESOLVER_METHODS.get(op.removeprefix("CUSTOM:"))
    return RESOLVER_METHODS.get(op)


def advice(op: str, layer: str = "", dtype: str = "") -> str:
    """Where an op TFLM cannot run usually comes from, and what to do about it.

    Args:
        op: the op name, as `tfc.inspect` names ops.
        layer: the Keras layer the op comes from, when known (advice may name it).
        dtype: the type of the op's output in the file (`"INT16"` for an int16x8 file, whose
            advice differs: `keep_float` is an int8 option), when known.

    Returns:
        One or two sentences for a report: for an op TFLM lacks, or one whose TFLM kernel
        refuses the file's types (`resolver_method(op)` is not None).

    Example:
        >>> from tfcompress.micro.ops import advice
        >>> "Resizing" in advice("TILE"), "keep_float=['act']" in advice("EXP", "act")
        (True, True)
        >>> "mode='int8'" in advice("REDUCE_MAX", "pool", "INT16")
        True
    """
    name = op.removeprefix("CUSTOM:")
    layer_text = layer or "<layer>"
    if dtype == "INT16" and resolver_method(op) is not None:
        return _int16_advice(op, layer_text)
    if resolver_method(op) is not None:
        if op in KNOWN_REFUSALS:
            source, fix = KNOWN_REFUSALS[op]
            return f"{source}. Fix: {fix.format(layer=layer_text)}."
        return (
            f"TFLM has a {op} kernel, but it refuses the tensor types of this op. Keep the layer "
            f"in float if TFLM has the float kernel (tfc.convert(model, 'int8', data, "
            f"keep_float=['{layer_text}'])), or replace the layer."
        )
    if op.startswith("CUSTOM:Flex"):
        return (
            f"{name} is a TensorFlow op kept by the converter's Select TF ops (Flex), which never "
            "run on TFLM: replace the layer that needs it by layers whose ops are TFLite builtins."
        )
    if op.startswith("CUSTOM:"):
        return (
            f"the custom op {name} is not one of TFLM's: write and register its kernel in the "
            "firmware (MicroMutableOpResolver::AddCustom), or replace the layer that produces it."
        )
    if op in KNOWN_GAPS:
        source, fix = KNOWN_GAPS[op]
        fix = fix or (_FEATURES_OUTSIDE if op in _SIGNAL_OPS else _STATIC_BATCH)
        return f"TFLM has no {op} kernel. It comes from {source}. Fix: {fix}."
    return (
        f"TFLM has no {op} kernel: replace the layer that produces it by layers whose ops TFLM "
        "has (tfcompress.micro.ops.RESOLVER_METHODS lists them), or compute it outside the model."
    )


def _int16_advice(op: str, layer: str) -> str:
    if op in INT16_REFUSALS:
        source, fix = INT16_REFUSALS[op]
        return (
            f"TFLM's {op} kernel refuses the 16-bit activations of an int16x8 file; {op} comes "
            f"from {source}. Fix: {fix.format(layer=layer)}."
        )
    return (
        f"TFLM has a {op} kernel, but it refuses the 16-bit activations of an int16x8 file: "
        f"convert with mode='int8' (with keep_float=['{layer}'] if TFLM has the float kernel), "
        f"or replace the layer '{layer}'."
    )
