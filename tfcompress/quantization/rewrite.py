"""`quantize_model`: rebuild a functional/Sequential graph with fake quant where TFLite needs it.

The graph is walked node by node in topological order and re-called on new tensors:
kernel layers become `QuantizeWrapper`s (with a following BatchNormalization folded in), and an
`ActivationQuantizer` is put on a tensor the first time a consumer needs it quantized. A tensor
feeding only a ReLU/ReLU6 straight from a Conv/Dense/Add stays float, since TFLite fuses the two.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import keras

from tfcompress.core import catalog, compat
from tfcompress.core.batchnorm import folds_into, is_linear
from tfcompress.core.graph import (
    functional_graph,
    is_graph_model,
    needs_tracing,
    nodes_inputs_first,
    tensor_readers,
    traced_model,
)
from tfcompress.core.wrappers import walk_layers
from tfcompress.io import model_from
from tfcompress.quantization.config import (
    FLOAT,
    KERNEL,
    OUTPUT,
    PASSTHROUGH,
    QuantizeConfig,
    float_only_reason,
    get_quantize_config,
)
from tfcompress.quantization.custom import CustomQuantizeWrapper, is_tfmot_style
from tfcompress.quantization.integer_friendly import (
    integer_friendly,
    integer_friendly_layer,
    masks_steps,
)
from tfcompress.quantization.layers import QuantizedMultiHeadAttention
from tfcompress.quantization.quantizers import ActivationQuantizer
from tfcompress.quantization.recurrent import (
    UnrolledBidirectional,
    UnrolledGRU,
    UnrolledLSTM,
    UnrolledSimpleRNN,
    as_recurrent_layer,
)
from tfcompress.quantization.wrapper import QuantizeWrapper, supports_kernel_wrapping

L = keras.layers
_ANNOTATION = "_tfcompress_quantize_config"
_CUSTOM = "custom"  # a tfmot-style QuantizeConfig: the layer runs the config's own quantizers
_UNTOUCHED = "untouched"  # quantize_apply: a layer that was not annotated is left as it is
#: The annotation quantize_annotate_model puts on a layer: "use the registry's config".
_REGISTRY_DEFAULT = "registry"
# keras.ops written in a functional graph that only move or select values keep their input scale.
_PASSTHROUGH_OPS = {
    "GetItem",
    "Reshape",
    "Transpose",
    "Squeeze",
    "ExpandDims",
    "Slice",
    "Split",
    "Flatten",
    "Tile",
    "Repeat",
    "BroadcastTo",
    "MoveAxis",
    "SwapAxes",
    "StopGradient",
    "Identity",
}

# Layers replaced by an equivalent that converts to int8 kernels only (LayerNormalization's NEG,
# Normalization's float requantize) or trains the int8 tensors TFLite keeps inside (attention).
_INTEGER_FRIENDLY: dict[type, type] = {
    L.MultiHeadAttention: QuantizedMultiHeadAttention,
    # recurrent layers: unrolled into FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH steps (recurrent.py)
    L.LSTM: UnrolledLSTM,
    L.GRU: UnrolledGRU,
    L.SimpleRNN: UnrolledSimpleRNN,
    L.Bidirectional: UnrolledBidirectional,
    UnrolledLSTM: UnrolledLSTM,
    UnrolledGRU: UnrolledGRU,
    UnrolledSimpleRNN: UnrolledSimpleRNN,
    UnrolledBidirectional: UnrolledBidirectional,
}


def quantize_annotate_layer(
    layer: keras.layers.Layer, config: QuantizeConfig | None = None
) -> keras.layers.Layer:
    """Attach a `QuantizeConfig` to `layer`, honoured by `quantize_apply` / `quantize_model`.

    Use `QuantizeConfig(role="float")` to keep a layer in float, or give a custom layer a role
    (e.g. "output") so strict mode accepts it. Returns the same layer, so it can be used inline.
    A tfmot-style subclass (overriding `get_weights_and_quantizers`,
    `get_activations_and_quantizers`, `get_output_quantizers`, ...) is honoured too: the layer
    runs exactly the quantizers the config returns (`tfcompress.quantization.custom`).

    Example:
        >>> from tfcompress.quantization import QuantizeConfig
        >>> dense = quantize_annotate_layer(keras.layers.Dense(4), QuantizeConfig(weight_bits=4))
        >>> getattr(dense, "_tfcompress_quantize_config").weight_bits
        4
    """
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            f"quantize_annotate_layer expects a keras Layer; got {type(layer).__name__}."
        )
    if config is None:
        config = get_quantize_config(layer) or QuantizeConfig(role=OUTPUT)
    if not isinstance(config, QuantizeConfig):
        raise TypeError(
            f"quantize_annotate_layer: config must be a QuantizeConfig; got {config!r}."
        )
    setattr(layer, _ANNOTATION, config)
    return layer


def quantize_annotate_model(model: keras.Model) -> keras.Model:
    """Annotate every layer of `model` (tfmot's `quantize_annotate_model`): `quantize_apply` then
    quantizes the whole model. Layers already annotated keep their config.

    Returns the same model (its layers carry the annotations).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> [type(layer).__name__ for layer in quantize_apply(quantize_annotate_model(model)).layers]
        ['InputLayer', 'ActivationQuantizer', 'QuantizeWrapper', 'ActivationQuantizer']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"quantize_annotate_model expects a keras.Model; got {type(model).__name__}."
        )
    # a subclassed model's layers hide inside its composite layers: annotate every one
    layers = walk_layers(model) if is_graph_model(model) else compat.nested_layers(model)
    for layer in layers:
        if getattr(layer, _ANNOTATION, None) is None and not isinstance(layer, keras.Model):
            setattr(layer, _ANNOTATION, _REGISTRY_DEFAULT)
    return model


def quantize_apply(
    annotated_model: keras.Model, scheme: Any = None, *, strict: bool = False
) -> keras.Model:
    """Quantize the layers of `annotated_model` that carry an annotation, and only those.

    As in tfmot: layers annotated with `quantize_annotate_layer` use their config (or the
    registry's when none was given), layers annotated by `quantize_annotate_model` use the
    registry, and every layer that was NOT annotated stays exactly as it is (float, no fake
    quant inside it; a range is put on its output only where an annotated layer reads it).
    A model with no annotation at all is refused: use `quantize_model` to quantize everything.

    Args:
        annotated_model: a functional or Sequential model with annotated layers.
        scheme: optional tfmot-style scheme, e.g.
            `tfcompress.experimental.combine.Default8BitPrunePreserveQuantizeScheme()`.
        strict: (keyword only) raise on an annotated layer the registry does not know.

    Example:
        >>> from tfcompress.quantization import QuantizeConfig
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(8)(inputs)
        >>> outputs = quantize_annotate_layer(keras.layers.Dense(2))(hidden)
        >>> kinds = [type(layer).__name__ for layer in quantize_apply(keras.Model(inputs, outputs)).layers]
        >>> "Dense" in kinds, kinds[-2]
        (True, 'QuantizeWrapper')
    """
    if isinstance(scheme, bool):
        raise TypeError(
            "quantize_apply: `strict` is keyword-only (quantize_apply(model, strict=True)); the "
            "second positional argument is the quantization scheme, as in tfmot."
        )
    if compat.is_tf_keras(annotated_model):
        raise TypeError(
            f"quantize_apply: '{annotated_model.name}' is a legacy tf_keras model; annotate and "
            "apply it with tfmot.quantization.keras (TF_USE_LEGACY_KERAS=1), or rebuild it in "
            "Keras 3."
        )
    annotated_model = _traced(annotated_model, "quantize_apply")
    _check_model(annotated_model)
    if not any(
        getattr(layer, _ANNOTATION, None) is not None for layer in walk_layers(annotated_model)
    ):
        raise ValueError(
            f"quantize_apply: no layer of model '{annotated_model.name}' is annotated, so there is "
            "nothing to quantize (quantize_apply quantizes only annotated layers, as in tfmot). "
            "Annotate layers with quantize_annotate_layer, the whole model with "
            "quantize_annotate_model, or call quantize_model(model)."
        )
    preserve_sparsity = bool(getattr(scheme, "preserve_sparsity", False)) or None
    freeze_kernels = bool(getattr(scheme, "preserve_clusters", False))
    if scheme is not None and not hasattr(scheme, "preserve_clusters"):
        raise TypeError(
            f"quantize_apply: unknown scheme {scheme!r}; pass "
            "tfcompress.experimental.combine.Default8BitPrunePreserveQuantizeScheme(), "
            "Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=...) or "
            "tfcompress.quantization.default_8bit.Default8BitQuantizeScheme()."
        )
    return _quantize(
        annotated_model,
        strict=strict,
        default=QuantizeConfig(per_channel=not freeze_kernels),
        only_annotated=True,
        preserve_sparsity=preserve_sparsity,
        freeze_kernels=freeze_kernels,
    )


def quantize_model(
    model: keras.Model,
    *,
    strict: bool = False,
    weight_bits: int = 8,
    activation_bits: int = 8,
    learned_step: bool = False,
) -> keras.Model:
    """A copy of `model` for quantization-aware training with the TFLite int8 scheme.

    Weights are fake-quantized symmetric, narrow range (per channel for convolutions, per tensor
    for Dense), BatchNormalization is folded into the preceding kernel, and activations get
    asymmetric ranges tracked by moving averages, placed where the TFLite converter fuses ops.
    The original model is not modified. Convert the trained copy with
    `tfcompress.convert(qat, mode="int8")`.

    Args:
        model: a built Keras 3 functional, Sequential or subclassed model (nested models are
            inlined; a subclassed model's `call` is traced into the graph of its layers by
            `tfcompress.core.graph.traced_model`, docs/dev/decisions/2026-12-06-subclassed-models.md).
        strict: raise on a layer the registry does not know, instead of keeping it in float.
        weight_bits: default bits per weight (1-8; 1 is binary, 2 ternary) for layers without an
            annotated config. Every choice is stored as int8 in the file.
        activation_bits: 8, or 16 for `convert(mode="int16x8")` (symmetric 16-bit activations).
            TF 2.21's converter cannot export 16-bit fake quant, so that export bakes the trained
            weights in and calibrates the 16-bit ranges on `representative_data`.
        learned_step: learn the weight and activation step sizes by gradient descent (LSQ,
            Esser et al. 2020, with a learned activation offset) instead of min/max ranges.

    Returns:
        A new functional model, trainable with `fit`. A legacy `tf_keras` model is quantized by
        tfmot instead (in a process started with TF_USE_LEGACY_KERAS=1).

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> qat = quantize_model(build_digits_cnn(width=4))
        >>> any(isinstance(layer, QuantizeWrapper) for layer in qat.layers)
        True
    """
    model = model_from(model, "quantize_model")
    if compat.is_tf_keras(model):
        return _quantize_with_tfmot(model)
    model = _traced(model, "quantize_model")
    _check_model(model)
    default = QuantizeConfig(
        weight_bits=weight_bits, learned_step=learned_step, activation_bits=activation_bits
    )
    return _quantize(model, strict=strict, default=default)


def _quantize(
    model: keras.Model,
    *,
    strict: bool,
    default: QuantizeConfig,
    only_annotated: bool = False,
    preserve_sparsity: bool | None = None,
    freeze_kernels: bool = False,
) -> keras.Model:
    """The rewrite behind quantize_model (every layer) and quantize_apply (annotated ones)."""
    if masks_steps(model) and not only_annotated:
        # the graph records each mask as Keras ops (NOT_EQUAL, ANY) outside the layers; the
        # whole-model rewrite computes it in int8 ops and hands it on (integer_friendly)
        model = integer_friendly(model)
    rewriter = _Rewriter(
        strict=strict,
        default=default,
        only_annotated=only_annotated,
        preserve_sparsity=preserve_sparsity,
    )
    graph = functional_graph(model)
    inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_tensor_name(t)) for t in graph.inputs
    ]
    outputs = rewriter.run(graph, [_Value(t, name=t.name) for t in inputs])
    outputs = [rewriter.output(v) for v in outputs]
    # the model's own output structure: a dict of outputs keeps its keys
    structure = keras.tree.pack_sequence_as(graph.output, outputs)
    entry = inputs[0] if len(inputs) == 1 else inputs
    quantized = keras.Model(entry, structure, name=f"{model.name}_qat")
    if freeze_kernels:  # cluster-preserving QAT: the shared values must stay shared
        for layer in quantized.layers:
            if isinstance(layer, QuantizeWrapper):
                for name in ("kernel", "depthwise_kernel", "embeddings"):
                    variable = getattr(layer.layer, name, None)
                    if isinstance(variable, keras.Variable):
                        variable.trainable = False
    return quantized


def _tensor_name(tensor: Any) -> str | None:
    name = getattr(tensor, "name", None)
    return name.split(":")[0] if isinstance(name, str) else None


def _quantize_with_tfmot(model: Any) -> Any:
    """tfmot quantizes legacy tf_keras models; it needs tf.keras to be tf_keras."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise TypeError(
            f"quantize_model: '{model.name}' is a legacy tf_keras model. Run with the environment "
            "variable TF_USE_LEGACY_KERAS=1 (so tfmot can quantize it), or rebuild it in Keras 3."
        )
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError(
            "quantize_model: tf_keras models are quantized with tfmot; install it with "
            "pip install 'tfcompress[legacy]' (tensorflow-model-optimization)."
        ) from error
    return tfmot.quantization.keras.quantize_model(model)


def _kept_whole(layer: Any) -> bool:
    """A composite layer with a quantization config of its own is quantized as one layer."""
    annotated = getattr(layer, _ANNOTATION, None)
    if annotated is not None and annotated is not _REGISTRY_DEFAULT:
        return True
    return get_quantize_config(layer) is not None


def _traced(model: Any, what: str) -> Any:
    """A subclassed model (or a graph holding one) as the functional graph of its layers."""
    if isinstance(model, keras.Model) and needs_tracing(model, _kept_whole):
        return traced_model(model, what, _kept_whole)
    return model


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize_model expects a keras.Model; got {type(model).__name__}.")
    if not is_graph_model(model):
        raise ValueError(
            f"quantize_model: model '{model.name}' ({type(model).__name__}) is a subclassed model, "
            "whose graph cannot be rewritten. Build it as a functional or Sequential model, or "
            "quantize its layers yourself with tfcompress.quantization.QuantizeWrapper."
        )
    if not model.built or functional_graph(model) is None:
        raise ValueError(
            f"quantize_model: model '{model.name}' is not built. Give it an input shape first "
            "(keras.Input(...) as its first layer, or model.build(input_shape))."
        )
    for layer in walk_layers(model):
        if isinstance(layer, QuantizeWrapper | ActivationQuantizer):
            raise ValueError(
                f"quantize_model: model '{model.name}' is already quantized (it contains "
                f"'{layer.name}'). Quantize the float model instead."
            )


@dataclass
class _Value:
    """A rewritten tensor: its float value, its quantized twin once made, and how it was made."""

    tensor: Any
    quantized: bool = False
    fusable: bool = False  # made by an op TFLite fuses a following ReLU into
    name: str = "tensor"
    fixed_range: tuple[float, float] | None = None
    twin: Any = field(default=None, repr=False)
    annotated: bool = True  # made by a quantized layer (False: by a layer quantize_apply left)


class _Rewriter:
    def __init__(
        self,
        strict: bool,
        default: QuantizeConfig,
        only_annotated: bool = False,
        preserve_sparsity: bool | None = None,
    ) -> None:
        self.strict = strict
        self.default = default
        self.only_annotated = only_annotated
        self.preserve_sparsity = preserve_sparsity
        self.copies: dict[int, Any] = {}
        self.names: set[str] = set()

    # -- tensors ----------------------------------------------------------------------------
    def output(self, value: _Value) -> Any:
        """A model output: quantized unless a layer quantize_apply left in float made it."""
        return self.quantized(value) if value.annotated else value.tensor

    def quantized(self, value: _Value) -> Any:
        if value.quantized or not _is_float(value.tensor):
            return value.tensor  # already on a grid, or integer (token ids, indices)
        if value.twin is None:
            name = self._unique(f"{value.name}_quant")
            quantizer = ActivationQuantizer(
                num_bits=self.default.activation_bits,
                fixed_range=value.fixed_range,
                learned_step=self.default.learned_step,
                name=name,
            )
            quantizer.supports_masking = True  # elementwise: the mask (Masking...) passes on
            value.twin = quantizer(value.tensor)
        return value.twin

    def _unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self.names:
            candidate, index = f"{name}_{index}", index + 1
        self.names.add(candidate)
        return candidate

    # -- graph ------------------------------------------------------------------------------
    def run(self, graph: Any, inputs: list[_Value]) -> list[_Value]:
        values: dict[int, _Value] = {id(t): v for t, v in zip(graph.inputs, inputs, strict=True)}
        consumers = tensor_readers(graph)
        absorbed: set[int] = set()
        for node in nodes_inputs_first(graph):
            if node.operation is None or node.is_input:
                continue
            if id(node) in absorbed:
                values[id(node.outputs[0])] = values[id(node.input_tensors[0])]
                continue
            self._rewrite_node(node, values, consumers, absorbed)
        return [values[id(t)] for t in graph.outputs]

    def _rewrite_node(self, node: Any, values: dict, consumers: dict, absorbed: set) -> None:
        op = node.operation
        if isinstance(op, keras.Model) and functional_graph(op) is not None:
            outputs = self.run(functional_graph(op), [values[id(t)] for t in node.input_tensors])
            for tensor, value in zip(node.outputs, outputs, strict=True):
                values[id(tensor)] = value
            return
        role = self._role(op)
        if role == _UNTOUCHED:
            self._leave_node(op, node, values)
            return
        if role == _CUSTOM:
            self._custom_node(op, node, values, consumers)
            return
        chosen = {
            id(t): self._input_for(op, values[id(t)], consumers[id(t)]) for t in node.input_tensors
        }
        args, kwargs = node.arguments.fill_in(chosen)
        if role == KERNEL:
            callee, fusable = self._kernel_callee(op, node, consumers, absorbed)
        else:
            callee, fusable = self._copy(op, node), isinstance(op, L.Add)
        outputs = keras.tree.flatten(callee(*args, **kwargs))
        if role != KERNEL:
            self._restore_weights(op, callee)
        for tensor, new in zip(node.outputs, outputs, strict=True):
            values[id(tensor)] = _Value(
                new,
                quantized=role == PASSTHROUGH or _gathers(callee),
                fusable=fusable,
                name=op.name,
                fixed_range=_fixed_output_range(op),
            )

    def _custom_node(self, op: Any, node: Any, values: dict, consumers: dict) -> None:
        """A layer with a tfmot-style config: quantized inputs, then the config's quantizers."""
        config = getattr(op, _ANNOTATION)
        chosen = {id(t): self.quantized(values[id(t)]) for t in node.input_tensors}
        args, kwargs = node.arguments.fill_in(chosen)
        if id(op) not in self.copies:
            layer = _fresh_copy(op, node.input_tensors[0].shape)
            self.copies[id(op)] = CustomQuantizeWrapper(layer, config)
        wrapper = self.copies[id(op)]
        outputs = keras.tree.flatten(wrapper(*args, **kwargs))
        # an output on a grid already (activation or output quantizers) is not quantized again
        on_grid = bool(wrapper._activations or wrapper._output_quantizers)
        for tensor, new in zip(node.outputs, outputs, strict=True):
            values[id(tensor)] = _Value(new, quantized=on_grid, name=op.name)

    def _leave_node(self, op: Any, node: Any, values: dict) -> None:
        """A node quantize_apply does not quantize: it reads float tensors, except those an
        annotated layer made (their range is the annotated layer's output quantization)."""
        chosen = {}
        for tensor in node.input_tensors:
            value = values[id(tensor)]
            chosen[id(tensor)] = self.quantized(value) if value.annotated else value.tensor
        args, kwargs = node.arguments.fill_in(chosen)
        callee = op
        if isinstance(op, keras.layers.Layer):
            if id(op) not in self.copies:
                try:
                    self.copies[id(op)] = type(op).from_config(op.get_config())
                except Exception:  # noqa: BLE001 - custom layers without a working get_config
                    self.copies[id(op)] = op
            callee = self.copies[id(op)]
        outputs = keras.tree.flatten(callee(*args, **kwargs))
        self._restore_weights(op, callee)
        for tensor, new in zip(node.outputs, outputs, strict=True):
            values[id(tensor)] = _Value(new, name=op.name, annotated=False)

    def _is_annotated(self, op: Any) -> bool:
        return getattr(op, _ANNOTATION, None) is not None

    def _role(self, op: Any) -> str:
        if self.only_annotated and not self._is_annotated(op):
            return _UNTOUCHED
        if not isinstance(op, keras.layers.Layer):
            return PASSTHROUGH if type(op).__name__ in _PASSTHROUGH_OPS else OUTPUT
        if is_tfmot_style(getattr(op, _ANNOTATION, None)):
            return _CUSTOM
        config = self._config(op)
        if config is None:
            if self.strict:
                raise ValueError(
                    f"quantize_model(strict=True): layer '{op.name}' ({type(op).__name__}) has no "
                    "quantization config. Annotate it with tfcompress.quantization."
                    "quantize_annotate_layer(layer, QuantizeConfig(role='output')) (or role='float' "
                    "to keep it in float), or register its class with register_quantize_config."
                )
            warnings.warn(
                f"quantize_model: layer '{op.name}' ({type(op).__name__}) is not known to the "
                "quantization registry; it stays in float with quantization at its boundaries. "
                "Annotate it with quantize_annotate_layer to silence this.",
                stacklevel=4,
            )
            return FLOAT
        gap = catalog.tflite_gap(op)
        if gap is not None:
            message = (
                f"quantize_model: layer '{op.name}' ({type(op).__name__}) will not convert to "
                f"TFLite: {gap}."
            )
            if self.strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=4)
        reason = float_only_reason(op)
        explicit = isinstance(getattr(op, _ANNOTATION, None), QuantizeConfig)
        if config.role == FLOAT and reason is not None and not explicit:
            message = (
                f"quantize_model: layer '{op.name}' ({type(op).__name__}) cannot run in int8: "
                f"{reason}. It stays float in training and in the int8 file (QUANTIZE/DEQUANTIZE "
                "around it). Convert with mode='float16' or 'dynamic' for an all-float file, or "
                "annotate it with QuantizeConfig(role='float') to accept this."
            )
            if self.strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=4)
        if config.role == KERNEL and not (supports_kernel_wrapping(op) or _is_separable(op)):
            return OUTPUT
        return config.role

    def _config(self, layer: Any) -> QuantizeConfig | None:
        annotated = getattr(layer, _ANNOTATION, None)
        if self.only_annotated and annotated is None:
            return None
        if annotated is not None and annotated is not _REGISTRY_DEFAULT:
            return annotated
        registered = get_quantize_config(as_recurrent_layer(layer))
        if registered is not None and registered.role == KERNEL:
            # the scheme's default can turn per-channel off (CQAT: one scale keeps clusters)
            return self._kernel_config(layer, registered.per_channel and self.default.per_channel)
        return registered

    def _kernel_config(self, layer: Any, per_channel: bool = True) -> QuantizeConfig:
        """The model-wide options (bits, learned steps) for a layer's weights."""
        annotated = getattr(layer, _ANNOTATION, None)
        if isinstance(annotated, QuantizeConfig) and annotated.role == KERNEL:
            return annotated
        return QuantizeConfig(
            KERNEL,
            self.default.weight_bits,
            per_channel,
            learned_step=self.default.learned_step,
            activation_bits=self.default.activation_bits,
        )

    def _input_for(self, op: Any, value: _Value, consumers: list) -> Any:
        fuses = value.fusable and len(consumers) == 1 and _is_fusable_relu(op)
        return value.tensor if fuses else self.quantized(value)

    def _kernel_callee(
        self, op: Any, node: Any, consumers: dict, absorbed: set
    ) -> tuple[Any, bool]:
        if id(op) in self.copies:
            wrapper = self.copies[id(op)]
            return wrapper, wrapper.fuses_activation and is_linear(op)
        bn_node = _foldable_batchnorm(op, node, consumers)
        batchnorm = None
        if bn_node is not None and self._config(bn_node.operation) is not None:
            absorbed.add(id(bn_node))
            batchnorm = _fresh_copy(bn_node.operation, node.outputs[0].shape)
        input_shape = node.input_tensors[0].shape
        if _is_separable(op):
            callee = self._separable(op, input_shape, batchnorm)
        else:
            # integer_friendly_layer: `activation="elu"` computed in int8-friendly ops
            layer = integer_friendly_layer(op) or _fresh_copy(op, input_shape)
            callee = QuantizeWrapper(
                layer,
                config=self._config(op),
                batchnorm=batchnorm,
                preserve_sparsity=self.preserve_sparsity,
            )
        self.copies[id(op)] = callee
        return callee, callee.fuses_activation and is_linear(op)

    def _separable(self, op: Any, input_shape: Any, batchnorm: Any) -> _SeparableQAT:
        """A separable convolution runs in TFLite as DEPTHWISE_CONV_2D then CONV_2D with an int8
        tensor between them: train it as those two quantized convolutions."""
        one_d = isinstance(op, L.SeparableConv1D)
        depthwise = (L.DepthwiseConv1D if one_d else L.DepthwiseConv2D)(
            op.kernel_size,
            strides=op.strides,
            padding=op.padding,
            depth_multiplier=op.depth_multiplier,
            dilation_rate=op.dilation_rate,
            use_bias=False,
            name=f"{op.name}_depthwise",
        )
        depthwise.build(input_shape)
        depthwise.set_weights([op.depthwise_kernel.numpy()])
        pointwise = (L.Conv1D if one_d else L.Conv2D)(
            op.filters,
            1,
            activation=op.activation,
            use_bias=op.use_bias,
            name=f"{op.name}_pointwise",
        )
        pointwise.build(depthwise.compute_output_shape(input_shape))
        pointwise.set_weights([w.numpy() for w in (op.pointwise_kernel, op.bias) if w is not None])
        config = self._config(op)
        return _SeparableQAT(
            QuantizeWrapper(depthwise, config=config),
            QuantizeWrapper(pointwise, config=config, batchnorm=batchnorm),
            self,
        )

    def _copy(self, op: Any, node: Any) -> Any:
        if not isinstance(op, keras.layers.Layer):
            return op  # keras.ops operations are stateless: call the same one on new tensors
        source = as_recurrent_layer(op)  # keras.layers.RNN(LSTMCell()) trains as an LSTM
        if id(op) not in self.copies and type(source) not in _INTEGER_FRIENDLY:
            # the float layers integer_friendly swaps for int8-friendly ones (same weights)
            replacement = integer_friendly_layer(op)
            if replacement is not None:
                self.copies[id(op)] = replacement
                replacement._tfcompress_restored = True
        if id(op) not in self.copies:
            klass = _INTEGER_FRIENDLY.get(type(source), type(source))
            config = source.get_config()
            if _accepts_quantize_config(klass):
                config["quantize_config"] = self._kernel_config(op)
            try:
                self.copies[id(op)] = klass.from_config(config)
            except Exception:  # noqa: BLE001 - custom layers without a working get_config
                self.copies[id(op)] = op
        return self.copies[id(op)]

    def _restore_weights(self, op: Any, copy: Any) -> None:
        if copy is op or not isinstance(op, keras.layers.Layer) or not op.weights:
            return
        if getattr(copy, "_tfcompress_restored", False):
            return
        if hasattr(copy, "copy_weights_from"):  # replacements whose weights differ in layout
            copy.copy_weights_from(op)
        else:
            copy.set_weights(op.get_weights())
        copy._tfcompress_restored = True


def _accepts_quantize_config(klass: type) -> bool:
    """Replacement layers that train their own int8 tensors take the layer's `quantize_config`."""
    return any(
        "quantize_config" in inspect.signature(base.__init__).parameters
        for base in klass.__mro__
        if "__init__" in vars(base)  # a subclass may take it through **kwargs
    )


class _SeparableQAT:
    """Calls a separable convolution's two quantized halves with a range between them."""

    def __init__(self, depthwise: QuantizeWrapper, pointwise: QuantizeWrapper, rewriter: Any):
        self.depthwise, self.pointwise, self.rewriter = depthwise, pointwise, rewriter
        self.fuses_activation = pointwise.fuses_activation

    def __call__(self, inputs: Any) -> Any:
        middle = _Value(self.depthwise(inputs), name=self.depthwise.layer.name)
        return self.pointwise(self.rewriter.quantized(middle))


def _is_float(tensor: Any) -> bool:
    return "float" in str(getattr(tensor, "dtype", "float32"))


def _gathers(callee: Any) -> bool:
    """A quantized Embedding's output is rows of its quantized table: already on its grid."""
    return isinstance(callee, QuantizeWrapper) and isinstance(callee.layer, L.Embedding)


def _is_separable(layer: Any) -> bool:
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    return isinstance(layer, L.SeparableConv1D | L.SeparableConv2D) and channels_last


def _foldable_batchnorm(op: Any, node: Any, consumers: dict) -> Any:
    if len(node.outputs) != 1:
        return None
    users = consumers[id(node.outputs[0])]
    if len(users) != 1 or not folds_into(op, users[0][0], len(node.outputs[0].shape)):
        return None
    return users[0][1]


# TFLite's int8 kernels fix these outputs' scale and zero point; matching them avoids a requantize.
_FIXED_RANGES = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}


def _fixed_output_range(op: Any) -> tuple[float, float] | None:
    if isinstance(op, L.Softmax):
        return _FIXED_RANGES["softmax"]
    if getattr(op, "activation", None) is not None:  # Activation layers and kernel layers
        return _FIXED_RANGES.get(getattr(op.activation, "__name__", ""))
    if not isinstance(op, keras.layers.Layer):
        return _FIXED_RANGES.get(type(op).__name__.lower())
    return None


def _is_fusable_relu(op: Any) -> bool:
    if isinstance(op, L.ReLU):
        plain = not op.negative_slope and not op.threshold
        return plain and op.max_value in (None, 6.0)
    if isinstance(op, L.Activation):
        return getattr(op.activation, "__name__", "") in ("relu", "relu6")
    return False


def _fresh_copy(layer: Any, input_shape: Any) -> Any:
    copy = layer.__class__.from_config(layer.get_config())
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy
