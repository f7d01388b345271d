"""The catalog of layer knowledge: one row per Keras layer class, read by every technique.

Quantization-aware training, pruning, clustering, structured pruning, BatchNorm folding, PTQ
recovery and the layer map all ask this table what they need to know about a layer class,
instead of keeping tables of their own. Supporting one more layer class is one row here (and
one coverage row in `tests/coverage/`). Users teach tfcompress their own layers through each
technique's public hook instead (`register_quantize_config`, `PrunableLayer`, `ClusterableLayer`).

Lookups follow the class hierarchy (`info`): a subclass of `Conv2D` is a `Conv2D` unless it has a
row of its own. Techniques that must not guess about subclasses (clustering's single-kernel
wrapper, cluster-preserving QAT) look at the exact class (`exact_info`).

Example:
    >>> import keras
    >>> info(keras.layers.Dense(2)).kernels, info(keras.layers.Dense(2)).quantize
    (('kernel',), 'kernel')
    >>> info(keras.layers.Conv3D(2, 3)).float_reason
    "TFLite's CONV_3D kernel runs in float only"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

L = keras.layers

# quantization roles (what quantize_model does with the layer)
KERNEL = "kernel"  # fake-quantize its weights (per channel) and its output
OUTPUT = "output"  # fake-quantize its output only
PASSTHROUGH = "passthrough"  # same scale in and out (pooling, reshape, padding, dropout, ...)
FLOAT = "float"  # TFLite has no integer kernel: stays float inside an int8 file

# kernel layouts (the last axes of a kernel; every other kernel ends in its output channels)
DEPTHWISE = "depthwise"  # (..., in, multiplier)
TRANSPOSED = "transposed"  # (..., out, in)


@dataclass(frozen=True)
class LayerInfo:
    """What tfcompress knows about one layer class.

    Attributes:
        kernels: attribute paths of the weights pruning masks (`"a|b"`: whichever exists).
        cluster_kernel: the one weight clustering's single-kernel wrapper clusters, if any.
        quantize: its quantization role (`KERNEL`, `OUTPUT`, `PASSTHROUGH`, `FLOAT`), or None.
        float_reason: why TFLite runs it only in float (role `FLOAT`).
        folds_batchnorm: a BatchNormalization right after it folds into its kernel.
        channels: for structured pruning: `"producer"` (makes a channel group), `"channelwise"`
            (keeps channel positions), `"merge"` (joins groups element-wise), or None.
        pass_through: computes nothing at inference (its output is its input, reshaped at most).
        recovery: how PTQ recovery (equalization, bias correction, AdaRound) treats it:
            `"kernel"` (its kernel is equalized, corrected and rounded), `"separable"` (split
            into its depthwise and 1x1 pointwise convolutions first, the two ops TFLite runs,
            then handled as two kernels), `"scales"` (a positive per-channel scale passes
            through it, `f(s * x) = s * f(x)`: equalization pairs the kernels on either side),
            or `""` (not handled: a layer with weights is named in the steps' warning).
        cluster_qat: cluster-preserving QAT freezes its kernel on one per-tensor scale.
        no_tflite: why TFLite cannot run it in any mode, and what to use instead.
        keep_float: why its int8 ops lose what the model needs, so `convert` keeps it float
            inside an integer file unless told otherwise.
        kernel_layout: how its kernel's last axes are laid out, for code that scales, groups or
            slices a kernel by channel: `"depthwise"` (..., in, multiplier), `"transposed"`
            (..., out, in), or `""` (..., out: every other kernel).
    """

    kernels: tuple[str, ...] = ()
    cluster_kernel: str | None = None
    quantize: str | None = None
    float_reason: str = ""
    folds_batchnorm: bool = False
    channels: str | None = None
    pass_through: bool = False
    recovery: str = ""
    cluster_qat: bool = False
    no_tflite: str = ""
    keep_float: str = ""
    kernel_layout: str = ""


_K = ("kernel",)
_CELL = ("cell.kernel", "cell.recurrent_kernel")
_BIDIRECTIONAL = (
    "forward_layer.cell.kernel",
    "forward_layer.cell.recurrent_kernel",
    "backward_layer.cell.kernel",
    "backward_layer.cell.recurrent_kernel",
)
_ATTENTION = (
    "_query_dense.kernel",
    "_key_dense.kernel",
    "_value_dense.kernel",
    "_output_dense.kernel",
)
# Keras 3 names the depthwise kernel `kernel`; older releases `depthwise_kernel`
_DEPTHWISE = ("kernel|depthwise_kernel",)
_SEPARABLE = ("depthwise_kernel", "pointwise_kernel")

_NO_3D_POOLING = (
    "TFLite has no 3-D pooling op in any mode: pool with a strided Conv3D, or reshape to 2-D "
    "and pool there"
)

_SPECTROGRAM = "a spectrogram in int8 rounds away the quiet frequency bins that carry the signal"

CATALOG: dict[type, LayerInfo] = {
    # -- layers with kernels --------------------------------------------------------------------
    L.Dense: LayerInfo(
        _K,
        "kernel",
        KERNEL,
        folds_batchnorm=True,
        channels="producer",
        recovery="kernel",
        cluster_qat=True,
    ),
    L.EinsumDense: LayerInfo(_K, "kernel", KERNEL),
    L.Conv1D: LayerInfo(
        _K,
        "kernel",
        KERNEL,
        folds_batchnorm=True,
        channels="producer",
        recovery="kernel",
        cluster_qat=True,
    ),
    L.Conv2D: LayerInfo(
        _K,
        "kernel",
        KERNEL,
        folds_batchnorm=True,
        channels="producer",
        recovery="kernel",
        cluster_qat=True,
    ),
    L.Conv3D: LayerInfo(
        _K,
        "kernel",
        FLOAT,
        "TFLite's CONV_3D kernel runs in float only",
        folds_batchnorm=True,
        channels="producer",
    ),
    L.DepthwiseConv1D: LayerInfo(
        _DEPTHWISE,
        "kernel",
        KERNEL,
        folds_batchnorm=True,
        recovery="kernel",
        kernel_layout=DEPTHWISE,
    ),
    L.DepthwiseConv2D: LayerInfo(
        _DEPTHWISE,
        "kernel",
        KERNEL,
        folds_batchnorm=True,
        recovery="kernel",
        cluster_qat=True,
        kernel_layout=DEPTHWISE,
    ),
    # quantize_model splits separable convolutions into their depthwise and pointwise parts;
    # a BatchNormalization folds into the pointwise kernel
    L.SeparableConv1D: LayerInfo(
        _SEPARABLE, None, KERNEL, folds_batchnorm=True, recovery="separable"
    ),
    L.SeparableConv2D: LayerInfo(
        _SEPARABLE, None, KERNEL, folds_batchnorm=True, recovery="separable"
    ),
    L.Conv1DTranspose: LayerInfo(
        _K, "kernel", OUTPUT, folds_batchnorm=True, kernel_layout=TRANSPOSED
    ),
    L.Conv2DTranspose: LayerInfo(
        _K, "kernel", KERNEL, folds_batchnorm=True, kernel_layout=TRANSPOSED
    ),
    L.Conv3DTranspose: LayerInfo(
        _K,
        "kernel",
        FLOAT,
        "TFLite's CONV_3D_TRANSPOSE kernel runs in float only",
        folds_batchnorm=True,
        kernel_layout=TRANSPOSED,
    ),
    # the table is fake-quantized; GATHER keeps its scale
    L.Embedding: LayerInfo(("embeddings",), "embeddings", KERNEL),
    L.MultiHeadAttention: LayerInfo(_ATTENTION, None, OUTPUT),
    L.LSTM: LayerInfo(_CELL),
    L.GRU: LayerInfo(_CELL),
    L.SimpleRNN: LayerInfo(_CELL),
    L.Bidirectional: LayerInfo(_BIDIRECTIONAL),
    # -- layers that keep channel positions -----------------------------------------------------
    L.BatchNormalization: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.ReLU: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.Activation: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.LeakyReLU: LayerInfo(quantize=OUTPUT, channels="channelwise", recovery="scales"),
    L.PReLU: LayerInfo(quantize=OUTPUT, channels="channelwise", recovery="scales"),
    L.ELU: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.Softmax: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.Dropout: LayerInfo(quantize=PASSTHROUGH, channels="channelwise", pass_through=True),
    L.SpatialDropout1D: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.SpatialDropout2D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise", pass_through=True),
    L.SpatialDropout3D: LayerInfo(pass_through=True),
    L.MaxPooling1D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.MaxPooling2D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.MaxPooling3D: LayerInfo(
        quantize=PASSTHROUGH,
        no_tflite=_NO_3D_POOLING,
    ),
    # TFLite's AVERAGE_POOL_2D requires the same scale on its input and output
    L.AveragePooling1D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.AveragePooling2D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.AveragePooling3D: LayerInfo(
        quantize=PASSTHROUGH,
        no_tflite=_NO_3D_POOLING,
    ),
    L.GlobalAveragePooling1D: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.GlobalAveragePooling2D: LayerInfo(quantize=OUTPUT, channels="channelwise"),
    L.GlobalAveragePooling3D: LayerInfo(quantize=OUTPUT),
    L.GlobalMaxPooling1D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.GlobalMaxPooling2D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.GlobalMaxPooling3D: LayerInfo(quantize=PASSTHROUGH),
    L.ZeroPadding1D: LayerInfo(quantize=PASSTHROUGH),
    L.ZeroPadding2D: LayerInfo(quantize=PASSTHROUGH, channels="channelwise"),
    L.ZeroPadding3D: LayerInfo(quantize=PASSTHROUGH),
    L.Identity: LayerInfo(quantize=PASSTHROUGH, channels="channelwise", pass_through=True),
    # -- element-wise merges ----------------------------------------------------------------------
    L.Add: LayerInfo(quantize=OUTPUT, channels="merge"),
    L.Subtract: LayerInfo(quantize=OUTPUT, channels="merge"),
    L.Multiply: LayerInfo(quantize=OUTPUT, channels="merge"),
    L.Average: LayerInfo(quantize=OUTPUT, channels="merge"),
    L.Maximum: LayerInfo(quantize=OUTPUT, channels="merge"),
    L.Minimum: LayerInfo(quantize=OUTPUT, channels="merge"),
    # -- everything else quantization knows -----------------------------------------------------
    # becomes AveragePooling (integer_friendly) when sizes divide
    L.AdaptiveAveragePooling1D: LayerInfo(quantize=PASSTHROUGH),
    L.AdaptiveAveragePooling2D: LayerInfo(quantize=PASSTHROUGH),
    L.AdaptiveMaxPooling1D: LayerInfo(quantize=PASSTHROUGH),
    L.AdaptiveMaxPooling2D: LayerInfo(quantize=PASSTHROUGH),
    L.AdaptiveAveragePooling3D: LayerInfo(no_tflite=_NO_3D_POOLING),
    L.AdaptiveMaxPooling3D: LayerInfo(no_tflite=_NO_3D_POOLING),
    L.Reshape: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.Flatten: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.Permute: LayerInfo(quantize=PASSTHROUGH),
    L.GaussianDropout: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.GaussianNoise: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.AlphaDropout: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.ActivityRegularization: LayerInfo(quantize=PASSTHROUGH, pass_through=True),
    L.Cropping1D: LayerInfo(quantize=PASSTHROUGH),
    L.Cropping2D: LayerInfo(quantize=PASSTHROUGH),
    L.Cropping3D: LayerInfo(quantize=PASSTHROUGH),
    L.RepeatVector: LayerInfo(quantize=PASSTHROUGH),
    L.InputLayer: LayerInfo(quantize=PASSTHROUGH),
    L.LayerNormalization: LayerInfo(quantize=OUTPUT),
    L.Normalization: LayerInfo(quantize=OUTPUT),
    L.Rescaling: LayerInfo(quantize=OUTPUT),
    # TFLite's int8 resize kernels keep the input's scale: no range of their own in QAT either
    L.Resizing: LayerInfo(quantize=PASSTHROUGH),
    L.UpSampling1D: LayerInfo(quantize=PASSTHROUGH),
    L.UpSampling2D: LayerInfo(quantize=PASSTHROUGH),
    L.UpSampling3D: LayerInfo(quantize=OUTPUT),
    L.Concatenate: LayerInfo(quantize=OUTPUT),
    L.CenterCrop: LayerInfo(quantize=OUTPUT),
    # computed in float in training with a range on the output; the converter quantizes the
    # weights and calibrates the tensors inside (all have int8 kernels: tests/coverage)
    L.GroupNormalization: LayerInfo(quantize=OUTPUT),
    L.RMSNormalization: LayerInfo(quantize=OUTPUT),
    L.UnitNormalization: LayerInfo(quantize=OUTPUT),
    L.Attention: LayerInfo(quantize=OUTPUT),
    L.AdditiveAttention: LayerInfo(quantize=OUTPUT),
    L.GroupQueryAttention: LayerInfo(quantize=OUTPUT),
    L.Dot: LayerInfo(quantize=OUTPUT),
    L.SpectralNormalization: LayerInfo(quantize=OUTPUT),
    L.TimeDistributed: LayerInfo(quantize=OUTPUT),
    L.Masking: LayerInfo(quantize=OUTPUT),
    # audio front ends: int8 squares and logs of frequency bins drown the quiet bins that
    # carry the signal (the file's agreement with the model drops far below its float copy's)
    L.STFTSpectrogram: LayerInfo(keep_float=_SPECTROGRAM),
    L.MelSpectrogram: LayerInfo(keep_float=_SPECTROGRAM),
}
# random augmentation layers are the identity at inference, where the int8 file is traced
for _name in dir(L):
    _class = getattr(L, _name)
    if _name.startswith("Random") and isinstance(_class, type) and _class not in CATALOG:
        CATALOG[_class] = LayerInfo(quantize=PASSTHROUGH)


def info(layer: Any) -> LayerInfo | None:
    """The row of `layer` (an instance or a class), most specific class first; None if unknown.

    Example:
        >>> import keras
        >>> class MyConv(keras.layers.Conv2D):
        ...     pass
        >>> info(MyConv).folds_batchnorm, info(keras.layers.Layer) is None
        (True, True)
    """
    klass = layer if isinstance(layer, type) else type(layer)
    for base in klass.__mro__:
        row = CATALOG.get(base)
        if row is not None:
            return row
    return None


_TFLITE_RESIZING = ("bilinear", "nearest")  # RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR


def tflite_gap(layer: Any) -> str | None:
    """Why TFLite cannot run `layer` in any mode (with what to use instead), or None.

    Example:
        >>> import keras
        >>> tflite_gap(keras.layers.Resizing(4, 4, interpolation="bicubic"))[:40]
        "TFLite resizes only with interpolation '"
        >>> tflite_gap(keras.layers.Resizing(4, 4)) is None
        True
    """
    if isinstance(layer, L.Resizing) and layer.interpolation not in _TFLITE_RESIZING:
        return (
            f"TFLite resizes only with interpolation 'bilinear' or 'nearest', not "
            f"'{layer.interpolation}': use one of those (or resize outside the model)"
        )
    row = info(layer)
    return row.no_tflite or None if row is not None else None


def is_depthwise(layer: Any) -> bool:
    """Whether `layer` filters each input channel on its own (kernel `(..., in, multiplier)`).

    Example:
        >>> import keras
        >>> is_depthwise(keras.layers.DepthwiseConv2D(3)), is_depthwise(keras.layers.Conv2D(2, 3))
        (True, False)
    """
    row = info(layer)
    return row is not None and row.kernel_layout == DEPTHWISE


def is_transposed(layer: Any) -> bool:
    """Whether `layer`'s kernel is laid out `(..., out, in)` (the transposed convolutions).

    Example:
        >>> import keras
        >>> is_transposed(keras.layers.Conv2DTranspose(2, 3)), is_transposed(keras.layers.Dense(2))
        (True, False)
    """
    row = info(layer)
    return row is not None and row.kernel_layout == TRANSPOSED


def exact_info(layer: Any) -> LayerInfo | None:
    """The row of exactly `layer`'s class (a subclass gets None), for techniques that must not guess."""
    return CATALOG.get(layer if isinstance(layer, type) else type(layer))


def classes(where: Callable[[LayerInfo], Any]) -> tuple[type, ...]:
    """The catalog's classes whose row satisfies `where`, in catalog order (for `isinstance`).

    Example:
        >>> import keras
        >>> keras.layers.Add in classes(lambda row: row.channels == "merge")
        True
    """
    return tuple(klass for klass, row in CATALOG.items() if where(row))
