"""`auto_quantize`: the smallest integer file that meets an accuracy target, and the trade-off.

The search tries whole-model choices first, cheapest to build first: plain int8, int8 after the
data-free and data-driven recovery steps (BatchNorm folding, cross-layer equalization, bias
correction), the same with AdaRound, and 4-bit (INT4) weights with AdaRound. When every layer
at 4 bits misses the target but 8 bits meets it, the per-layer choice of 4 vs 8-bit weights
(`tfcompress.diagnose.bit_widths`: each layer's sensitivity at 4 bits, then a greedy set of 4-bit
layers within the accuracy left) gives a mixed file whose chosen filters are packed as INT4.
When no 8-bit choice meets the target, the per-layer sensitivity analysis of `debug_quantization` picks the
fewest layers to keep float on top of the most accurate recovery (`suggest_keep_float`). Every
candidate is a real file measured on the LiteRT interpreter: accuracy, size and latency.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.diagnose.bit_widths import choose_int4_layers
from tfcompress.diagnose.debug import input_arrays, keras_model_of
from tfcompress.diagnose.keep_float import suggest_keep_float
from tfcompress.export import convert
from tfcompress.recovery.weights import kernel_layers
from tfcompress.tflite.runtime import benchmark_tflite, run_tflite

#: recovery steps of the 8-bit candidates (the 4-bit one adds AdaRound at 4 bits)
RECOVERY = ("fold_bn", "equalize", "bias_correction")
ADAROUND = (*RECOVERY, "adaround")


@dataclass
class Candidate:
    """One file `auto_quantize` built and measured.

    Attributes:
        name: a short label ("int8", "int8+recovery", "int8+adaround", "int4+adaround",
            "int4[2/5]+adaround" (2 of 5 kernel layers at 4 bits), "int8+recovery+keep_float").
        settings: the `tfcompress.convert` keywords that rebuild the file.
        accuracy: top-1 accuracy of the file on the evaluation data (LiteRT).
        size_bytes: the file's size.
        latency_ms: median LiteRT latency of one inference (None when not measured).
        meets_target: whether `float_accuracy - accuracy <= max_accuracy_drop`.
        error: why the candidate could not be built (then it has no figures).
    """

    name: str
    settings: dict[str, Any]
    accuracy: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    meets_target: bool = False
    error: str | None = None
    flatbuffer: bytes = field(default=b"", repr=False)


@dataclass
class AutoQuantizeResult:
    """What `auto_quantize` found: the chosen file and every candidate it measured.

    Attributes:
        flatbuffer: the chosen file (save it with `tfcompress.save_tflite`).
        choice: the chosen candidate's name.
        settings: the `convert` keywords that rebuild the chosen file.
        float_accuracy: the Keras model's accuracy on the evaluation data.
        max_accuracy_drop: the target the search was given.
        target_met: whether the chosen file meets it (when no candidate does, the most accurate
            one is chosen and this is False).
        candidates: every candidate, in the order built.

    Example:
        >>> result = AutoQuantizeResult(b"", "int8", {}, 0.9, 0.01, True, [])
        >>> result.to_dict()["choice"]
        'int8'
    """

    flatbuffer: bytes = field(repr=False)
    choice: str
    settings: dict[str, Any]
    float_accuracy: float
    max_accuracy_drop: float
    target_met: bool
    candidates: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes), for JSON."""
        rows = []
        for candidate in self.candidates:
            row = asdict(candidate)
            row.pop("flatbuffer")
            rows.append(row)
        return {
            "choice": self.choice,
            "settings": self.settings,
            "float_accuracy": self.float_accuracy,
            "max_accuracy_drop": self.max_accuracy_drop,
            "target_met": self.target_met,
            "size_bytes": len(self.flatbuffer),
            "candidates": rows,
        }

    def summary(self) -> str:
        """The trade-off as a text table, the chosen file marked with `*`."""
        lines = [
            f"float accuracy {self.float_accuracy:.4f}, target: drop <= "
            f"{self.max_accuracy_drop:.4f}; chosen: {self.choice}"
            + ("" if self.target_met else " (target NOT met: the most accurate file)"),
            f"  {'candidate':<28} {'accuracy':>9} {'size KB':>9} {'latency ms':>11}  target",
        ]
        for c in self.candidates:
            mark = "*" if c.name == self.choice else " "
            if c.error is not None:
                lines.append(f"{mark} {c.name:<28} failed: {c.error[:60]}")
                continue
            latency = "-" if c.latency_ms is None else f"{c.latency_ms:.3f}"
            lines.append(
                f"{mark} {c.name:<28} {c.accuracy:>9.4f} {c.size_bytes / 1024:>9.1f} "
                f"{latency:>11}  {'met' if c.meets_target else 'missed'}"
            )
        return "\n".join(lines)

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict()` to `path`."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def plot(self, path: str | Path) -> Path:
        """A PNG of accuracy against file size (the Pareto front joined), target drawn."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        built = [c for c in self.candidates if c.error is None]
        figure, axes = plt.subplots(figsize=(6, 4))
        for c in built:
            axes.scatter(c.size_bytes / 1024, c.accuracy, color="C1" if c.meets_target else "C0")
            axes.annotate(c.name, (c.size_bytes / 1024, c.accuracy), fontsize=7)
        front = pareto_front(built)
        axes.plot([c.size_bytes / 1024 for c in front], [c.accuracy for c in front], "k--", lw=0.8)
        axes.axhline(self.float_accuracy - self.max_accuracy_drop, color="C3", lw=0.8)
        axes.set_xlabel("file size (KB)")
        axes.set_ylabel("accuracy on LiteRT")
        axes.set_title("auto_quantize: accuracy against size (target in red)")
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no other one beats in both size and accuracy, smallest first.

    Example:
        >>> a, b = Candidate("a", {}, 0.9, 100), Candidate("b", {}, 0.8, 200)
        >>> [c.name for c in pareto_front([a, b])]
        ['a']
    """
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.size_bytes, -(c.accuracy or 0.0))):
        if not front or (c.accuracy or 0.0) > (front[-1].accuracy or 0.0):
            front.append(c)
    return front


def auto_quantize(
    model: Any,
    data: Any,
    labels: Any = None,
    *,
    max_accuracy_drop: float = 0.01,
    mode: str = "int8",
    representative_data: Any = None,
    recovery: bool = True,
    try_int4: bool = True,
    measure_latency: bool = True,
    **convert_options: Any,
) -> AutoQuantizeResult:
    """The smallest integer file whose accuracy is within `max_accuracy_drop` of the Keras model.

    Args:
        model: a Keras 3 classifier (functional or Sequential) or a `.keras` path.
        data: evaluation inputs, or an `(inputs, labels)` pair.
        labels: integer class labels of `data`. Without them the accuracy is agreement with the
            Keras model's top-1 class (the Keras model's own is then 1.0).
        max_accuracy_drop: what the file may lose against the Keras model (0.01 = 1 pp).
        mode: `"int8"` or `"edgetpu"` (no INT4 candidate: the Edge TPU runs int8 only).
        representative_data: calibration inputs; `data` when not given.
        recovery: try the PTQ recovery steps (`tfcompress.recovery`); False searches plain
            int8 and the float fallback only (faster; for models the steps refuse).
        try_int4: also try 4-bit (INT4) weights with AdaRound (`mode="int8"` and `recovery`):
            every layer at 4 bits, and, when that misses the target, the layers chosen one by
            one from their sensitivity at 4 bits (`choose_int4_layers`). INT4 files are the smallest but run on LiteRT's builtin kernels, not XNNPACK: about
            3-4x slower on CPU here (see each candidate's `latency_ms`); pass False to prefer
            speed over size.
        measure_latency: time each file on LiteRT (`tfcompress.benchmark_tflite`, 1 thread).
        **convert_options: other `tfcompress.convert` keywords (`num_samples`, `per_channel`).

    Returns:
        An `AutoQuantizeResult`: `.flatbuffer`, `.summary()`, `.to_dict()`, `.plot(path)`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_test[:40]
        >>> result = tfc.auto_quantize(build_digits_cnn(), x, max_accuracy_drop=1.0,
        ...                            recovery=False, measure_latency=False)
        >>> result.choice, result.target_met
        ('int8', True)
    """

    if isinstance(max_accuracy_drop, bool) or not 0 <= float(max_accuracy_drop) <= 1:
        raise ValueError(
            f"max_accuracy_drop is a fraction in [0, 1] (0.01 = 1 pp); got {max_accuracy_drop!r}."
        )
    if mode not in ("int8", "edgetpu"):
        raise ValueError(
            f"auto_quantize searches integer files: mode must be 'int8' or 'edgetpu', got "
            f"{mode!r}. For a float file use tfcompress.convert(model, mode='float16')."
        )
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    model = keras_model_of(model, convert_options.get("custom_objects"))
    count = len(data[0]) if isinstance(data, list) else len(data)
    x = input_arrays(model, data, count)
    feed = x if len(x) > 1 else x[0]
    reference = model.predict(feed, verbose=0, batch_size=256)
    labels = np.argmax(reference, axis=-1) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != count:
        raise ValueError(f"labels has {len(labels)} entries for {count} samples of data.")
    float_accuracy = _accuracy(reference, labels)
    calibration = data if representative_data is None else representative_data
    target = float_accuracy - float(max_accuracy_drop)

    def measure(name: str, settings: dict[str, Any], flatbuffer: bytes) -> Candidate:
        accuracy = _accuracy(run_tflite(flatbuffer, feed), labels)
        latency = None
        if measure_latency:
            latency = benchmark_tflite(flatbuffer, threads=1, runs=50).median_ms
        return Candidate(
            name, settings, accuracy, len(flatbuffer), latency, accuracy >= target, None, flatbuffer
        )

    def build(name: str, settings: dict[str, Any]) -> Candidate:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # float-op warnings: the figures say it all
                flatbuffer = convert(model, mode, calibration, **settings, **convert_options)
        except Exception as error:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            return Candidate(name, settings, error=f"{type(error).__name__}: {error}")
        return measure(name, settings, flatbuffer)

    plans: list[tuple[str, dict[str, Any]]] = [("int8", {})]
    if recovery:
        plans.append(("int8+recovery", {"optimize": list(RECOVERY)}))
        plans.append(("int8+adaround", {"optimize": list(ADAROUND)}))
    if recovery and try_int4 and mode == "int8":
        plans.append(("int4+adaround", {"optimize": list(ADAROUND), "int4_weights": True}))
    candidates = [build(name, settings) for name, settings in plans]
    mixed_base = next((c for c in candidates if c.name == "int8+adaround"), None)
    all_int4 = next((c for c in candidates if c.name == "int4+adaround"), None)
    if (
        all_int4 is not None
        and not all_int4.meets_target
        and mixed_base
        and mixed_base.meets_target
    ):
        candidates.extend(
            _mixed_int4_candidates(
                model,
                x,
                labels,
                mixed_base.accuracy - target,
                convert_options.get("per_channel", True),
                build,
            )
        )
    eight_bit = [c for c in candidates if c.error is None and "int4" not in c.name]
    if eight_bit and not any(c.meets_target for c in eight_bit):
        best = max(eight_bit, key=lambda c: c.accuracy or 0.0)
        candidates.append(
            _keep_float_candidate(
                best,
                model,
                data,
                labels,
                mode,
                calibration,
                suggest_keep_float,
                measure,
                float(max_accuracy_drop),
                convert_options,
            )
        )
    chosen = _choose(candidates)
    if chosen is None:
        errors = "; ".join(f"{c.name}: {c.error}" for c in candidates)
        raise RuntimeError(f"auto_quantize could not build any integer file: {errors}")
    return AutoQuantizeResult(
        chosen.flatbuffer,
        chosen.name,
        chosen.settings,
        float_accuracy,
        float(max_accuracy_drop),
        chosen.meets_target,
        candidates,
    )


def _keep_float_candidate(
    best: Candidate,
    model: Any,
    data: Any,
    labels: np.ndarray,
    mode: str,
    calibration: Any,
    suggest: Any,
    measure: Any,
    max_accuracy_drop: float,
    convert_options: dict[str, Any],
) -> Candidate:
    """Float fallback for the fewest layers, on top of the most accurate 8-bit recovery."""
    name = f"{best.name}+keep_float"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suggestion = suggest(
                model,
                data,
                labels,
                max_accuracy_drop=max_accuracy_drop,
                mode=mode,
                representative_data=calibration,
                **best.settings,
                **convert_options,
            )
    except Exception as error:  # noqa: BLE001
        return Candidate(name, best.settings, error=f"{type(error).__name__}: {error}")
    settings = {**best.settings, "keep_float": suggestion.keep_float}
    return measure(name, settings, suggestion.flatbuffer)


def _mixed_int4_candidates(
    model: Any,
    x: list[np.ndarray],
    labels: np.ndarray,
    budget: float,
    per_channel: bool,
    build: Any,
    retries: int = 2,
) -> list[Candidate]:
    """4-bit weights on the layers the sensitivity analysis allows; fewer when the file misses.

    `budget` is the accuracy the 8-bit AdaRound file has above the target: what the 4-bit layers
    may cost. The greedy set comes from a Keras emulation; the file is then measured on LiteRT,
    and while it misses the target the last layer taken (the most sensitive) goes back to 8 bits.
    """

    if len(x) != 1:
        return []  # the emulation feeds one input; multi-input models keep the whole-model choice
    try:
        chosen = choose_int4_layers(model, x[0], labels, budget, per_channel=per_channel)
    except Exception as error:  # noqa: BLE001 - reported as a failed candidate
        return [Candidate("int4[mixed]+adaround", {}, error=f"{type(error).__name__}: {error}")]
    total = len(kernel_layers(model)[0])
    built: list[Candidate] = []
    for _ in range(retries + 1):
        if not chosen:
            break
        adaround = ("adaround", {"int4_layers": list(chosen)})
        settings = {"optimize": [*RECOVERY[:2], adaround, RECOVERY[2]], "int4_weights": True}
        candidate = build(f"int4[{len(chosen)}/{total}]+adaround", settings)
        built.append(candidate)
        if candidate.error is not None or candidate.meets_target:
            break
        chosen = chosen[:-1]
    return built


def _choose(candidates: list[Candidate]) -> Candidate | None:
    built = [c for c in candidates if c.error is None]
    if not built:
        return None
    meeting = [c for c in built if c.meets_target]
    if meeting:  # the smallest file; among equal sizes the more accurate
        return min(meeting, key=lambda c: (c.size_bytes, -(c.accuracy or 0.0)))
    return max(built, key=lambda c: (c.accuracy or 0.0, -(c.size_bytes or 0)))


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(predictions, axis=-1) == labels.reshape(-1)))
