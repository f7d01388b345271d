"""Sparsity-preserving quantization-aware training: keep a pruned model's zeros through QAT."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def _kernel_variables(model: keras.Model) -> list[keras.Variable]:
    return [
        variable
        for variable in model.trainable_weights
        if variable.path.rsplit("/", 1)[-1] in _KERNEL_NAMES
    ]


@keras.saving.register_keras_serializable(package="tfcompress")
class PreserveSparsity(keras.callbacks.Callback):
    """Keeps every kernel's zeros at zero during fine-tuning (for example QAT of a pruned model).

    At the start of training it records which weights of each kernel are exactly zero (a dense
    kernel has none, so it is left alone); after every batch it puts those zeros back, so the
    optimizer cannot revive pruned weights. Plain QAT loses about half of a pruned model's zeros;
    with this callback the int8 file keeps all of them.

    Example:
        >>> import keras, numpy as np, tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> kernel = model.layers[0].kernel
        >>> _ = kernel.assign(np.array([[0.0, 1.0]] * 4, "float32"))
        >>> model.compile(keras.optimizers.SGD(0.1), "mse")
        >>> _ = model.fit(np.ones((4, 4)), np.ones((4, 2)) * 5, verbose=0,
        ...               callbacks=[tfc.pruning.PreserveSparsity()])
        >>> bool(np.all(kernel.numpy()[:, 0] == 0))
        True
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._masks = []
        for variable in _kernel_variables(self.model):
            values = keras.ops.convert_to_numpy(variable)
            if np.any(values == 0):
                self._masks.append((variable, (values != 0).astype(values.dtype)))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for variable, mask in self._masks:
            variable.assign(variable * mask)

    def get_config(self) -> dict[str, Any]:
        return {}


def kernel_sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of exact zeros of every kernel of `model`, by variable path.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> max(kernel_sparsity(build_digits_cnn(width=4)).values())
        0.0
    """
    return {
        variable.path: float(np.mean(keras.ops.convert_to_numpy(variable) == 0))
        for variable in _kernel_variables(model)
    }
