"""`strip_quantization`: a plain float Keras model holding the weights a QAT model deploys."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.core import graph
from tfcompress.quantization.integer_friendly import masks_steps
from tfcompress.quantization.masking import IntegerGlobalAveragePooling1D, IntegerMasking, StepMask
from tfcompress.quantization.quantizers import ActivationQuantizer
from tfcompress.quantization.recurrent import UnrolledBidirectional, _UnrolledRecurrent
from tfcompress.quantization.wrapper import QuantizeWrapper


def is_quantization_aware(model: Any) -> bool:
    """True when `model` (or a model nested in it) holds tfcompress fake-quant layers."""
    layers = getattr(model, "layers", None) or []
    return any(
        isinstance(layer, QuantizeWrapper | ActivationQuantizer)
        or _quantized_integer_friendly(layer)
        or is_quantization_aware(layer)
        for layer in layers
    )


def untrained_ranges(model: Any) -> list[str]:
    """The layers holding activation ranges of a quantization-aware `model` never trained at all.

    Empty once any range has seen a training batch (ranges a model never uses stay unseen,
    whatever its training: an unrolled recurrence's unused gates, say). A model that was never
    fitted still has the initial (-6, 6) everywhere: its int8 file would use them as they are.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.quantization import quantize_model
        >>> untrained_ranges(quantize_model(build_digits_cnn(width=4)))[:2]
        ['image_quant', 'relu1_quant']
    """
    seen = [v for v in model.non_trainable_weights if v.path.endswith("seen")]
    if not seen or any(float(keras.ops.convert_to_numpy(v)) > 0 for v in seen):
        return []
    # the layer's own scope: a name scope Keras left open elsewhere may prefix the path
    return list(dict.fromkeys(variable.path.split("/")[-2] for variable in seen))


def _quantized_integer_friendly(layer: Any) -> bool:
    """An unrolled recurrence or an integer mask layer built quantization-aware."""

    kinds = (
        _UnrolledRecurrent,
        UnrolledBidirectional,
        IntegerMasking,
        IntegerGlobalAveragePooling1D,
        StepMask,
    )
    return isinstance(layer, kinds) and layer.quantize_config is not None


def activation_bits(model: Any) -> set[int]:
    """The bit widths of the activation ranges in `model` (empty for a float model)."""
    found: set[int] = set()
    for layer in getattr(model, "layers", None) or []:
        if isinstance(layer, ActivationQuantizer):
            found.add(layer.num_bits)
        elif isinstance(layer, QuantizeWrapper) and layer.pre_activation is not None:
            found.add(layer.pre_activation.num_bits)
        else:
            found |= activation_bits(layer)
    return found


def strip_quantization(model: keras.Model) -> keras.Model:
    """The float model a QAT model stands for: fake-quantized weights baked in, no fake quant.

    Each `QuantizeWrapper` becomes its plain layer whose kernel is the weight the int8 file would
    store (BatchNormalization folded, values on the quantization grid), each quantization-aware
    unrolled LSTM/GRU/SimpleRNN/Bidirectional its float unrolled layer with those weights, each
    quantization-aware integer mask layer its float twin, and every `ActivationQuantizer` an
    `Identity`. Use it to export a QAT model in a mode the
    converter cannot take fake quant in (`convert(mode="int16x8")` does this by itself), or to
    inspect the deployed weights.

    Example:
        >>> import numpy as np
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> qat = tfc.quantize_model(build_digits_cnn(width=4), weight_bits=2)
        >>> plain = strip_quantization(qat)
        >>> is_quantization_aware(plain)
        False
        >>> kernel = plain.get_layer("conv2").kernel.numpy()
        >>> int(max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])))  # ternary
        3
    """
    graph.check_model(model, "strip_quantization")

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, ActivationQuantizer):
            return keras.layers.Identity(name=layer.name)
        if isinstance(layer, QuantizeWrapper):
            return _baked_layer(layer)
        if not _quantized_integer_friendly(layer):
            return None
        if hasattr(layer, "baked"):  # an unrolled recurrence: its deployed weights
            return layer.baked()
        # a mask layer: no weights, only ranges
        return type(layer).from_config({**layer.get_config(), "quantize_config": None})

    return graph.rebuild(model, replace, fresh_masks=masks_steps(model))


def _baked_layer(wrapper: QuantizeWrapper) -> keras.layers.Layer:
    """The wrapped layer with its folded, fake-quantized kernel and folded bias."""
    kernel, bias = wrapper._folded_kernel_and_bias()
    kernel = wrapper._quantized_kernel(kernel, training=False)
    config = wrapper.layer.get_config()
    if bias is not None and "use_bias" in config:
        config["use_bias"] = True
    elif bias is not None and "bias_axes" in config and not config["bias_axes"]:
        raise ValueError(
            f"strip_quantization: cannot fold the BatchNormalization of '{wrapper.layer.name}' "
            "(an EinsumDense without bias_axes) into a plain layer."
        )
    layer = wrapper.layer.__class__.from_config(config)
    layer.build(wrapper.get_build_config()["input_shape"])
    values = [ops.convert_to_numpy(kernel)]
    if bias is not None:
        values.append(ops.convert_to_numpy(bias))
    layer.set_weights(values)
    return layer
