"""tfmot's scheme and scope names: `QuantizeScheme`, `Default8BitQuantizeScheme`, `quantize_scope`."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeScheme:
    """What `quantize_apply(model, scheme)` keeps through QAT; the base is plain int8 QAT.

    Args:
        preserve_sparsity: keep every pruned (zero) weight at zero through QAT.
        preserve_clusters: keep each kernel's shared values shared (per-tensor scale, frozen
            kernel) so the int8 file has at most as many values per kernel as clusters.

    Example:
        >>> QuantizeScheme().get_config()
        {'preserve_sparsity': False, 'preserve_clusters': False}
    """

    def __init__(self, preserve_sparsity: bool = False, preserve_clusters: bool = False) -> None:
        self.preserve_sparsity = bool(preserve_sparsity)
        self.preserve_clusters = bool(preserve_clusters)

    def get_config(self) -> dict[str, Any]:
        return {
            "preserve_sparsity": self.preserve_sparsity,
            "preserve_clusters": self.preserve_clusters,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuantizeScheme:
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


@keras.saving.register_keras_serializable(package="tfcompress")
class Default8BitQuantizeScheme(QuantizeScheme):
    """tfmot's default scheme: int8 QAT, what `quantize_apply(model)` does without a scheme.

    Example:
        >>> Default8BitQuantizeScheme().preserve_sparsity
        False
    """

    def __init__(self) -> None:
        super().__init__()

    def get_config(self) -> dict[str, Any]:
        return {}


def quantize_scope(*custom_objects: dict[str, Any]) -> keras.saving.CustomObjectScope:
    """A scope in which `keras.models.load_model` knows tfcompress's quantization objects and
    the custom ones given (tfmot's `quantize_scope`). tfcompress's own objects are registered
    at import, so the scope is only needed for the user's classes; it is harmless otherwise.

    Args:
        *custom_objects: dicts mapping names to the user's classes (QuantizeConfigs, layers,
            quantizers).

    Example:
        >>> with quantize_scope({"Double": float}) as scope:
        ...     type(scope).__name__
        'CustomObjectScope'
    """
    merged: dict[str, Any] = {}
    for index, objects in enumerate(custom_objects):
        if not isinstance(objects, dict):
            raise TypeError(
                f"quantize_scope: argument {index} must be a dict of name -> class; "
                f"got {type(objects).__name__}."
            )
        merged.update(objects)
    return keras.saving.CustomObjectScope(merged)
