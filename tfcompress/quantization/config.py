"""What to quantize in each layer: `QuantizeConfig` and the registry keyed on layer class."""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.core import catalog, compat

#: Roles a layer can play in the rewritten graph.
# the roles: weights fake-quantized and output quantized (Conv, Dense...); computes in float in
# training with its output quantized (Add, activations...); keeps its input's scale (MaxPool,
# Reshape, Dropout...); left in float with its inputs and output quantized at its boundaries
KERNEL, OUTPUT, PASSTHROUGH, FLOAT = (
    catalog.KERNEL,
    catalog.OUTPUT,
    catalog.PASSTHROUGH,
    catalog.FLOAT,
)
_ROLES = (KERNEL, OUTPUT, PASSTHROUGH, FLOAT)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeConfig:
    """How one layer is quantized.

    Args:
        role: "kernel" (fake-quantize weights and output), "output" (quantize the output only),
            "passthrough" (output keeps the input's scale) or "float" (keep the layer in float,
            quantize only at its boundaries).
        weight_bits: bits per weight for "kernel" layers, 1 to 8, stored as int8 (1 is binary,
            2 ternary).
        per_channel: per output channel weight scales (convolutions); Dense is always per tensor.
        learned_step: learn the weight and activation step sizes (LSQ) instead of taking them
            from min/max.
        activation_bits: 8 (the int8 scheme) or 16 (for `convert(mode="int16x8")`).

    tfmot-style subclasses: a subclass that defines tfmot's methods (`get_weights_and_quantizers`,
    `get_activations_and_quantizers`, `set_quantize_activations`, `get_output_quantizers`, ...)
    names its own quantizers instead of options; it need not call `__init__`, and the layer it
    annotates runs exactly those quantizers (`tfcompress.quantization.custom`).

    Example:
        >>> config = QuantizeConfig(role="kernel", weight_bits=4)
        >>> QuantizeConfig.from_config(config.get_config()).weight_bits
        4
    """

    def __init__(
        self,
        role: str = KERNEL,
        weight_bits: int = 8,
        per_channel: bool = True,
        learned_step: bool = False,
        activation_bits: int = 8,
    ) -> None:
        if role not in _ROLES:
            raise ValueError(f"QuantizeConfig: role must be one of {_ROLES}; got {role!r}.")
        if not isinstance(weight_bits, int) or not 1 <= weight_bits <= 8:
            raise ValueError(
                f"QuantizeConfig: weight_bits must be an int in [1, 8] (1 is binary, 2 ternary); "
                f"got {weight_bits!r}."
            )
        self.role = role
        self.weight_bits = weight_bits
        self.per_channel = bool(per_channel)
        if activation_bits not in (8, 16):
            raise ValueError(
                f"QuantizeConfig: activation_bits must be 8 or 16; got {activation_bits!r}."
            )
        self.learned_step = bool(learned_step)
        self.activation_bits = activation_bits

    def get_config(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "weight_bits": self.weight_bits,
            "per_channel": self.per_channel,
            "learned_step": self.learned_step,
            "activation_bits": self.activation_bits,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizeConfig:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"QuantizeConfig({args})"


_REGISTRY: dict[type, QuantizeConfig] = {}


def register_quantize_config(layer_class: type, config: QuantizeConfig) -> None:
    """Tell `quantize_model` how to quantize every layer of `layer_class` (and its subclasses).

    Example:
        >>> class Scale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> register_quantize_config(Scale, QuantizeConfig(role="output"))
        >>> get_quantize_config(Scale()).role
        'output'
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_quantize_config: expected a Layer class; got {layer_class!r}.")
    if not isinstance(config, QuantizeConfig):
        raise TypeError(f"register_quantize_config: expected a QuantizeConfig; got {config!r}.")
    _REGISTRY[layer_class] = config


def get_quantize_config(layer: Any) -> QuantizeConfig | None:
    """The registered config for `layer` (most specific class first), or None if unknown.

    Example:
        >>> get_quantize_config(keras.layers.Dense(2)).role
        'kernel'
    """
    for klass in type(layer).__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None


for _cls, _row in catalog.CATALOG.items():  # every layer class the catalog knows a role of
    if _row.quantize is not None:
        register_quantize_config(_cls, QuantizeConfig(role=_row.quantize))


def float_only_reason(layer: Any) -> str | None:
    """Why `layer` cannot run in int8 in TFLite (it stays float in an int8 file), or None.

    Example:
        >>> float_only_reason(keras.layers.Conv3D(2, 3))
        "TFLite's CONV_3D kernel runs in float only"
    """
    row = catalog.info(layer)
    return row.float_reason or None if row is not None else None


def _register_application_layers() -> None:
    """Custom layers inside `keras.applications` models (not exported by Keras, hence the guard)."""
    LayerScale = compat.convnext_layer_scale_class()
    if LayerScale is None:  # pragma: no cover - moved in another Keras version
        return
    register_quantize_config(LayerScale, QuantizeConfig(role=OUTPUT))  # x * gamma: an int8 MUL


_register_application_layers()
