"""`suggest_keep_float`: the fewest layers to keep float for an accuracy target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress.diagnose.debug import debug_quantization, input_arrays, keras_model_of
from tfcompress.export import calibrate
from tfcompress.tflite.runtime import run_tflite

_ALL_SAMPLES = 10**9


@dataclass
class KeepFloatSuggestion:
    """What `suggest_keep_float` found: the layers to keep float and the accuracies it measured.

    Attributes:
        keep_float: the fewest layers found whose float keeps the accuracy drop within target.
        float_accuracy: the Keras model's accuracy on the data.
        int8_accuracy: the fully integer file's accuracy.
        accuracy: the accuracy of the file with `keep_float`.
        target_met: whether `float_accuracy - accuracy <= max_accuracy_drop`.
        trials: each evaluated set of float layers and its accuracy, in the order tried.
        flatbuffer: the file with `keep_float` (save it with `tfcompress.save_tflite`).
        max_accuracy_drop: the target it was asked for.

    Example:
        >>> from tfcompress.diagnose.keep_float import KeepFloatSuggestion
        >>> s = KeepFloatSuggestion(["fc1"], 0.95, 0.80, 0.94, True, [], b"")
        >>> round(s.gap_recovered, 3)
        0.933
    """

    keep_float: list[str]
    float_accuracy: float
    int8_accuracy: float
    accuracy: float
    target_met: bool
    trials: list[dict[str, Any]]
    flatbuffer: bytes = field(repr=False, default=b"")
    max_accuracy_drop: float = 0.01

    @property
    def shortfall(self) -> float:
        """How much accuracy the best file still lacks to meet the target (0.0 when met)."""
        return max(0.0, self.float_accuracy - self.accuracy - self.max_accuracy_drop)

    @property
    def gap_recovered(self) -> float:
        """Share of the float-to-int8 accuracy gap that keeping the layers float recovers."""
        gap = self.float_accuracy - self.int8_accuracy
        return 1.0 if gap <= 0 else (self.accuracy - self.int8_accuracy) / gap

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes), for JSON."""
        return {
            "keep_float": self.keep_float,
            "float_accuracy": self.float_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "accuracy": self.accuracy,
            "target_met": self.target_met,
            "max_accuracy_drop": self.max_accuracy_drop,
            "shortfall": self.shortfall,
            "gap_recovered": self.gap_recovered,
            "trials": self.trials,
        }


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(predictions, axis=-1) == labels.reshape(-1)))


def suggest_keep_float(
    model: Any,
    data: Any,
    labels: np.ndarray | None = None,
    *,
    max_accuracy_drop: float = 0.01,
    mode: str = "int8",
    representative_data: Any = None,
    max_layers: int | None = None,
    report: Any = None,
    **convert_options: Any,
) -> KeepFloatSuggestion:
    """Pick the fewest layers to keep float so that the file's accuracy meets a target.

    The layers are tried greedily in the debugger's order (worst isolated impact on the model
    output first): each candidate set is quantized from one calibration and evaluated on
    LiteRT; once the target is met, layers that turn out unnecessary are dropped again.

    Args:
        model: a Keras 3 classifier (functional or Sequential) or a `.keras` path.
        data: evaluation inputs (an array, or a list of arrays for several inputs).
        labels: integer class labels of `data`. Without them the target is agreement with the
            Keras model's top-1 class (its own accuracy is then 1.0).
        max_accuracy_drop: the accuracy the file may lose against the Keras model (0.01 = 1 pp).
        mode: `"int8"` or `"edgetpu"`.
        representative_data: calibration inputs; `data` when not given.
        max_layers: try at most this many layers (default: all of them; 0: none).
        report: a `QuantizationDebugReport` of the same model and mode, to reuse its ranking.
        **convert_options: other `convert` keywords (`num_samples`, `per_channel`, ...).

    Returns:
        A `KeepFloatSuggestion`; when the target cannot be met, the best set found, with
        `target_met=False` (its `accuracy` says by how much it misses).

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.diagnose.keep_float import suggest_keep_float
        >>> x = load_digits().x_test[:40]
        >>> s = suggest_keep_float(build_digits_cnn(), x, max_accuracy_drop=1.0)
        >>> s.keep_float, s.target_met
        ([], True)
    """

    model = keras_model_of(model, convert_options.get("custom_objects"))
    if not 0 <= max_accuracy_drop <= 1:
        raise ValueError(f"max_accuracy_drop is a fraction in [0, 1], got {max_accuracy_drop!r}.")
    x = input_arrays(model, data, _ALL_SAMPLES)
    reference = model.predict(x if len(x) > 1 else x[0], verbose=0, batch_size=256)
    if labels is None:
        labels = np.argmax(reference, axis=-1)
    labels = np.asarray(labels)
    if len(labels) != len(x[0]):
        raise ValueError(f"labels has {len(labels)} entries for {len(x[0])} samples of data.")
    float_accuracy = _accuracy(reference, labels)
    calibrated = calibrate(
        model, mode, data if representative_data is None else representative_data, **convert_options
    )
    feed = x if len(x) > 1 else x[0]

    def evaluate(keep: list[str]) -> tuple[float, bytes]:
        flatbuffer = calibrated.quantize(keep)
        return _accuracy(run_tflite(flatbuffer, feed), labels), flatbuffer

    int8_accuracy, flatbuffer = evaluate([])
    trials = [{"keep_float": [], "accuracy": int8_accuracy}]
    best = ([], int8_accuracy, flatbuffer)
    if max_layers is not None and max_layers < 0:
        raise ValueError(f"max_layers must be >= 0 or None, got {max_layers!r}.")
    if float_accuracy - int8_accuracy > max_accuracy_drop and max_layers != 0:
        if report is None:
            report = debug_quantization(
                model, data, mode, calibrated=calibrated, num_samples=len(x[0])
            )
        chosen: list[str] = []
        for row in report.layers[:max_layers]:
            chosen.append(row.layer)
            accuracy, flatbuffer = evaluate(chosen)
            trials.append({"keep_float": list(chosen), "accuracy": accuracy})
            if accuracy > best[1]:
                best = (list(chosen), accuracy, flatbuffer)
            if float_accuracy - accuracy <= max_accuracy_drop:
                best = (list(chosen), accuracy, flatbuffer)
                break
        if float_accuracy - best[1] <= max_accuracy_drop:
            best = _drop_unneeded(best, float_accuracy, max_accuracy_drop, evaluate, trials)
    keep, accuracy, flatbuffer = best
    return KeepFloatSuggestion(
        keep,
        float_accuracy,
        int8_accuracy,
        accuracy,
        float_accuracy - accuracy <= max_accuracy_drop,
        trials,
        flatbuffer,
        max_accuracy_drop,
    )


def _drop_unneeded(
    best: tuple[list[str], float, bytes],
    float_accuracy: float,
    max_drop: float,
    evaluate: Any,
    trials: list[dict[str, Any]],
) -> tuple[list[str], float, bytes]:
    """Greedy picks can overshoot: drop each layer (earliest pick first) the target can spare."""
    keep, accuracy, flatbuffer = best
    for name in list(keep[:-1]):
        fewer = [n for n in keep if n != name]
        fewer_accuracy, fewer_file = evaluate(fewer)
        trials.append({"keep_float": list(fewer), "accuracy": fewer_accuracy})
        if float_accuracy - fewer_accuracy <= max_drop:
            keep, accuracy, flatbuffer = fewer, fewer_accuracy, fewer_file
    return keep, accuracy, flatbuffer
