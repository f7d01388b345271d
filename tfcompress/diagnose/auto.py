"""`auto_quantize`: the smallest integer file that meets an accuracy target, and the trade-off.

The data is split (`tfcompress.diagnose.scoring`): candidates are compared and chosen on the
*search rows*, which never calibrate, and the chosen file is reported on the *held-out rows*
(each third row, or `validation_data`), which the search never saw. `target_met` is the held-out
verdict, with its margin counted in rows. Every output of the model is scored; the worst one
decides.

The candidates, cheapest to build first: plain int8; each recovery step as a candidate of its
own (cross-layer equalization, bias correction: a step is kept only where it measures better,
never assumed to help); AdaRound on top of the best of those; 4-bit (INT4) weights with
AdaRound. When every layer at 4 bits misses the target but 8 bits meets it, the per-layer
choice of 4 vs 8-bit weights (`tfcompress.diagnose.bit_widths`) gives a mixed file. When no
8-bit candidate meets the target: 16-bit activations for the whole model (`mode="int16x8"`),
the fewest layers kept float on top of the best 8-bit candidate (`suggest_keep_float`), named for
what it is ("int8 with 3 of 9 ops float"), and 16-bit activations for the debugger's worst
layers inside the int8 file (`convert(..., int16_layers=[...])`), added in its order until the
target is met ("int8 with 2 layers 16-bit"): integer throughout, about the int8 file's size.
Every candidate
is a real file measured on the runtime asked for (LiteRT with XNNPACK by default): every
output's figure, size and latency.

With `target="micro"` every candidate is converted for TensorFlow Lite Micro (static batch 1,
checked on TFLM), scored on TFLM, and its flash and tensor arena are measured there
(`tfcompress.micro.check`); `max_flash` and `max_arena` are budgets a candidate must fit to be
chosen. With `max_flash`, each candidate whose weights hold few distinct values per channel
(a clustered or pruned model) is also tried stored as TFLM look-up tables
(`tfcompress.micro.compress`, named "<candidate>+lut").
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfcompress.core.optional import require
from tfcompress.diagnose.bit_widths import choose_int4_layers
from tfcompress.diagnose.debug import debug_quantization, keras_model_of
from tfcompress.diagnose.keep_float import prepare_rows, search_keep_float
from tfcompress.diagnose.scoring import MIN_SQNR_DB, Score, Scorer, check_runtime
from tfcompress.export import calibrate, convert
from tfcompress.micro import MicroError
from tfcompress.micro import check as micro_check
from tfcompress.micro import compress as micro_compress
from tfcompress.recovery.weights import kernel_layers
from tfcompress.tflite.fidelity import RUNTIMES
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.runtime import benchmark_tflite

#: the recovery steps tried one by one on top of BatchNorm folding (each is its own candidate)
STEPS = ("equalize", "bias_correction")
#: where the files run: LiteRT (phones, desktops, Linux boards) or TensorFlow Lite Micro
TARGETS = ("phone", "micro")
_QDQ_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Candidate:
    """One file `auto_quantize` built and measured.

    Attributes:
        name: what the file is: "int8", "int8+equalize", "int8+bias_correction",
            "int8+adaround", "int4+adaround", "int4[2/5]+adaround" (2 of 5 kernel layers at
            4 bits), "int16x8", "int8 with 3 of 9 ops float" (a float fallback).
        settings: the `tfcompress.convert` keywords that rebuild the file (`mode` included
            when it is not the search's mode).
        search: its `Score` on the search rows: what the choice is made on.
        held_out: its `Score` on the held-out rows: reported, never chosen on.
        size_bytes: the file's size.
        latency_ms: median latency of one inference on the runtime (None when not measured).
        meets_target: whether it meets the target on the search rows.
        error: why the candidate could not be built (then it has no figures).
        notes: what `convert` said about the recovery steps (a step it dropped because it
            made the file worse on convert's own held-out rows, a step with nothing to do).
        flash_bytes: with `target="micro"`, the flash the model takes on TFLM (the file's
            size), from `tfcompress.micro.check`; None otherwise.
        arena_bytes: with `target="micro"`, the smallest tensor arena TFLM allocates and
            invokes the file with, measured by `tfcompress.micro.check`; None otherwise.
        over_budget: the budgets the file exceeds, each with the measured figure
            ("arena 42,528 bytes > max_arena 40,000 (+2,528)"); a candidate over a budget is
            never chosen while another one fits.
    """

    name: str
    settings: dict[str, Any]
    search: Score | None = None
    held_out: Score | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    meets_target: bool = False
    error: str | None = None
    flatbuffer: bytes = field(default=b"", repr=False)
    notes: list[str] = field(default_factory=list)
    flash_bytes: int | None = None
    arena_bytes: int | None = None
    over_budget: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        """Built, meeting the target on the search rows and within every budget."""
        return self.error is None and self.meets_target and not self.over_budget

    @property
    def slack(self) -> float:
        """The worst output's margin on the search rows, as a share (negative: missed)."""
        return -1.0 if self.search is None else self.search.slack

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes)."""
        return {
            "name": self.name,
            "settings": _plain(self.settings),
            "search": None if self.search is None else self.search.to_dict(),
            "held_out": None if self.held_out is None else self.held_out.to_dict(),
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "meets_target": self.meets_target,
            "error": self.error,
            "notes": list(self.notes),
            "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes,
            "over_budget": list(self.over_budget),
        }


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=str))


@dataclass
class AutoQuantizeResult:
    """What `auto_quantize` found: the chosen file and every candidate it measured.

    Attributes:
        flatbuffer: the chosen file (save it with `tfcompress.save_tflite`).
        choice: the chosen candidate's name.
        settings: the `convert` keywords that rebuild the chosen file.
        max_accuracy_drop: the target of classes outputs.
        min_sqnr_db: the target of values outputs.
        target_met: whether the chosen file meets the target on the held-out rows (the search
            never saw them). When no candidate meets it on the search rows, the best one is
            chosen and this is False.
        held_out: the chosen file's `Score` on the held-out rows (margins in rows).
        candidates: every candidate, in the order built.
        runtime: the runtime every figure was measured on.
        rows: the rule that split the data into search and held-out rows.
        notes: anything else worth knowing.
        target: where the files run: "phone" (LiteRT) or "micro" (TensorFlow Lite Micro).
        max_flash: the flash budget in bytes (`target="micro"`), or None.
        max_arena: the tensor arena budget in bytes (`target="micro"`), or None.
        budgets_met: whether the chosen file fits `max_flash` and `max_arena` (True without
            budgets). When no candidate meets the target within the budgets, the best one within
            them is chosen (else the one nearest them) and a note says which came closest.

    Example:
        >>> result = AutoQuantizeResult(b"", "int8", {}, 0.01, 20.0, True, None, [])
        >>> result.to_dict()["choice"]
        'int8'
    """

    flatbuffer: bytes = field(repr=False)
    choice: str
    settings: dict[str, Any]
    max_accuracy_drop: float
    min_sqnr_db: float
    target_met: bool
    held_out: Score | None
    candidates: list[Candidate]
    runtime: str = RUNTIMES["xnnpack"]
    rows: str = ""
    notes: list[str] = field(default_factory=list)
    target: str = "phone"
    max_flash: int | None = None
    max_arena: int | None = None
    budgets_met: bool = True

    @property
    def chosen(self) -> Candidate:
        """The chosen candidate."""
        return next(c for c in self.candidates if c.name == self.choice)

    def to_dict(self) -> dict[str, Any]:
        """Plain figures (no file bytes), for JSON."""
        return {
            "choice": self.choice,
            "settings": _plain(self.settings),
            "max_accuracy_drop": self.max_accuracy_drop,
            "min_sqnr_db": self.min_sqnr_db,
            "target_met": self.target_met,
            "runtime": self.runtime,
            "rows": self.rows,
            "size_bytes": len(self.flatbuffer),
            "target": self.target,
            "max_flash": self.max_flash,
            "max_arena": self.max_arena,
            "budgets_met": self.budgets_met,
            "flash_bytes": self.chosen.flash_bytes if self.candidates else None,
            "arena_bytes": self.chosen.arena_bytes if self.candidates else None,
            "held_out": None if self.held_out is None else self.held_out.to_dict(),
            "notes": self.notes,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def summary(self) -> str:
        """The trade-off as a text table (search-row margins), the chosen file marked with `*`,
        then the chosen file's held-out figures. With `target="micro"`, each file's flash and
        tensor arena measured on TFLM, and the budgets it exceeds."""
        verdict = "met" if self.target_met else "NOT met"
        micro = self.target == "micro"
        last = "arena KB" if micro else "latency ms"
        lines = [
            f"target: classes outputs lose <= {self.max_accuracy_drop:.4f}, values outputs keep "
            f">= {self.min_sqnr_db:.1f} dB SQNR; on {self.runtime}; {self.rows}",
        ]
        if micro:
            lines.append(f"budgets: {_budgets_text(self.max_flash, self.max_arena)}")
        size = "flash KB" if micro else "size KB"
        lines.append(f"  {'candidate':<34} {'search margin':>13} {size:>9} {last:>11}  search")
        for c in self.candidates:
            mark = "*" if c.name == self.choice else " "
            if c.error is not None:
                lines.append(f"{mark} {c.name:<34} failed: {c.error[:60]}")
                continue
            extra = c.arena_bytes if micro else c.latency_ms
            extra_text = (
                "-" if extra is None else f"{extra / 1024:.1f}" if micro else f"{extra:.3f}"
            )
            status = "met" if c.meets_target else "missed"
            if c.over_budget:
                status += ", over " + " and ".join(b.split(" ", 1)[0] for b in c.over_budget)
            lines.append(
                f"{mark} {c.name:<34} {c.slack:>+13.4f} {c.size_bytes / 1024:>9.1f} "
                f"{extra_text:>11}  {status}"
            )
            lines += [f"    ({note})" for note in c.notes if "dropped" in note]
            lines += [f"    ({over})" for over in c.over_budget]
        budgets = ""
        if self.max_flash is not None or self.max_arena is not None:
            budgets = "; within the budgets" if self.budgets_met else "; budgets NOT met"
        lines.append(f"chosen: {self.choice}; target {verdict} on the held-out rows{budgets}")
        if self.held_out is not None:
            lines.append(self.held_out.describe())
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def save_json(self, path: str | Path) -> Path:
        """Write `to_dict()` to `path`."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def plot(self, path: str | Path) -> Path:
        """A PNG of the worst output's margin (search rows) against file size, Pareto front
        joined."""
        matplotlib = require("matplotlib", "AutoQuantizeResult.plot")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        built = [c for c in self.candidates if c.error is None]
        figure, axes = plt.subplots(figsize=(6, 4))
        for c in built:
            axes.scatter(c.size_bytes / 1024, c.slack, color="C1" if c.meets_target else "C0")
            axes.annotate(c.name, (c.size_bytes / 1024, c.slack), fontsize=7)
        front = pareto_front(built)
        axes.plot([c.size_bytes / 1024 for c in front], [c.slack for c in front], "k--", lw=0.8)
        axes.axhline(0.0, color="C3", lw=0.8)
        axes.set_xlabel("file size (KB)")
        axes.set_ylabel(f"margin to the target, worst output ({self.runtime})")
        axes.set_title("auto_quantize: margin against size (target in red)")
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no other one beats in both size and margin, smallest first.

    Example:
        >>> from tfcompress.diagnose.scoring import OutputScore, Score
        >>> def scored(margin):
        ...     row = OutputScore("y", "classes", "agreement", 1.0, 1.0, 0.99, 100, "rows", margin)
        ...     return Score([row], 100, "LiteRT (XNNPACK)", False)
        >>> a = Candidate("a", {}, scored(2), size_bytes=100)
        >>> b = Candidate("b", {}, scored(1), size_bytes=200)
        >>> [c.name for c in pareto_front([a, b])]
        ['a']
    """
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.size_bytes, -c.slack)):
        if not front or c.slack > front[-1].slack:
            front.append(c)
    return front


def auto_quantize(
    model: Any,
    data: Any,
    labels: Any = None,
    *,
    max_accuracy_drop: float = 0.01,
    min_sqnr_db: float = MIN_SQNR_DB,
    mode: str = "int8",
    representative_data: Any = None,
    validation_data: Any = None,
    runtime: str | None = None,
    kinds: dict[str, str] | None = None,
    recovery: bool = True,
    try_int4: bool = True,
    try_int16x8: bool = True,
    measure_latency: bool = True,
    target: str = "phone",
    max_flash: int | None = None,
    max_arena: int | None = None,
    **convert_options: Any,
) -> AutoQuantizeResult:
    """The smallest integer file that meets the target on every output, judged on held-out rows.

    The data is split: every third row is held out (or `validation_data` is); the candidates
    are compared and chosen on the other rows (half of which calibrate instead when
    `representative_data` is not given). The chosen file is then run on the held-out rows:
    `target_met` and `held_out` come from there, with the margin counted in rows ("met with a
    margin of 3 rows of 160"). Never claimed on the rows it searched.

    Args:
        model: a Keras 3 functional or Sequential model (any number of outputs, class scores,
            regression values or dense maps) or a `.keras` path.
        data: inputs, or an `(inputs, labels)` pair.
        labels: labels of `data`: an array for a one-output model, a dict by output name or a
            list by position (None entries allowed). A classes output with labels is scored by
            accuracy, without by top-1 agreement with the Keras model; a values output by its
            SQNR against the Keras model (its labels' MAE is reported).
        max_accuracy_drop: what a classes output may lose against the Keras model (0.01 = 1 pp).
        min_sqnr_db: the least SQNR (dB) of a values output against the Keras model.
        mode: `"int8"` or `"edgetpu"` (no INT4 and no int16x8 candidate: the Edge TPU runs
            int8 only).
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
            Lite Micro; latency is then not measured, and the default with `target="micro"`).
        recovery: try the PTQ recovery steps (`tfcompress.recovery`) as candidates; False
            searches plain int8, int16x8 and the float fallback only (faster; for models the
            steps refuse).
        try_int4: also try 4-bit (INT4) weights with AdaRound (`mode="int8"` and `recovery`).
            INT4 files are the smallest but run on LiteRT's builtin kernels, not XNNPACK
            (see each candidate's `latency_ms`), nor on TFLM; one is chosen only when it is
            more than 2 % smaller than every 8-bit file that meets the target. Pass False to
            prefer speed over size.
        try_int16x8: when no 8-bit candidate meets the target, also try 16-bit activations:
            for the whole model (`mode="int16x8"`), and for the debugger's worst layers inside
            the int8 file (`int16_layers`; `mode="int8"` only).
        measure_latency: time each file (`tfcompress.benchmark_tflite`, 1 thread).
        target: `"phone"` (LiteRT) or `"micro"`: every candidate is converted with
            `target="micro"` (static batch 1, refused when TFLM cannot run it), scored on
            TensorFlow Lite Micro, and its flash and tensor arena are measured there
            (`tfcompress.micro.check`; `Candidate.flash_bytes`, `Candidate.arena_bytes`).
        max_flash: with `target="micro"`, the most bytes of flash the model may take (the
            file's size; TFLM's code comes on top). A candidate above it is not chosen. Also
            tries each candidate stored as TFLM look-up tables ("+lut",
            `tfcompress.micro.compress`), which shrinks the files of clustered or pruned models.
        max_arena: with `target="micro"`, the largest tensor arena in bytes (the smallest
            arena TFLM runs the file with, measured by bisection; add your margin for optimized
            kernels). A candidate above it is not chosen. INT4 weights and look-up tables are
            expanded in the arena, so the smallest file is not always the one that fits.
        **convert_options: other `tfcompress.convert` keywords (`num_samples`, `per_channel`).

    Returns:
        An `AutoQuantizeResult`: `.flatbuffer`, `.held_out`, `.budgets_met`, `.summary()`,
        `.to_dict()`, `.plot(path)`.

    Raises:
        ValueError: a target or mode out of range, `max_flash` or `max_arena` without
            `target="micro"` or not a positive number of bytes, or `target="micro"` with a
            runtime other than `"micro"`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_test[:60]
        >>> result = tfc.auto_quantize(build_digits_cnn(), x, max_accuracy_drop=1.0,
        ...                            recovery=False, measure_latency=False)
        >>> result.choice, result.target_met, result.held_out.rows
        ('int8', True, 20)
        >>> micro = tfc.auto_quantize(build_digits_cnn(), x, max_accuracy_drop=1.0,
        ...                           recovery=False, target="micro", max_arena=50_000)
        >>> micro.chosen.arena_bytes <= 50_000, micro.budgets_met
        (True, True)
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
    runtime = _check_target(target, mode, runtime, max_flash, max_arena)
    model = keras_model_of(model, convert_options.get("custom_objects"))
    rows = prepare_rows(model, data, labels, validation_data, representative_data is None)
    targets = {
        "max_accuracy_drop": float(max_accuracy_drop),
        "min_sqnr_db": float(min_sqnr_db),
        "runtime": runtime,
        "kinds": kinds,
    }
    search = Scorer(model, rows.search_x, rows.search_labels, held_out=False, **targets)
    held = Scorer(model, rows.held_x, rows.held_labels, held_out=True, **targets)
    calibration = representative_data
    if rows.calibration_x is not None:
        calibration = rows.calibration_x if len(rows.calibration_x) > 1 else rows.calibration_x[0]

    def measure(name: str, settings: dict[str, Any], flatbuffer: bytes) -> Candidate:
        flatbuffer = bytes(flatbuffer)
        try:
            found = search.score(flatbuffer)
        except Exception as error:  # noqa: BLE001 - a file the runtime cannot run is reported
            return Candidate(name, settings, error=f"{type(error).__name__}: {error}")
        latency = None
        if measure_latency and runtime != "micro":
            latency = benchmark_tflite(
                flatbuffer, threads=1, runs=50, builtin_only=runtime == "reference"
            ).median_ms
        candidate = Candidate(
            name, settings, found, None, len(flatbuffer), latency, found.met, None, flatbuffer
        )
        if target == "micro":
            _measure_on_micro(candidate, max_flash, max_arena)
        return candidate

    def build(name: str, settings: dict[str, Any]) -> Candidate:
        if target == "micro":
            settings = {**settings, "target": "micro"}
        options = {**convert_options, **settings}
        file_mode = options.pop("mode", mode)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # float-op and fidelity warnings: figures say it
                flatbuffer = convert(model, file_mode, calibration, check=False, **options)
        except Exception as error:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            return Candidate(name, settings, error=f"{type(error).__name__}: {error}")
        candidate = measure(name, settings, flatbuffer)
        said = [str(w.message) for w in caught if str(w.message).startswith("optimize:")]
        candidate.notes.extend(dict.fromkeys(said))
        return candidate

    candidates = [build("int8", {})]
    base = candidates[0]
    if recovery:
        for step in STEPS:
            candidates.append(build(f"int8+{step}", {"optimize": ["fold_bn", step]}))
        base = _best(candidates) or base
        adaround = [*base.settings.get("optimize", ["fold_bn"]), "adaround"]
        candidates.append(build("int8+adaround", {"optimize": adaround}))
        if try_int4 and mode == "int8":
            candidates.append(build("int4+adaround", {"optimize": adaround, "int4_weights": True}))
    by_name = {c.name: c for c in candidates}
    mixed_base, all_int4 = by_name.get("int8+adaround"), by_name.get("int4+adaround")
    if all_int4 and not all_int4.meets_target and mixed_base and mixed_base.meets_target:
        candidates.extend(
            _mixed_int4_candidates(
                model, rows, mixed_base, convert_options.get("per_channel", True), build
            )
        )
    eight_bit = [c for c in candidates if c.error is None and "int4" not in c.name]
    notes = list(rows.notes)
    if eight_bit and not any(c.meets_target for c in eight_bit):
        if try_int16x8 and mode == "int8":
            candidates.append(build("int16x8", {"mode": "int16x8"}))
        best = _best(eight_bit) or eight_bit[0]
        fallback, fallback_notes, ranking = _keep_float_candidate(
            best, model, mode, calibration, search, measure, runtime, convert_options,
            build if target == "micro" else None,
        )  # fmt: skip
        candidates.append(fallback)
        notes += fallback_notes
        if try_int16x8 and mode == "int8" and "int4_weights" not in best.settings:
            candidates += _sixteen_bit_layer_candidates(best, ranking, build)
    if target == "micro" and max_flash is not None:
        candidates += _look_up_table_candidates(candidates, measure)
    chosen = _choose(candidates, max_flash, max_arena)
    if chosen is None:
        errors = "; ".join(f"{c.name}: {c.error}" for c in candidates)
        raise RuntimeError(f"auto_quantize could not build any integer file: {errors}")
    if (max_flash is not None or max_arena is not None) and not chosen.eligible:
        notes.append(_nothing_fits(candidates, chosen, max_flash, max_arena))
    chosen.held_out = held.score(chosen.flatbuffer)
    if chosen.meets_target and not chosen.held_out.met:
        notes.append(
            f"'{chosen.name}' meets the target on the search rows but not on the held-out "
            "rows: the margin is within what a few rows change; give more data or "
            "validation_data, or loosen the target."
        )
    return AutoQuantizeResult(
        chosen.flatbuffer, chosen.name, chosen.settings, float(max_accuracy_drop),
        float(min_sqnr_db), chosen.held_out.met, chosen.held_out, candidates, RUNTIMES[runtime],
        rows.rule, notes, target, max_flash, max_arena, not chosen.over_budget,
    )  # fmt: skip


def _check_target(
    target: str, mode: str, runtime: str | None, max_flash: Any, max_arena: Any
) -> str:
    """The runtime to score on, once the target and the budgets are checked."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}; got {target!r}.")
    for name, budget in (("max_flash", max_flash), ("max_arena", max_arena)):
        if budget is None:
            continue
        if target != "micro":
            raise ValueError(
                f"{name} is a budget measured on TensorFlow Lite Micro: pass target='micro' "
                f"with it (target={target!r} runs the files on LiteRT, where it means nothing)."
            )
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"{name} must be a positive number of bytes; got {budget!r}.")
    if target == "micro":
        if mode != "int8":
            raise ValueError(
                f"target='micro' searches int8 files (and int16x8 ones); mode={mode!r} is for "
                "the Edge TPU. Use mode='int8'."
            )
        if runtime not in (None, "micro"):
            raise ValueError(
                f"target='micro' scores every file on TensorFlow Lite Micro; runtime={runtime!r} "
                "contradicts it. Leave runtime out (or pass runtime='micro')."
            )
        return "micro"
    return check_runtime(runtime or "xnnpack")


def _measure_on_micro(candidate: Candidate, max_flash: int | None, max_arena: int | None) -> None:
    """Flash and arena measured on TFLM (`tfcompress.micro.check`), and the budgets exceeded."""
    report = micro_check(candidate.flatbuffer)
    if not report.runs:
        candidate.error = f"TensorFlow Lite Micro cannot run it: {report.error[:200]}"
        return
    candidate.flash_bytes, candidate.arena_bytes = report.flash_bytes, report.arena_bytes
    candidate.over_budget = over_budget(
        report.flash_bytes, report.arena_bytes, max_flash, max_arena
    )


def over_budget(
    flash_bytes: int, arena_bytes: int | None, max_flash: int | None, max_arena: int | None
) -> list[str]:
    """The budgets a file measured on TFLM exceeds, each with its figure and the excess.

    Example:
        >>> over_budget(67_168, 9_728, 50_000, 40_000)
        ['flash 67,168 bytes > max_flash 50,000 (+17,168)']
    """
    exceeded = []
    for name, measured, budget in (
        ("flash", flash_bytes, max_flash),
        ("arena", arena_bytes, max_arena),
    ):
        if budget is not None and measured is not None and measured > budget:
            exceeded.append(
                f"{name} {measured:,} bytes > max_{name} {budget:,} (+{measured - budget:,})"
            )
    return exceeded


def _budgets_text(max_flash: int | None, max_arena: int | None) -> str:
    flash = "none" if max_flash is None else f"<= {max_flash:,} bytes"
    arena = "none" if max_arena is None else f"<= {max_arena:,} bytes"
    return f"flash {flash}, arena {arena} (measured on TFLM)"


def _overshoot(candidate: Candidate, max_flash: int | None, max_arena: int | None) -> float:
    """How far over its worst budget a file is, as a share of that budget (0: within)."""
    worst = 0.0
    for measured, budget in (
        (candidate.flash_bytes, max_flash),
        (candidate.arena_bytes, max_arena),
    ):
        if measured is not None and budget is not None:
            worst = max(worst, measured / budget - 1.0)
    return worst


def _look_up_table_candidates(candidates: list[Candidate], measure: Any) -> list[Candidate]:
    """Each candidate meeting the target, stored as TFLM look-up tables where that shrinks it.

    A weight tensor with at most 128 distinct values per channel (a clustered model, 4-bit
    levels) becomes bit-packed indices; the decoded tensors are the original ones, so the
    outputs stay the same and only flash and arena change. Files without such tensors are left
    out.
    """
    found = []
    for candidate in list(candidates):
        if not candidate.meets_target or candidate.error is not None:
            continue
        try:
            small = micro_compress(candidate.flatbuffer)
        except MicroError:  # no tensor with few enough values: nothing to gain
            continue
        if len(small) < len(candidate.flatbuffer):
            found.append(measure(f"{candidate.name}+lut", candidate.settings, small))
    return found


def _nothing_fits(
    candidates: list[Candidate], chosen: Candidate, max_flash: int | None, max_arena: int | None
) -> str:
    """Which candidates came closest when none meets the target within the budgets."""
    accurate = [c for c in candidates if c.error is None and c.meets_target]
    if chosen.over_budget:
        said = [f"No candidate fits the budgets; the nearest is '{chosen.name}': "
                + "; ".join(chosen.over_budget)]  # fmt: skip
    else:
        said = [
            "No candidate meets the accuracy target within the budgets; within them, "
            f"'{chosen.name}' comes closest: {chosen.search.worst.describe()} (search rows)"
        ]
    nearest = min(accurate, key=lambda c: _overshoot(c, max_flash, max_arena), default=None)
    if nearest is not None and nearest is not chosen:
        said.append(
            f"Of the files meeting the accuracy target, '{nearest.name}' is nearest the budgets: "
            + "; ".join(nearest.over_budget)
        )
    said.append(
        "Loosen a budget or the target, or make the model smaller (prune, or cluster: "
        "clustered weights are also tried as TFLM look-up tables when max_flash is given)"
    )
    return ". ".join(said) + "."


def _best(candidates: list[Candidate]) -> Candidate | None:
    built = [c for c in candidates if c.error is None]
    return max(built, key=lambda c: c.slack) if built else None


def float_ops_name(base: str, flatbuffer: bytes) -> str:
    """ "int8 with 3 of 9 ops float": what a file with float layers is.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.data import load_digits
        >>> from tfcompress.models import build_digits_cnn
        >>> x = load_digits().x_train[:20]
        >>> float_ops_name("int8", tfc.convert(build_digits_cnn(), "int8", x, keep_float=["fc1"]))
        'int8 with 1 of 7 ops float'
    """
    ops = [op for op in inspect(flatbuffer).subgraphs[0].ops if op.name not in _QDQ_OPS]
    floats = sum(op.computes_in_float for op in ops)
    return f"{base} with {floats} of {len(ops)} ops float"


def _keep_float_candidate(
    best: Candidate,
    model: Any,
    mode: str,
    calibration: Any,
    search: Scorer,
    measure: Any,
    runtime: str,
    convert_options: dict[str, Any],
    rebuild: Any = None,
) -> tuple[Candidate, list[str], list[str]]:
    """Float fallback for the fewest layers, on top of the best 8-bit candidate, and the
    debugger's ranking of the layers it searched (worst first; empty when the debugger failed).

    The layers are searched on the calibrated file; with `rebuild` (`target="micro"`) the
    chosen set is converted again for the target, and that file is measured.
    """
    name = f"{best.name} with layers float"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calibrated = calibrate(
                model, mode, calibration, optimize=best.settings.get("optimize"),
                **{k: v for k, v in convert_options.items() if k != "optimize"},
            )  # fmt: skip
            feed = search.x if len(search.x) > 1 else search.x[0]
            report = debug_quantization(
                model, feed, mode, calibrated=calibrated, num_samples=len(search.x[0]),
                isolated_samples=min(64, len(search.x[0])), runtime=runtime,
            )  # fmt: skip
            keep, flatbuffer, _, dropped, _ = search_keep_float(
                calibrated, report.ranking, search.score, None
            )
    except Exception as error:  # noqa: BLE001
        return Candidate(name, best.settings, error=f"{type(error).__name__}: {error}"), [], []
    settings = {**best.settings, "keep_float": keep}
    if rebuild is not None:
        settings.pop("target", None)
        rebuilt = rebuild(name, settings)
        if rebuilt.error is None:
            rebuilt.name = float_ops_name(best.name, rebuilt.flatbuffer)
        flatbuffer = None
    notes = []
    if dropped:
        notes.append(
            f"{dropped}: TF's quantizer keeps these layers integer whatever the denylist says, "
            "so the float fallback leaves them out."
        )
    if flatbuffer is None:
        return rebuilt, notes, report.ranking
    candidate = measure(float_ops_name(best.name, flatbuffer), settings, flatbuffer)
    return candidate, notes, report.ranking


def _sixteen_bit_layer_candidates(
    best: Candidate, ranking: list[str], build: Any, max_layers: int = 6
) -> list[Candidate]:
    """16-bit activations for the debugger's worst layers inside the best 8-bit candidate,
    one more layer (in ranking order) per file until one meets the target."""
    built: list[Candidate] = []
    chosen: list[str] = []
    for layer in ranking[:max_layers]:
        chosen.append(layer)
        settings = {**best.settings, "int16_layers": list(chosen)}
        plural = "s" if len(chosen) > 1 else ""
        candidate = build(f"{best.name} with {len(chosen)} layer{plural} 16-bit", settings)
        built.append(candidate)
        if candidate.error is not None or candidate.meets_target:
            break
    return built


def _mixed_int4_candidates(
    model: Any, rows: Any, base: Candidate, per_channel: bool, build: Any, retries: int = 2
) -> list[Candidate]:
    """4-bit weights on the layers the sensitivity analysis allows; fewer when the file misses.

    The budget is the margin the 8-bit AdaRound file has on the search rows. The greedy set comes
    from a Keras emulation on the search rows; the file is then measured, and while it misses
    the target the last layer taken (the most sensitive) goes back to 8 bits.
    """
    if len(rows.search_x) != 1 or len(base.search.outputs) != 1:
        return []  # the emulation feeds one input and scores one output
    labels = rows.search_labels[0]
    worst = base.search.worst
    if worst.kind != "classes":
        return []
    if labels is None:
        labels = model.predict(rows.search_x[0], verbose=0, batch_size=256).argmax(-1)
    budget = worst.value - worst.target
    try:
        chosen = choose_int4_layers(
            model, rows.search_x[0], labels, budget, per_channel=per_channel
        )
    except Exception as error:  # noqa: BLE001 - reported as a failed candidate
        return [Candidate("int4[mixed]+adaround", {}, error=f"{type(error).__name__}: {error}")]
    total = len(kernel_layers(model)[0])
    steps = [s for s in base.settings.get("optimize", []) if s != "adaround"]
    built: list[Candidate] = []
    for _ in range(retries + 1):
        if not chosen:
            break
        adaround = ("adaround", {"int4_layers": list(chosen)})
        settings = {"optimize": [*steps, adaround], "int4_weights": True}
        candidate = build(f"int4[{len(chosen)}/{total}]+adaround", settings)
        built.append(candidate)
        if candidate.error is not None or candidate.meets_target:
            break
        chosen = chosen[:-1]
    return built


#: an INT4 file is chosen over an 8-bit one meeting the target only when it is this much smaller
INT4_MIN_SAVING = 0.02


def _choose(
    candidates: list[Candidate], max_flash: int | None = None, max_arena: int | None = None
) -> Candidate | None:
    built = [c for c in candidates if c.error is None]
    if not built:
        return None
    meeting = [c for c in built if c.eligible]
    if meeting:  # the smallest file; among equal sizes the one with more margin
        smallest = min(meeting, key=lambda c: (c.size_bytes, -c.slack))
        eight_bit = [c for c in meeting if "int4" not in c.name]
        if "int4" in smallest.name and eight_bit:  # INT4 gives up XNNPACK and TFLM: for a saving
            plain = min(eight_bit, key=lambda c: (c.size_bytes, -c.slack))
            if plain.size_bytes <= (smallest.size_bytes or 0) * (1 + INT4_MIN_SAVING):
                return plain
        return smallest
    fitting = [c for c in built if not c.over_budget]
    if fitting:  # the best margin within the budgets
        return max(fitting, key=lambda c: (c.slack, -(c.size_bytes or 0)))
    nearest = min(built, key=lambda c: (_overshoot(c, max_flash, max_arena), -c.slack))
    return nearest  # none fits the budgets
