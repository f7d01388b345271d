"""`suggest_keep_float`: the fewest layers to keep float for an accuracy target.

The search compares candidates on the search rows of the data and reports the chosen set on
rows it never saw (`tfcompress.diagnose.scoring`: every third row is held out, or
`validation_data=`). Every output of the model is scored; the worst one decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfcompress.diagnose.debug import debug_quantization, input_arrays, keras_model_of
from tfcompress.diagnose.scoring import (
    MIN_SQNR_DB,
    Rows,
    Score,
    Scorer,
    check_runtime,
    labels_per_output,
    output_names,
    split_data,
)
from tfcompress.export import calibrate
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.layer_map import map_layers

_ALL_SAMPLES = 10**9
_QDQ_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class KeepFloatSuggestion:
    """What `suggest_keep_float` found: the layers to keep float and the figures it measured.

    Attributes:
        keep_float: the fewest layers found whose float meets the target on the search rows.
        target_met: whether the file meets the target on the held-out rows (never judged on
            the rows it searched).
        held_out: the chosen file's `Score` on the held-out rows (every output, the runtime).
        search: its `Score` on the search rows.
        int8_held_out: the all-integer file's `Score` on the held-out rows.
        trials: each set of float layers tried, in order, with its search figures.
        flatbuffer: the file with `keep_float` (save it with `tfcompress.save_tflite`).
        max_accuracy_drop: the target of classes outputs.
        min_sqnr_db: the target of values outputs.
        rows: the rule that split the data into search and held-out rows.
        dropped: layers asked for that TF's quantizer keeps integer whatever the denylist says;
            they are left out of `keep_float` (it lists only layers that really are float).
        notes: anything else worth knowing.

    Example:
        >>> from tfcompress.diagnose.scoring import OutputScore, Score
        >>> row = OutputScore("probs", "classes", "agreement", 1.0, 1.0, 0.99, 20, "rows", 0)
        >>> score = Score([row], 20, "LiteRT (XNNPACK)", True)
        >>> KeepFloatSuggestion(["fc1"], True, score, score, score, []).to_dict()["keep_float"]
        ['fc1']
    """

    keep_float: list[str]
    target_met: bool
    held_out: Score
    search: Score
    int8_held_out: Score
    trials: list[dict[str, Any]]
    flatbuffer: bytes = field(repr=False, default=b"")
    max_accuracy_drop: float = 0.01
    min_sqnr_db: float = MIN_SQNR_DB
    rows: str = ""
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        """The runtime every figure was measured on."""
        return self.held_out.runtime

    def summary(self) -> str:
        """The layers, the held-out figures of the chosen and the all-integer file, the notes."""
        verdict = "met" if self.target_met else "NOT met"
        lines = [
            f"keep_float={self.keep_float}: target {verdict} on held-out rows ({self.rows})",
            "chosen file, " + self.held_out.describe(),
            "all-integer file, " + self.int8_held_out.describe(),
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes), for JSON."""
        return {
            "keep_float": self.keep_float,
            "target_met": self.target_met,
            "runtime": self.runtime,
            "rows": self.rows,
            "max_accuracy_drop": self.max_accuracy_drop,
            "min_sqnr_db": self.min_sqnr_db,
            "held_out": self.held_out.to_dict(),
            "search": self.search.to_dict(),
            "int8_held_out": self.int8_held_out.to_dict(),
            "dropped": self.dropped,
            "notes": self.notes,
            "trials": self.trials,
        }


def prepare_rows(
    model: Any, data: Any, labels: Any, validation_data: Any, calibrate_from_data: bool
) -> Rows:
    """The calibration, search and held-out rows of `data` (`scoring.split_data`'s rule).

    `data` and `validation_data` may be `(inputs, labels)` pairs.
    """
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    x = input_arrays(model, data, _ALL_SAMPLES)
    names = output_names(model)
    validation = None
    if validation_data is not None:
        held_labels = None
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            validation_data, held_labels = validation_data
        held_x = input_arrays(model, validation_data, _ALL_SAMPLES)
        validation = (held_x, labels_per_output(held_labels, names))
        if (held_labels is None) != (labels is None):
            raise ValueError(
                "Give labels for both data and validation_data, or for neither: the target is "
                "the same figure on both."
            )
    return split_data(x, labels_per_output(labels, names), validation, calibrate_from_data)


def _feed(x: list[np.ndarray]) -> Any:
    return x if len(x) > 1 else x[0]


def quantize_keeping(calibrated: Any, keep: list[str]) -> tuple[bytes, list[str], list[str]]:
    """The file with `keep` float; layers TF's quantizer keeps integer are left out, not fatal.

    Returns:
        (file, the layers that are float, the layers dropped because they stayed integer).
    """
    keep = list(keep)
    dropped: list[str] = []
    for _ in range(len(keep) + 1):
        try:
            return calibrated.quantize(keep), keep, dropped
        except ConversionError as error:
            if "still integer" not in str(error):
                raise
            still = _still_integer(calibrated, keep)
            if not still:
                raise
            dropped += still
            keep = [name for name in keep if name not in still]
    raise ConversionError(f"keep_float={keep}: TF's quantizer did not leave them float.")


def _still_integer(calibrated: Any, keep: list[str]) -> list[str]:
    """The layers of `keep` whose ops the quantizer leaves integer with that denylist."""
    chosen = {id(row) for row in calibrated.rows_of(keep)}
    others = [row.layer for row in calibrated.rows if id(row) not in chosen]
    flatbuffer = calibrated.quantize(only=others) if others else calibrated.quantize(only=[])
    graph = inspect(flatbuffer).subgraphs[0]
    rows = map_layers(flatbuffer, calibrated.model)
    still = []
    for name in keep:
        ops = [
            graph.ops[int(op.split(":")[0])]
            for row in rows
            if name in row.layers or name in row.named
            for op in row.ops
        ]
        computing = [op for op in ops if op.name not in _QDQ_OPS]
        if computing and not any(op.computes_in_float for op in computing):
            still.append(name)
    return still


def search_keep_float(
    calibrated: Any,
    ranking: list[str],
    score: Callable[[bytes], Score],
    max_layers: int | None,
) -> tuple[list[str], bytes, Score, list[str], list[dict[str, Any]]]:
    """Greedy search on the search rows: add layers in `ranking` order until the target is met,
    then drop the ones it can spare.

    Returns:
        (float layers, file, its search score, layers dropped as still integer, trials).
    """
    trials: list[dict[str, Any]] = []
    dropped: list[str] = []

    def evaluate(keep: list[str]) -> tuple[list[str], bytes, Score]:
        flatbuffer, kept, gone = quantize_keeping(calibrated, keep)
        dropped.extend(name for name in gone if name not in dropped)
        found = score(flatbuffer)
        trials.append({"keep_float": list(kept), "met": found.met, "slack": found.slack})
        return kept, flatbuffer, found

    best = evaluate([])
    if best[2].met or max_layers == 0:
        return best[0], best[1], best[2], dropped, trials
    chosen: list[str] = []
    for name in ranking[:max_layers]:
        if name in dropped:
            continue
        chosen.append(name)
        kept, flatbuffer, found = evaluate(chosen)
        chosen = kept
        if found.met or found.slack > best[2].slack:
            best = (kept, flatbuffer, found)
        if found.met:
            break
    if best[2].met:  # greedy picks can overshoot: drop each layer (earliest first) it can spare
        for name in list(best[0][:-1]):
            fewer = [n for n in best[0] if n != name]
            candidate = evaluate(fewer)
            if candidate[2].met:
                best = candidate
    return best[0], best[1], best[2], dropped, trials


def suggest_keep_float(
    model: Any,
    data: Any,
    labels: Any = None,
    *,
    max_accuracy_drop: float = 0.01,
    min_sqnr_db: float = MIN_SQNR_DB,
    mode: str = "int8",
    representative_data: Any = None,
    validation_data: Any = None,
    runtime: str = "xnnpack",
    kinds: dict[str, str] | None = None,
    max_layers: int | None = None,
    report: Any = None,
    **convert_options: Any,
) -> KeepFloatSuggestion:
    """Pick the fewest layers to keep float so that the file meets a target on every output.

    The data is split: candidates are compared on the *search rows* and the chosen set is
    reported on the *held-out rows* (each third row, or `validation_data`), which neither the
    search nor the calibration saw; without `representative_data`, calibration rows are taken
    from `data` too, apart from the search rows (`tfcompress.diagnose.scoring`). The layers are
    tried greedily in the debugger's order (worst isolated impact on the model's outputs
    first); once the target is met on the search rows, layers that turn out unnecessary are
    dropped again. A layer TF's quantizer keeps integer whatever the denylist says (a max
    pooling between integer ops) is left out of the set, with a note: never an error.

    Args:
        model: a Keras 3 functional or Sequential model (any number of outputs) or a `.keras`
            path.
        data: inputs (an array, or a list of arrays for several inputs), or an
            `(inputs, labels)` pair.
        labels: labels of `data`: an array for a one-output model, a dict by output name or a
            list by position (None entries allowed). A classes output with labels is scored
            by accuracy, without by top-1 agreement with the Keras model; a values output by
            its SQNR against the Keras model.
        max_accuracy_drop: what a classes output may lose against the Keras model (0.01 = 1 pp
            of accuracy or agreement).
        min_sqnr_db: the least SQNR (dB) of a values output against the Keras model.
        mode: `"int8"` or `"edgetpu"`.
        representative_data: calibration inputs. Without them, rows 0, 3, 6, ... of `data`
            calibrate and only rows 1, 4, 7, ... are searched (never the same rows).
        validation_data: held-out inputs (or an `(inputs, labels)` pair); then all of `data`
            is searched.
        kinds: `{output name: "classes" or "values"}` where the guess is wrong (a lone
            linear output of coordinates with no compiled loss is taken for logits); without
            it, an output whose labels hold real values is "values", else
            `tfcompress.tflite.fidelity.output_kinds` decides (a linear output beside a
            softmax or sigmoid output is "values").
        runtime: what runs the files: `"xnnpack"` (LiteRT with XNNPACK, the default: what
            phones run), `"reference"` (LiteRT's reference kernels) or `"micro"` (TensorFlow
            Lite Micro).
        max_layers: try at most this many layers (default: all of them; 0: none).
        report: a `QuantizationDebugReport` of the same model and mode, to reuse its ranking.
        **convert_options: other `convert` keywords (`num_samples`, `per_channel`, ...).

    Returns:
        A `KeepFloatSuggestion`; when the target cannot be met, the best set found, with
        `target_met=False` (its `held_out` figures say by how many rows it misses).

    Example:
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.diagnose.keep_float import suggest_keep_float
        >>> x = load_digits().x_test[:60]
        >>> s = suggest_keep_float(build_digits_cnn(), x, max_accuracy_drop=1.0)
        >>> s.keep_float, s.target_met, s.held_out.rows
        ([], True, 20)
    """

    model = keras_model_of(model, convert_options.get("custom_objects"))
    if isinstance(max_accuracy_drop, bool) or not 0 <= max_accuracy_drop <= 1:
        raise ValueError(f"max_accuracy_drop is a fraction in [0, 1], got {max_accuracy_drop!r}.")
    if max_layers is not None and max_layers < 0:
        raise ValueError(f"max_layers must be >= 0 or None, got {max_layers!r}.")
    check_runtime(runtime)
    rows = prepare_rows(model, data, labels, validation_data, representative_data is None)
    targets = {
        "max_accuracy_drop": max_accuracy_drop,
        "min_sqnr_db": min_sqnr_db,
        "runtime": runtime,
        "kinds": kinds,
    }
    search = Scorer(model, rows.search_x, rows.search_labels, held_out=False, **targets)
    held = Scorer(model, rows.held_x, rows.held_labels, held_out=True, **targets)
    calibration = representative_data if rows.calibration_x is None else _feed(rows.calibration_x)
    calibrated = calibrate(model, mode, calibration, **convert_options)
    ranking: list[str] = []
    if max_layers != 0:
        if report is None:
            report = debug_quantization(
                model, _feed(rows.search_x), mode, calibrated=calibrated,
                num_samples=len(rows.search_x[0]), runtime=runtime,
            )  # fmt: skip
        ranking = report.ranking
    keep, flatbuffer, found, dropped, trials = search_keep_float(
        calibrated, ranking, search.score, max_layers
    )
    notes = list(rows.notes)
    if dropped:
        notes.append(
            f"{dropped}: TF's quantizer keeps these layers integer whatever the denylist says "
            "(ops that take their input's scale), so they are left out of keep_float."
        )
    held_score = held.score(flatbuffer)
    int8_held = held_score if not keep else held.score(calibrated.quantize([]))
    if found.met and not held_score.met:
        notes.append(
            "the target is met on the search rows but not on the held-out rows: the search "
            "rows are too few to tell; give more data or validation_data."
        )
    return KeepFloatSuggestion(
        keep, held_score.met, held_score, found, int8_held, trials, flatbuffer,
        float(max_accuracy_drop), float(min_sqnr_db), rows.rule, dropped, notes,
    )  # fmt: skip
