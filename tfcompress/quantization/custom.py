"""tfmot-style `QuantizeConfig` subclasses: the user's own quantizers on a layer's weights,
activations and outputs (`CustomQuantizeWrapper`).

tfcompress's `QuantizeConfig(role=..., weight_bits=...)` describes a layer with options. A
subclass that overrides tfmot's methods (`get_weights_and_quantizers`,
`get_activations_and_quantizers`, `set_quantize_activations`, `get_output_quantizers`, ...)
instead says which quantizer runs on which tensor; `quantize_apply` then wraps that layer in a
`CustomQuantizeWrapper`, which runs exactly those quantizers:

* weights: each `(variable, quantizer)` of `get_weights_and_quantizers(layer)` is built once
  (`quantizer.build(shape, name, wrapper)`) and, at every call, the layer computes with
  `quantizer(variable)` in place of the variable. Keras 3 kernels cannot be reassigned, so
  `set_quantize_weights` is not called: the substitution is what it was for.
* activations: each callable of `get_activations_and_quantizers(layer)` is replaced, through
  the config's `set_quantize_activations`, by one that applies the quantizer to its result.
* outputs: `get_output_quantizers(layer)` run on the layer's output.

Nothing else is added around the layer; its input is quantized by the model's rewrite, as
for any annotated layer.
"""

from __future__ import annotations

from typing import Any

import keras

#: The tfmot methods whose presence on a config class makes it a tfmot-style config.
TFMOT_CONFIG_METHODS = (
    "get_weights_and_quantizers",
    "get_activations_and_quantizers",
    "set_quantize_weights",
    "set_quantize_activations",
    "get_output_quantizers",
)


def is_tfmot_style(config: Any) -> bool:
    """Whether `config` defines tfmot's QuantizeConfig methods (and so names its quantizers).

    Example:
        >>> from tfcompress.quantization import QuantizeConfig
        >>> is_tfmot_style(QuantizeConfig())
        False
        >>> class WeightsOnly(QuantizeConfig):
        ...     def get_weights_and_quantizers(self, layer):
        ...         return []
        >>> is_tfmot_style(WeightsOnly())
        True
    """
    return any(callable(getattr(type(config), name, None)) for name in TFMOT_CONFIG_METHODS)


def _call_config(config: Any, method: str, layer: Any) -> list:
    function = getattr(config, method, None)
    return list(function(layer)) if callable(function) else []


class _QuantizeAwareActivation:
    """`activation(x)` followed by the config's quantizer (what `set_quantize_activations` gets)."""

    def __init__(self, activation: Any, quantizer: Any, weights: dict) -> None:
        self.activation = activation
        self.quantizer = quantizer
        self._weights = weights  # a plain attribute: the layer must not track these variables
        self.training = False
        self.__name__ = getattr(activation, "__name__", type(activation).__name__)

    @property
    def variables(self) -> list[Any]:
        return [v for v in self._weights.values() if isinstance(v, keras.Variable)]

    def __call__(self, x: Any) -> Any:
        return self.quantizer(self.activation(x), self.training, self._weights)


@keras.saving.register_keras_serializable(package="tfcompress")
class CustomQuantizeWrapper(keras.layers.Wrapper):
    """A layer quantized by a tfmot-style `QuantizeConfig` (what `quantize_apply` makes of it).

    Args:
        layer: the layer to quantize (Dense, Conv2D, a custom layer...).
        quantize_config: a `QuantizeConfig` subclass overriding tfmot's methods.

    Example:
        >>> import keras, numpy as np
        >>> from tfcompress.quantization import QuantizeConfig
        >>> from tfcompress.quantization.quantizers import LastValueQuantizer
        >>> class FourBitKernel(QuantizeConfig):
        ...     def get_weights_and_quantizers(self, layer):
        ...         return [(layer.kernel, LastValueQuantizer(4, False, True, False))]
        ...     def get_config(self):
        ...         return {}
        >>> wrapper = CustomQuantizeWrapper(keras.layers.Dense(3), FourBitKernel())
        >>> y = wrapper(np.eye(4, dtype="float32"), training=True)
        >>> len(np.unique(keras.ops.convert_to_numpy(y))) <= 16
        True
    """

    def __init__(self, layer: keras.layers.Layer, quantize_config: Any, **kwargs: Any) -> None:
        if not is_tfmot_style(quantize_config):
            raise TypeError(
                f"CustomQuantizeWrapper: layer '{layer.name}' needs a QuantizeConfig that overrides "
                f"tfmot's methods ({', '.join(TFMOT_CONFIG_METHODS)}); got {quantize_config!r}. "
                "Options-only configs go through quantize_apply / QuantizeWrapper."
            )
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        self._weight_quantizers: list[tuple[Any, Any, dict]] = []
        self._activations: list[_QuantizeAwareActivation] = []
        self._output_quantizers: list[tuple[Any, dict]] = []

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        config, layer = self.quantize_config, self.layer
        for index, (variable, quantizer) in enumerate(
            _call_config(config, "get_weights_and_quantizers", layer)
        ):
            if not isinstance(variable, keras.Variable):
                raise TypeError(
                    f"{type(config).__name__}.get_weights_and_quantizers: item {index} for layer "
                    f"'{layer.name}' must pair a weight of the layer (e.g. layer.kernel) with a "
                    f"quantizer; got {type(variable).__name__}."
                )
            name = variable.path.rsplit("/", 1)[-1]
            weights = quantizer.build(variable.shape, name, self)
            self._weight_quantizers.append((variable, quantizer, weights))
        output_shape = layer.compute_output_shape(input_shape)
        pairs = _call_config(config, "get_activations_and_quantizers", layer)
        for index, (activation, quantizer) in enumerate(pairs):
            weights = quantizer.build(output_shape, f"activation_{index}", self)
            self._activations.append(_QuantizeAwareActivation(activation, quantizer, weights))
        if self._activations:
            config.set_quantize_activations(layer, list(self._activations))
        for index, quantizer in enumerate(_call_config(config, "get_output_quantizers", layer)):
            weights = quantizer.build(output_shape, f"output_{index}", self)
            self._output_quantizers.append((quantizer, weights))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        training = bool(training)
        mapping = [
            (variable, quantizer(keras.ops.convert_to_tensor(variable), training, weights))
            for variable, quantizer, weights in self._weight_quantizers
        ]
        for activation in self._activations:
            activation.training = training
        # the layer computes with the quantized weights in place of its variables; the
        # activation quantizers' range updates made inside are applied afterwards
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = self.layer(inputs)
        for variable in (v for a in self._activations for v in a.variables):
            updated = scope.get_current_value(variable)
            if updated is not None:
                variable.assign(updated)
        for quantizer, weights in self._output_quantizers:
            outputs = quantizer(outputs, training, weights)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self._activations:  # the layer's own activations, not the quantized wrappers
            self.quantize_config.set_quantize_activations(
                self.layer, [activation.activation for activation in self._activations]
            )
        try:
            config["layer"] = keras.saving.serialize_keras_object(self.layer)
        finally:
            if self._activations:
                self.quantize_config.set_quantize_activations(self.layer, list(self._activations))
        config["quantize_config"] = keras.saving.serialize_keras_object(self.quantize_config)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CustomQuantizeWrapper:
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        quantize_config = keras.saving.deserialize_keras_object(config.pop("quantize_config"))
        return cls(layer, quantize_config, **config)
