"""How `suggest_keep_float` and `auto_quantize` judge a file: every output, held-out rows, a runtime.

**Rows.** A search never chooses on the rows it calibrates with, and never reports the rows it
chose on. The data it gets is split by position, so data sorted by class or by time lands on
every side: every third row (rows 2, 5, 8, ...) is *held out*: only the chosen file runs on
them, for the figure reported. The other rows are the *search rows*, on which the candidates
are compared and chosen; when no `representative_data` is given, half of them (rows 0, 3, 6,
...) calibrate instead and the search keeps rows 1, 4, 7, .... With `validation_data=`, its
rows are the held-out ones and `data` is searched (its even rows calibrate when no
`representative_data` is given).

**Outputs.** Every output of the model is scored, each by its kind
(`tfcompress.tflite.fidelity.output_kinds`):

* a *classes* output (scores per class, per row or per pixel of a dense map) by its top-1
  accuracy against the labels given for it, else by its top-1 agreement with the Keras model;
  its target is the Keras model's figure minus `max_accuracy_drop`. The margin is counted in
  decisions (rows, or pixels): how many more of them the file could get wrong and still meet
  the target ("a margin of 3 rows of 160").
* a *values* output (a regression, landmarks, posteriors of one value each) by its SQNR against
  the Keras model; its target is `min_sqnr_db` (20 dB: an error of 10 % of the output's RMS).
  The margin is in dB and in standard errors of the held-out figure. Labels given for it are
  reported (the file's and the Keras model's mean absolute error), not used to decide.

The target holds when it holds for every output: the worst output decides.

**Runtime.** The file runs on LiteRT with XNNPACK (`"xnnpack"`, what phones run by default),
LiteRT's reference kernels (`"reference"`) or TensorFlow Lite Micro (`"micro"`); every figure
names the one it came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tfcompress.micro.report import run_on_tflm
from tfcompress.tflite.fidelity import (
    RUNTIMES,
    compare_outputs,
    file_outputs,
    keras_outputs,
    kinds_of,
    runtime_of,
)

#: every HELD_OUT_EVERY-th row (rows 2, 5, 8, ... for 3) is held out of the search
HELD_OUT_EVERY = 3
#: the SQNR (dB) a values output must keep against the Keras model by default
MIN_SQNR_DB = 20.0


def check_runtime(runtime: str) -> str:
    """`runtime` itself when it is one of `RUNTIMES`; else a ValueError listing them.

    Example:
        >>> check_runtime("reference")
        'reference'
    """
    if runtime not in RUNTIMES:
        listed = ", ".join(f"'{key}' ({name})" for key, name in RUNTIMES.items())
        raise ValueError(f"runtime={runtime!r} is not one of {listed}.")
    return runtime


def run_file(flatbuffer: bytes, x: Sequence[np.ndarray], runtime: str) -> list[np.ndarray]:
    """The file's dequantized outputs on `x` (one array per input), computed on `runtime`.

    On `"micro"` a file with TFLM look-up tables (`tfcompress.micro.compress`) runs as it is:
    TFLM decodes them.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
        >>> flatbuffer = tfc.convert(build_digits_cnn(width=4), "int8", x)
        >>> [a.shape for a in run_file(flatbuffer, [x], "micro")]
        [(4, 10)]
    """
    if check_runtime(runtime) != "micro":
        return file_outputs(flatbuffer, list(x), runtime)
    return run_on_tflm(flatbuffer, x)


def split_rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(search rows, held-out rows) of `count` rows: every third row is held out.

    Example:
        >>> search, held_out = split_rows(7)
        >>> search.tolist(), held_out.tolist()
        ([0, 1, 3, 4, 6], [2, 5])
    """
    if count < HELD_OUT_EVERY:
        raise ValueError(
            f"{count} rows of data: at least {HELD_OUT_EVERY} are needed to hold one out of the "
            "search (every third row is held out); pass more rows, or validation_data=."
        )
    rows = np.arange(count)
    held = rows % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    return rows[~held], rows[held]


def output_names(model: Any) -> list[str]:
    """The model's output names in the file's order (sorted keys for a dict of outputs)."""
    structure = getattr(model, "output", None)
    if isinstance(structure, dict):
        return sorted(structure)
    names = list(getattr(model, "output_names", None) or [])
    count = len(getattr(model, "outputs", None) or [None])
    return names if len(names) == count else [f"output_{i}" for i in range(count)]


def labels_per_output(labels: Any, names: list[str]) -> list[np.ndarray | None]:
    """One labels array (or None) per output: a dict by output name, a list by position, or
    one array for a model with one output.

    Example:
        >>> labels_per_output({"b": [1, 0]}, ["a", "b"])[1].tolist()
        [1, 0]
    """
    if labels is None:
        return [None] * len(names)
    if isinstance(labels, dict):
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise ValueError(
                f"labels names outputs the model does not have: {unknown}; its outputs are {names}."
            )
        return [None if labels.get(n) is None else np.asarray(labels[n]) for n in names]
    if len(names) == 1:
        return [np.asarray(labels)]
    if isinstance(labels, list | tuple) and len(labels) == len(names):
        return [None if item is None else np.asarray(item) for item in labels]
    raise ValueError(
        f"The model has {len(names)} outputs ({names}): give labels as a dict {{name: labels}} "
        "or a list with one entry per output (None for an output scored against the Keras "
        "model)."
    )


@dataclass
class OutputScore:
    """One output's figure on some rows, its target, and the margin between them.

    Attributes:
        name: the output's name.
        kind: "classes" or "values".
        metric: "accuracy" (against labels), "agreement" (top-1 against the Keras model) or
            "sqnr_db" (against the Keras model).
        value: the file's figure.
        float_value: the Keras model's figure on the same rows (None for SQNR).
        target: the least `value` that meets the target.
        count: decisions compared (rows, or pixels of a dense map), or rows for SQNR.
        unit: "rows", "pixels" or "dB".
        margin_count: classes: decisions the file could still lose and meet the target
            (negative: how many it lacks).
        margin_se: values: the margin in standard errors of the figure.
        mae: values with labels: the file's mean absolute error against them.
        float_mae: the Keras model's.

    Example:
        >>> s = OutputScore("probs", "classes", "agreement", 0.975, 1.0, 0.99, 160, "rows", -3)
        >>> s.met, s.describe()
        (False, "'probs': agreement 0.975 (target 0.990): misses by 3 rows of 160")
    """

    name: str
    kind: str
    metric: str
    value: float
    float_value: float | None
    target: float
    count: int
    unit: str
    margin_count: int | None = None
    margin_se: float | None = None
    mae: float | None = None
    float_mae: float | None = None

    @property
    def met(self) -> bool:
        """Whether the figure reaches its target."""
        if self.margin_count is not None:
            return self.margin_count >= 0
        return self.value >= self.target

    @property
    def slack(self) -> float:
        """The margin as a share: of decisions for classes, of RMS error budget for values."""
        if self.margin_count is not None:
            return self.margin_count / max(self.count, 1)
        return _relative_rms(self.target) - _relative_rms(self.value)

    def describe(self) -> str:
        """One line: figure, target and margin in its unit."""
        if self.margin_count is not None:
            figure = f"'{self.name}': {self.metric} {self.value:.3f} (target {self.target:.3f})"
            margin = abs(self.margin_count)
            unit = self.unit if margin != 1 else self.unit.rstrip("s")
            if self.margin_count >= 0:
                return f"{figure}: met with a margin of {margin} {unit} of {self.count}"
            return f"{figure}: misses by {margin} {unit} of {self.count}"
        value = "inf" if math.isinf(self.value) else f"{self.value:.1f}"
        margin = self.value - self.target
        se = "" if self.margin_se is None else f", {abs(self.margin_se):.1f} standard errors"
        verdict = (
            f"met with a margin of {margin:.1f} dB{se}"
            if self.met and not math.isinf(margin)
            else ("exact" if self.met else f"misses by {-margin:.1f} dB{se}")
        )
        line = f"'{self.name}': SQNR {value} dB (target {self.target:.1f}): {verdict}"
        if self.mae is not None:
            line += f"; MAE {self.mae:.4g} against the labels (Keras model {self.float_mae:.4g})"
        return line


def _relative_rms(sqnr_db: float) -> float:
    return 0.0 if math.isinf(sqnr_db) and sqnr_db > 0 else 10 ** (-sqnr_db / 20)


@dataclass
class Score:
    """Every output's figure for one file on one set of rows, and the runtime that ran it.

    Attributes:
        outputs: one `OutputScore` per output, in the file's order.
        rows: input rows scored.
        runtime: the runtime that ran the file (a value of `fidelity.RUNTIMES`).
        held_out: whether the rows were kept out of the search and the calibration.

    Example:
        >>> one = OutputScore("y", "values", "sqnr_db", 31.0, None, 20.0, 50, "dB")
        >>> Score([one], 50, "LiteRT (XNNPACK)", True).met
        True
    """

    outputs: list[OutputScore]
    rows: int
    runtime: str
    held_out: bool

    @property
    def met(self) -> bool:
        """Whether every output meets its target."""
        return all(output.met for output in self.outputs)

    @property
    def worst(self) -> OutputScore:
        """The output with the least margin: the one that decides."""
        return min(self.outputs, key=lambda output: output.slack)

    @property
    def slack(self) -> float:
        """The worst output's margin as a share (negative when the target is missed)."""
        return self.worst.slack

    def describe(self) -> str:
        """Which rows, which runtime, and every output's line."""
        rows = "held-out rows" if self.held_out else "search rows"
        lines = [f"{self.rows} {rows} on {self.runtime}:"]
        lines += [f"  {output.describe()}" for output in self.outputs]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain figures; `from_dict` reads them back."""
        return {
            "rows": self.rows,
            "runtime": self.runtime,
            "held_out": self.held_out,
            "met": self.met,
            "outputs": [asdict(output) for output in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """The score written by `to_dict`."""
        outputs = [OutputScore(**row) for row in data["outputs"]]
        return cls(outputs, data["rows"], data["runtime"], data["held_out"])


@dataclass
class Rows:
    """The inputs and labels of the search rows and of the held-out rows, and the rule used.

    `calibration_x` holds the calibration rows taken from the data (None when
    `representative_data` was given).
    """

    search_x: list[np.ndarray]
    held_x: list[np.ndarray]
    search_labels: list[np.ndarray | None]
    held_labels: list[np.ndarray | None]
    rule: str
    calibration_x: list[np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)


def split_data(
    x: list[np.ndarray],
    labels: list[np.ndarray | None],
    validation: tuple[list[np.ndarray], list[np.ndarray | None]] | None,
    calibrate_from_data: bool = False,
) -> Rows:
    """Split `x` and its labels into search and held-out rows (`validation` replaces the rule);
    with `calibrate_from_data`, calibration rows are taken out of the search rows too.

    Example:
        >>> import numpy as np
        >>> rows = split_data([np.arange(9.0)], [None], None, calibrate_from_data=True)
        >>> rows.calibration_x[0].tolist(), rows.search_x[0].tolist(), rows.held_x[0].tolist()
        ([0.0, 3.0, 6.0], [1.0, 4.0, 7.0], [2.0, 5.0, 8.0])
    """
    count = len(x[0])
    for position, given in enumerate(labels):
        if given is not None and len(given) != count:
            raise ValueError(
                f"labels of output {position} hold {len(given)} entries for {count} rows of data."
            )
    if validation is not None:
        held_x, held_labels = validation
        search = np.arange(count)
        source = "validation_data"
    else:
        search, held = split_rows(count)
        held_x = [a[held] for a in x]
        held_labels = [None if y is None else y[held] for y in labels]
        source = f"every {HELD_OUT_EVERY}rd row of data"
    calibration_x = None
    calibration = ""
    if calibrate_from_data:
        if len(search) < 2:
            raise ValueError(
                f"{count} rows of data leave no row to calibrate on apart from the search: pass "
                "more rows or representative_data."
            )
        calibration_x = [a[search[0::2]] for a in x]
        search = search[1::2]
        calibration = f"{len(calibration_x[0])} calibration rows, "
    rule = f"{calibration}{len(search)} search rows, {len(held_x[0])} held-out rows ({source})"
    return Rows(
        [a[search] for a in x],
        held_x,
        [None if y is None else y[search] for y in labels],
        held_labels,
        rule,
        calibration_x,
    )


class Scorer:
    """Scores files on one set of rows: the Keras model's outputs are computed once.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> model = build_digits_cnn(width=4)
        >>> x = np.random.default_rng(0).random((30, 8, 8, 1), dtype=np.float32)
        >>> scorer = Scorer(model, [x], [None], max_accuracy_drop=1.0)
        >>> scorer.score(tfc.convert(model, "int8", x)).met
        True
    """

    def __init__(
        self,
        model: Any,
        x: list[np.ndarray],
        labels: list[np.ndarray | None],
        *,
        max_accuracy_drop: float = 0.01,
        min_sqnr_db: float = MIN_SQNR_DB,
        runtime: str = "xnnpack",
        held_out: bool = True,
        kinds: dict[str, str] | None = None,
    ) -> None:
        self.x = x
        self.runtime = check_runtime(runtime)
        self.held_out = held_out
        self.max_accuracy_drop = float(max_accuracy_drop)
        self.min_sqnr_db = float(min_sqnr_db)
        self.reference = keras_outputs(model, x)
        self.names = output_names(model)
        if len(self.names) != len(self.reference):
            self.names = [f"output_{i}" for i in range(len(self.reference))]
        guessed = kinds_of(model, self.reference)
        chosen = chosen_kinds(guessed, self.names, labels, kinds)
        self.kinds = [
            kind if kind == "values" or (ref.ndim > 1 and ref.shape[-1] > 1) else "values"
            for kind, ref in zip(chosen, self.reference, strict=True)
        ]
        self.labels = [
            _checked_labels(given, ref, kind, name)
            for given, ref, kind, name in zip(
                labels, self.reference, self.kinds, self.names, strict=True
            )
        ]

    def score(self, flatbuffer: bytes) -> Score:
        """Run the file on the rows and score every output."""
        runtime = runtime_of(flatbuffer, self.runtime)  # XNNPACK takes no int16x8 op
        outputs = run_file(flatbuffer, self.x, runtime)
        if len(outputs) != len(self.reference):
            raise ValueError(
                f"The file has {len(outputs)} outputs and the Keras model {len(self.reference)}."
            )
        fidelity = compare_outputs(
            self.reference, outputs, self.names, self.kinds, runtime, self.held_out
        )
        scores = [
            self._output_score(ref, np.asarray(out).reshape(ref.shape), labels, figures)
            for ref, out, labels, figures in zip(
                self.reference, outputs, self.labels, fidelity.outputs, strict=True
            )
        ]
        return Score(scores, len(self.x[0]), RUNTIMES[runtime], self.held_out)

    def _output_score(
        self, ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None, figures: Any
    ) -> OutputScore:
        unit = "pixels" if ref.ndim > 2 else "rows"
        if figures.kind == "classes":
            if labels is not None:
                correct = int(np.sum(out.argmax(-1) == labels))
                count = labels.size
                float_value = float(np.mean(ref.argmax(-1) == labels))
                metric = "accuracy"
            else:
                count = figures.compared
                correct, float_value, metric = count - figures.flips, 1.0, "agreement"
            target = float_value - self.max_accuracy_drop
            needed = math.ceil(target * count - 1e-9)
            return OutputScore(
                figures.name, "classes", metric, correct / max(count, 1), float_value, target,
                count, unit, margin_count=correct - needed,
            )  # fmt: skip
        score = OutputScore(
            figures.name, "values", "sqnr_db", figures.sqnr_db, None, self.min_sqnr_db,
            len(ref), "dB", margin_se=_sqnr_margin_se(ref, out, self.min_sqnr_db),
        )  # fmt: skip
        if labels is not None:
            score.mae = float(np.mean(np.abs(out - labels)))
            score.float_mae = float(np.mean(np.abs(ref - labels)))
        return score


KINDS = ("classes", "values")


def chosen_kinds(
    guessed: list[str],
    names: list[str],
    labels: list[np.ndarray | None],
    given: dict[str, str] | None,
) -> list[str]:
    """Each output's kind: as `given` (by output name), else "values" where its labels hold
    real values, else as `fidelity.output_kinds` guessed it.

    Example:
        >>> chosen_kinds(["classes", "classes"], ["box", "face"], [None, None], {"box": "values"})
        ['values', 'classes']
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    wrong = {name: kind for name, kind in given.items() if kind not in KINDS}
    if unknown or wrong:
        raise ValueError(
            f"kinds takes {{output name: 'classes' or 'values'}}; got unknown outputs {unknown} "
            f"and kinds {wrong}. The model's outputs are {names}."
        )
    kinds = []
    for name, guess, label in zip(names, guessed, labels, strict=True):
        if name in given:
            kinds.append(given[name])
        elif label is not None and _real_valued(label):
            kinds.append("values")
        else:
            kinds.append(guess)
    return kinds


def _real_valued(labels: np.ndarray) -> bool:
    return bool(np.issubdtype(labels.dtype, np.floating) and np.any(np.mod(labels, 1) != 0))


def _checked_labels(
    labels: np.ndarray | None, ref: np.ndarray, kind: str, name: str
) -> np.ndarray | None:
    """Class ids of the output's shape (one-hot rows become ids), or real values of its shape."""
    if labels is None:
        return None
    if kind == "classes":
        if labels.shape == ref.shape:
            return labels.argmax(-1)
        if labels.size * ref.shape[-1] == ref.size:
            return labels.reshape(ref.shape[:-1])
        raise ValueError(
            f"labels of output '{name}' have shape {labels.shape}; its scores have shape "
            f"{ref.shape}: give one class id per row (per pixel) or one-hot rows."
        )
    if labels.size != ref.size:
        raise ValueError(
            f"labels of output '{name}' have shape {labels.shape}; its values have shape "
            f"{ref.shape}."
        )
    return labels.reshape(ref.shape).astype(np.float64)


def _sqnr_margin_se(ref: np.ndarray, out: np.ndarray, target: float) -> float | None:
    """The SQNR's margin to `target` in standard errors over rows (delta method)."""
    rows = len(ref)
    signal = np.sum(ref.reshape(rows, -1).astype(np.float64) ** 2, axis=1)
    noise = np.sum((out - ref).reshape(rows, -1).astype(np.float64) ** 2, axis=1)
    if rows < 2 or noise.sum() == 0 or signal.sum() == 0:
        return None
    ratio = signal / signal.mean() - noise / noise.mean()  # d log(S/N) per row
    se_db = 10 / math.log(10) * float(np.std(ratio, ddof=1)) / math.sqrt(rows)
    sqnr = 10 * math.log10(signal.sum() / noise.sum())
    return None if se_db == 0 else (sqnr - target) / se_db
