"""`QuantizeWrapper`: a kernel layer (optionally with its BatchNormalization folded in) whose
weights are fake-quantized the way TFLite stores them."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.core import catalog
from tfcompress.core.batchnorm import fold_into_kernel
from tfcompress.quantization.config import QuantizeConfig
from tfcompress.quantization.quantizers import ActivationQuantizer, WeightQuantizer

L = keras.layers
_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


_SPARSE_KERNEL = 0.1  # share of exact zeros from which a kernel counts as pruned


def _kernel_of(layer: Any) -> Any:
    """The weight matrix a kernel layer multiplies by (an Embedding's table)."""
    if isinstance(layer, L.Embedding):
        return layer.embeddings
    return layer.kernel


def _zero_fraction(layer: Any) -> float:
    kernel = _kernel_of(layer) if getattr(layer, "built", False) else None
    if kernel is None:
        return 0.0
    values = kernel.numpy()
    return float((values == 0).mean()) if values.size else 0.0


def supports_kernel_wrapping(layer: Any) -> bool:
    """True for the kernel layers whose forward pass `QuantizeWrapper` knows how to recompute."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    if isinstance(layer, L.EinsumDense | L.Conv2DTranspose):
        return True
    if isinstance(layer, L.Embedding):
        # a masking or LoRA Embedding keeps its own call
        return not layer.mask_zero and not getattr(layer, "lora_enabled", False)
    return isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D | L.Dense) or catalog.is_depthwise(
        layer
    )


def _is_conv1d(layer: Any) -> bool:
    return isinstance(layer, L.Conv1D | L.DepthwiseConv1D)


def _conv1d_as_2d(layer: Any, inputs: Any, kernel: Any) -> Any:
    """Conv1D / DepthwiseConv1D computed as TFLite computes them: a 2-D (depthwise) convolution
    over (batch, 1, width, channels) with the (1, width, in, out or multiplier) `kernel`."""
    padding = layer.padding
    if padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        inputs = ops.pad(inputs, [[0, 0], [left, 0], [0, 0]])
        padding = "valid"
    convolution = ops.depthwise_conv if isinstance(layer, L.DepthwiseConv1D) else ops.conv
    outputs = convolution(
        ops.expand_dims(inputs, 1),
        kernel,
        strides=(1, layer.strides[0]),
        padding=padding,
        dilation_rate=(1, layer.dilation_rate[0]),
        data_format="channels_last",
    )
    return ops.squeeze(outputs, 1)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeWrapper(L.Wrapper):
    """Runs `layer` with fake-quantized weights; folds a following BatchNormalization into them.

    The BatchNormalization is folded with its moving statistics, so the kernel quantized in
    training is exactly the one the TFLite converter deploys (its gamma and beta keep training).

    Args:
        layer: a built Conv1D/2D/3D, DepthwiseConv1D/2D, Conv2DTranspose, Dense, EinsumDense
            (channels_last) or Embedding (its table is quantized per tensor).
        config: the `QuantizeConfig`; default 8-bit weights.
        batchnorm: an optional built BatchNormalization applied to `layer`'s output (last axis).
        preserve_sparsity: keep the kernel's zeros at zero through training (sparsity-preserving
            QAT for pruned models). By default it is on when at least 10% of the kernel is
            exactly zero, as after `strip_pruning`.

    Example:
        >>> import numpy as np
        >>> dense = keras.layers.Dense(3)
        >>> dense.build((None, 4))
        >>> wrapped = QuantizeWrapper(dense)
        >>> x = np.ones((2, 4), dtype="float32")
        >>> np.allclose(wrapped(x), dense(x), atol=0.05)
        True
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        config: QuantizeConfig | None = None,
        batchnorm: keras.layers.Layer | None = None,
        preserve_sparsity: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not supports_kernel_wrapping(layer):
            raise ValueError(
                f"QuantizeWrapper: cannot wrap layer '{layer.name}' ({type(layer).__name__}); it "
                "wraps channels_last Conv1D/2D/3D, DepthwiseConv1D/2D, Conv2DTranspose, Dense, "
                "EinsumDense and Embedding (without mask_zero). Annotate other layers with "
                "QuantizeConfig(role='output') or role='float'."
            )
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.config = config or QuantizeConfig()
        self.batchnorm = batchnorm
        if preserve_sparsity is None:
            preserve_sparsity = _zero_fraction(layer) >= _SPARSE_KERNEL
        self.preserve_sparsity = bool(preserve_sparsity)
        # The converter rejects per-channel fake quant on FULLY_CONNECTED, so Dense is per tensor.
        per_channel = (
            self.config.per_channel
            and (isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D) or catalog.is_depthwise(layer))
            and not catalog.is_transposed(layer)
        )
        self.weight_quantizer = WeightQuantizer(self.config.weight_bits, per_channel)
        # TFLite fuses only relu/relu6 into the kernel op; other activations need a range before.
        self.pre_activation = None
        if not self.fuses_activation:
            self.pre_activation = ActivationQuantizer(
                num_bits=self.config.activation_bits,
                learned_step=self.config.learned_step,
                name=f"{self.name}_pre_activation",
            )

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batchnorm is not None and not self.batchnorm.built:
            self.batchnorm.build(output_shape)
        if self.pre_activation is not None and not self.pre_activation.built:
            self.pre_activation.build(output_shape)
        if self.preserve_sparsity:
            kernel = _kernel_of(self.layer)
            self.sparsity_mask = self.add_weight(
                name="sparsity_mask", shape=tuple(kernel.shape), initializer="ones", trainable=False
            )
            self.sparsity_mask.assign(ops.cast(ops.not_equal(kernel, 0), self.sparsity_mask.dtype))
        self.weight_log_step = None
        if self.config.learned_step and self.config.weight_bits > 1:
            # LSQ starts from the min/max scheme's step and learns it from there (log scale).
            initial = self.weight_quantizer.initial_step(
                self._depthwise_flat(self._folded_kernel_and_bias()[0])
            )
            self.weight_log_step = self.add_weight(
                name="weight_log_step", shape=tuple(initial.shape), initializer="zeros"
            )
            self.weight_log_step.assign(ops.log(initial))
        self.built = True

    def _folded_kernel_and_bias(self) -> tuple[Any, Any]:
        kernel = ops.convert_to_tensor(_kernel_of(self.layer))
        if self.preserve_sparsity:
            kernel = kernel * self.sparsity_mask
        bias = self.layer.bias if getattr(self.layer, "bias", None) is not None else None
        if self.batchnorm is None:
            return kernel, bias
        return fold_into_kernel(self.layer, self.batchnorm, kernel, bias)

    def _depthwise_flat(self, kernel: Any) -> Any:
        """Depthwise kernels are (h, w, in, multiplier); quantize them per output channel."""
        if catalog.is_depthwise(self.layer):
            shape = kernel.shape
            return ops.reshape(kernel, (*shape[:-2], shape[-2] * shape[-1]))
        return kernel

    def _quantized_kernel(self, kernel: Any, training: bool | None) -> Any:
        step = None if self.weight_log_step is None else ops.exp(self.weight_log_step)
        quantized = self.weight_quantizer(self._depthwise_flat(kernel), step, bool(training))
        return ops.reshape(quantized, kernel.shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        kernel, bias = self._folded_kernel_and_bias()
        layer = self.layer
        if _is_conv1d(layer):
            # TFLite runs Conv1D (DepthwiseConv1D) as CONV_2D (DEPTHWISE_CONV_2D) on (batch, 1, width, channels). Quantizing the 4-D
            # kernel that CONV_2D reads keeps the per-channel axis through the conversion (a
            # fake-quantized 3-D kernel reshaped afterwards does not convert).
            kernel = ops.expand_dims(kernel, 0)
        kernel = self._quantized_kernel(kernel, training)
        if isinstance(layer, L.Embedding):
            # TFLite's GATHER keeps the table's scale: the output is already quantized.
            return ops.take(kernel, ops.cast(inputs, "int32"), axis=0)
        if _is_conv1d(layer):
            outputs = _conv1d_as_2d(layer, inputs, kernel)
        elif isinstance(layer, L.DepthwiseConv2D):
            outputs = ops.depthwise_conv(
                inputs,
                kernel,
                strides=layer.strides,
                padding=layer.padding,
                data_format=layer.data_format,
                dilation_rate=layer.dilation_rate,
            )
        elif isinstance(layer, L.Dense) and len(inputs.shape) > 3:
            # On a 4-D or 5-D tensor TF's matmul is a tensordot whose bias add the converter
            # cannot fuse: the product is rounded to int8 once more before the bias (up to 7
            # output steps off after a max pooling). As RESHAPE -> FULLY_CONNECTED(bias) ->
            # RESHAPE the bias is fused and the file computes what the Keras model does.
            flat = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), kernel)
            if bias is not None:
                flat, bias = ops.add(flat, bias), None
            outputs = ops.reshape(flat, (-1, *inputs.shape[1:-1], kernel.shape[-1]))
        elif isinstance(layer, L.Dense):
            outputs = ops.matmul(inputs, kernel)
        elif isinstance(layer, L.EinsumDense):
            outputs = ops.einsum(layer.equation, inputs, kernel)
        elif isinstance(layer, L.Conv2DTranspose):
            outputs = ops.conv_transpose(
                inputs,
                kernel,
                strides=list(layer.strides),
                padding=layer.padding,
                output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
        else:
            outputs = layer.convolution_op(inputs, kernel)
        if bias is not None:
            # ops.add puts a per-channel bias in a BiasAdd (as Keras's own layers do), whose
            # gradient TensorFlow fuses into the convolution's; `+` is an AddV2 + Sum.
            outputs = ops.add(outputs, bias)
        if self.pre_activation is not None:
            outputs = self.pre_activation(outputs, training=training)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    @property
    def fuses_activation(self) -> bool:
        """True when TFLite fuses this layer's activation (so no range is needed before it)."""
        return _activation_name(self.layer) in _FUSED_ACTIVATIONS

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        batchnorm = self.batchnorm
        return {
            **super().get_config(),
            "config": keras.saving.serialize_keras_object(self.config),
            "batchnorm": None
            if batchnorm is None
            else keras.saving.serialize_keras_object(batchnorm),
            "preserve_sparsity": self.preserve_sparsity,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> QuantizeWrapper:
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects)
        quant = keras.saving.deserialize_keras_object(config.pop("config"), custom_objects)
        batchnorm = config.pop("batchnorm", None)
        if batchnorm is not None:
            batchnorm = keras.saving.deserialize_keras_object(batchnorm, custom_objects)
        return cls(layer, config=quant, batchnorm=batchnorm, **config)
