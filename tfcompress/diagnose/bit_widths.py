"""Per-layer 4 vs 8-bit weights: how much each layer's output suffers at 4 bits, and a greedy choice.

`four_bit_sensitivity` emulates TFLite's weight grid in Keras (`quantize_kernel`): every kernel
layer at 8 bits, then one layer at a time at 4 bits (round to nearest), and measures the model
output against the float model: SQNR in dB and, with labels, top-1 accuracy. `choose_int4_layers`
walks the layers from the least to the most sensitive and keeps each one at 4 bits while the
emulated accuracy stays within a budget of the all-8-bit emulation. Round to nearest is the
pessimistic grid: the file, rounded by AdaRound, usually does better than the emulation says.
The chosen names go to `convert(..., optimize=[..., ("adaround", {"int4_layers": names})],
int4_weights=True)`; `auto_quantize` checks the file on LiteRT.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tfcompress.recovery.steps import optimize_model
from tfcompress.recovery.weights import as_batches, kernel_layers, predict, quantize_kernel


@dataclass
class LayerSensitivity:
    """The model output with one layer's weights at 4 bits (the others at 8), emulated in Keras.

    Attributes:
        layer: the kernel layer's name.
        params: number of weights in its kernel (what INT4 halves).
        output_sqnr_db: SQNR of the model output against the float model, in dB.
        accuracy: top-1 accuracy with this layer at 4 bits (None without labels).

    Example:
        >>> LayerSensitivity("fc", 128, 31.5, 0.97).to_dict()["layer"]
        'fc'
    """

    layer: str
    params: int
    output_sqnr_db: float
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain figures, for JSON."""
        return asdict(self)


class _GridEmulator:
    """A BatchNorm-folded, equalized copy of a model whose kernels can be put on any grid."""

    def __init__(self, model: Any, x: np.ndarray, per_channel: bool) -> None:

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "nothing to equalize" is fine here
            self.model = optimize_model(model, ["fold_bn", "equalize"])
        self.layers, _ = kernel_layers(self.model)
        self.kernels = {layer.name: layer.get_weights()[0] for layer in self.layers}
        self.x = x
        self.per_channel = per_channel
        self.reference = predict(self.model, x)
        self._predict = predict

    def outputs(self, widths: dict[str, int]) -> np.ndarray:

        for layer in self.layers:
            kernel = quantize_kernel(
                layer, self.kernels[layer.name], widths[layer.name], self.per_channel
            )
            layer.set_weights([kernel, *layer.get_weights()[1:]])
        return self._predict(self.model, self.x)


def _sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    noise = float(np.sum((reference - output) ** 2))
    power = float(np.sum(reference**2))
    if noise == 0.0:
        return 100.0
    return 10.0 * math.log10(power / noise) if power > 0 else -100.0


def _accuracy(output: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(output, axis=-1) == labels.reshape(-1)))


def _inputs(model: Any, data: Any) -> np.ndarray:

    return as_batches(data, "four_bit_sensitivity", model)


def four_bit_sensitivity(
    model: Any, data: Any, labels: Any = None, *, per_channel: bool = True
) -> list[LayerSensitivity]:
    """Each kernel layer's cost at 4-bit weights, the others at 8, least sensitive first.

    Args:
        model: a Keras 3 functional or Sequential model (single input).
        data: evaluation inputs (numpy array, batch first).
        labels: integer class labels of `data`, to report accuracy (optional).
        per_channel: the weight grid of the file (one scale per output channel, or per tensor).

    Returns:
        One `LayerSensitivity` per Dense/Conv/DepthwiseConv layer, highest output SQNR first.

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> rows = four_bit_sensitivity(build_digits_cnn(width=4), load_digits().x_test[:16])
        >>> sorted(row.layer for row in rows)
        ['conv1', 'conv2', 'conv3', 'fc1', 'logits']
    """
    x = _inputs(model, data)
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    return _sensitivity(_GridEmulator(model, x, per_channel), labels)


def _sensitivity(emulator: _GridEmulator, labels: np.ndarray | None) -> list[LayerSensitivity]:
    eight = {layer.name: 8 for layer in emulator.layers}
    rows = []
    for layer in emulator.layers:
        output = emulator.outputs({**eight, layer.name: 4})
        rows.append(
            LayerSensitivity(
                layer.name,
                int(np.prod(emulator.kernels[layer.name].shape)),
                _sqnr_db(emulator.reference, output),
                _accuracy(output, labels),
            )
        )
    return sorted(rows, key=lambda row: (-row.output_sqnr_db, -row.params))


def choose_int4_layers(
    model: Any,
    data: Any,
    labels: Any,
    max_accuracy_drop: float,
    *,
    per_channel: bool = True,
    sensitivity: list[LayerSensitivity] | None = None,
) -> list[str]:
    """The layers to give 4-bit weights: greedy, least sensitive first, while the accuracy holds.

    A layer is kept at 4 bits when the emulated accuracy with it (and the layers kept before it)
    at 4 bits is at most `max_accuracy_drop` below the emulated all-8-bit accuracy; otherwise it
    stays at 8 bits and the walk goes on.

    Args:
        model: a Keras 3 functional or Sequential model (single input).
        data: evaluation inputs (numpy array, batch first).
        labels: integer class labels of `data` (None: agreement with the float model's top-1).
        max_accuracy_drop: what the 4-bit layers may cost against 8-bit weights (0.01 = 1 pp).
        per_channel: the weight grid of the file.
        sensitivity: the result of `four_bit_sensitivity`, if already computed (its order is
            the walk's order).

    Returns:
        The chosen layer names, in the order they were accepted (may be empty).

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_test[:16]
        >>> len(choose_int4_layers(build_digits_cnn(width=4), x, None, 1.0))
        5
    """
    if isinstance(max_accuracy_drop, bool) or not 0 <= float(max_accuracy_drop) <= 1:
        raise ValueError(
            f"choose_int4_layers: max_accuracy_drop is a fraction in [0, 1]; got "
            f"{max_accuracy_drop!r}."
        )
    x = _inputs(model, data)
    emulator = _GridEmulator(model, x, per_channel)
    if labels is None:
        labels = np.argmax(emulator.reference, axis=-1)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"choose_int4_layers: {len(labels)} labels for {len(x)} samples.")
    if sensitivity is None:
        sensitivity = _sensitivity(emulator, labels)
    widths = {layer.name: 8 for layer in emulator.layers}
    floor = _accuracy(emulator.outputs(widths), labels) - float(max_accuracy_drop)
    chosen: list[str] = []
    for row in sensitivity:
        if row.layer not in widths:
            continue
        trial = {**widths, row.layer: 4}
        if _accuracy(emulator.outputs(trial), labels) >= floor - 1e-12:
            widths = trial
            chosen.append(row.layer)
    return chosen
