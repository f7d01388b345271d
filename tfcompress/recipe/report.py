"""The report of a `compress` run: Markdown, and a self-contained HTML page with the plots."""

from __future__ import annotations

import base64
import gzip
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfcompress.core.optional import available
from tfcompress.demo import plot_accuracy_vs_size, save_figure

if TYPE_CHECKING:
    from tfcompress.recipe.runner import CompressResult
    from tfcompress.recipe.schema import Recipe

PLOTS = ("accuracy_vs_size.png", "layer_sparsity.png", "edgetpu_map.png")
NO_PLOTS = "No plots: they need matplotlib (pip install 'tfcompress[plots]')."


def write_reports(
    result: CompressResult, recipe: Recipe, flatbuffer: bytes, float_flatbuffer: bytes, folder: Path
) -> None:
    """Write the plots, `report.md` and `report.html` (plots embedded as base64) into `folder`.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tfcompress.recipe import compress
        >>> from tfcompress.models import build_digits_cnn
        >>> out = Path(tempfile.mkdtemp()) / "out"
        >>> recipe = {"steps": [{"convert": {"mode": "float16"}}]}
        >>> result = compress(build_digits_cnn(width=4), "digits", recipe, out, log=None)
        >>> sorted(p.name for p in out.iterdir() if p.suffix in (".md", ".html"))
        ['report.html', 'report.md']
    """
    points = [
        ("input (float32)", len(gzip.compress(float_flatbuffer, 9)), result.float_tflite_accuracy),
        (f"output ({result.mode})", len(gzip.compress(flatbuffer, 9)), result.tflite_accuracy),
    ]
    metric = _metrics(result)[0]

    def figure() -> Any:
        if metric == "accuracy":
            return plot_accuracy_vs_size(points, result.float_accuracy, "accuracy against size")
        return _error_vs_size_figure(points, result.float_accuracy, _first_label(result))

    if available("matplotlib"):  # the plots extra; the report says how to get them
        save_figure(figure(), folder / PLOTS[0])
        save_figure(_sparsity_figure(result.layer_sparsity), folder / PLOTS[1])
        save_figure(_edgetpu_figure(result.edgetpu, result.mode), folder / PLOTS[2])
    (folder / "report.md").write_text(markdown_report(result, recipe, folder))
    (folder / "report.html").write_text(html_report(result, recipe, folder))


def _metrics(result: CompressResult) -> list[str]:
    return [score.metric for score in result.scores] or ["accuracy"]


def _first_label(result: CompressResult) -> str:
    """The first output's metric, with the output's name when the model has several."""
    if len(result.scores) > 1:
        return f"'{result.scores[0].name}' {result.scores[0].metric}"
    return _metrics(result)[0]


def _summary_rows(result: CompressResult) -> list[tuple[str, str]]:
    metric = _first_label(result)
    rows = [
        (f"input model, Keras {metric}", f"{result.float_accuracy:.4f}"),
        ("input model as float32 TFLite", f"{result.float_tflite_bytes:,} bytes"),
        (f"model.tflite ({result.mode})", f"{result.tflite_bytes:,} bytes"),
        ("size ratio", f"{result.float_tflite_bytes / result.tflite_bytes:.2f}x smaller"),
        (f"model.tflite {metric} on LiteRT", f"{result.tflite_accuracy:.4f}"),
        ("held-out samples", f"{result.holdout_samples:,}"),
        ("float ops left", ", ".join(result.float_ops) or "none (full integer)"),
    ]
    if result.fidelity is not None:  # the file against the compressed Keras model
        verdict = "matches" if result.fidelity.passed else "does NOT match"
        worst = "; ".join(output.describe() for output in result.fidelity.outputs)
        rows.append((f"model.tflite {verdict} the compressed Keras model", worst))
    if result.target == "micro":
        rows += _micro_rows(result)
    if result.edgetpu is not None:
        tpu = result.edgetpu
        rows.append(
            (
                "Edge TPU (offline estimate)",
                f"{tpu['tpu_op_count']} ops on the TPU, {tpu['cpu_op_count']} on the CPU",
            )
        )
    return rows


def _micro_rows(result: CompressResult) -> list[tuple[str, str]]:
    """Flash and arena measured on TFLM, beside the recipe's budgets."""

    def budget(value: int | None) -> str:
        return "" if value is None else f" (budget {value:,})"

    return [
        ("target", "TensorFlow Lite Micro (static batch 1)"),
        ("flash on TFLM (model only)", f"{result.flash_bytes:,} bytes{budget(result.max_flash)}"),
        (
            "tensor arena on TFLM (measured)",
            f"{result.arena_bytes:,} bytes{budget(result.max_arena)}; "
            f"{result.recommended_arena_bytes:,} recommended (+25 %)",
        ),
        *(
            [("TFLM look-up tables", f"{result.compressed_tensors} weight tensor(s)")]
            if result.compressed_tensors
            else []
        ),
    ]


OUTPUT_COLUMNS = (
    "output",
    "metric",
    "input model (Keras)",
    "input model as float32 TFLite",
    "model.tflite on LiteRT",
)


def _output_rows(result: CompressResult) -> list[tuple[str, ...]]:
    """One row per output: its metric and the three figures (mae/mse: lower is better)."""
    return [
        (
            score.name,
            score.metric if score.metric == "accuracy" else f"{score.metric} (lower is better)",
            f"{score.float_keras:.4f}",
            f"{score.float_tflite:.4f}",
            f"{score.tflite:.4f}",
        )
        for score in result.scores
    ]


def _step_score(result: CompressResult, step: Any) -> str:
    if len(result.scores) > 1 and step.keras_scores:
        return ", ".join(f"{name} {value:.4f}" for name, value in step.keras_scores.items())
    return f"{step.keras_accuracy:.4f}"


def markdown_report(result: CompressResult, recipe: Recipe, folder: Path | None = None) -> str:
    """The report as Markdown (the plots are the PNG files beside it)."""
    lines = ["# tfcompress compress report", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in _summary_rows(result)]
    if len(result.scores) > 1:
        lines += ["", "## Outputs", "", "| " + " | ".join(OUTPUT_COLUMNS) + " |"]
        lines += ["|---|---|---:|---:|---:|"]
        lines += ["| " + " | ".join(row) + " |" for row in _output_rows(result)]
    after = "Keras scores after" if len(result.scores) > 1 else f"Keras {_metrics(result)[0]} after"
    lines += ["", "## Steps", "", f"| # | step | options | {after} | seconds |"]
    lines += ["|---:|---|---|---:|---:|"]
    for number, step in enumerate(result.steps, start=1):
        options = ", ".join(f"{k}={v}" for k, v in step.options.items())
        lines.append(
            f"| {number} | {step.name} | {options} | {_step_score(result, step)} | "
            f"{step.seconds:.1f} |"
        )
    lines += ["", "## Plots", ""]
    drawn = [name for name in PLOTS if folder is not None and (folder / name).exists()]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in drawn] or [NO_PLOTS]
    lines += [
        "",
        "## Recipe used (every default filled in)",
        "",
        "```yaml",
        recipe.to_yaml(),
        "```",
    ]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
img { max-width: 100%; display: block; margin: 1em 0; }
pre { background: #f4f4f4; padding: 1em; }
"""


def html_report(result: CompressResult, recipe: Recipe, folder: Path) -> str:
    """The report as one self-contained HTML page (PNG plots embedded as base64 data URLs)."""
    escape = html.escape
    summary = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>"
        for name, value in _summary_rows(result)
    )
    steps = "".join(
        f"<tr><td>{number}</td><td>{escape(step.name)}</td>"
        f"<td>{escape(', '.join(f'{k}={v}' for k, v in step.options.items()))}</td>"
        f"<td>{escape(_step_score(result, step))}</td><td>{step.seconds:.1f}</td></tr>"
        for number, step in enumerate(result.steps, start=1)
    )
    outputs = ""
    if len(result.scores) > 1:
        header = "".join(f"<th>{escape(c)}</th>" for c in OUTPUT_COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
            for row in _output_rows(result)
        )
        outputs = f"<h2>Outputs</h2><table><tr>{header}</tr>{body}</table>"
    after = "Keras scores after" if len(result.scores) > 1 else f"Keras {_metrics(result)[0]} after"
    images = (
        "".join(
            f"<h3>{escape(name.removesuffix('.png').replace('_', ' '))}</h3>"
            f'<img alt="{escape(name)}" src="data:image/png;base64,'
            f'{base64.b64encode((folder / name).read_bytes()).decode("ascii")}">'
            for name in PLOTS
            if (folder / name).exists()
        )
        or f"<p>{escape(NO_PLOTS)}</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>tfcompress compress report</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>tfcompress compress report</h1>"
        f"<table>{summary}</table>{outputs}"
        "<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>options</th>"
        f"<th>{escape(after)}</th><th>seconds</th></tr>{steps}</table>"
        f"<h2>Plots</h2>{images}"
        f"<h2>Recipe used (every default filled in)</h2><pre>{escape(recipe.to_yaml())}</pre>"
        "</body></html>\n"
    )


def _error_vs_size_figure(
    points: list[tuple[str, float, float]], reference: float, metric: str
) -> Any:
    """Error (mae/mse, lower is better) against gzip size, one labelled point per file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, size, error in points:
        axis.scatter(size / 1024, error)
        axis.annotate(label, (size / 1024, error), textcoords="offset points", xytext=(5, 5))
    axis.axhline(reference, linestyle="--", color="grey", label="Keras float")
    axis.legend(loc="upper right")
    axis.set_xscale("log")
    axis.set_xlabel("gzip size (KiB)")
    axis.set_ylabel(f"{metric} (lower is better)")
    axis.set_title(f"{metric} against size")
    figure.tight_layout()
    return figure


def _sparsity_figure(sparsity: dict[str, float]) -> Any:
    import matplotlib.pyplot as plt

    names = list(sparsity)
    figure, axis = plt.subplots(figsize=(7, 0.8 + 0.35 * max(len(names), 2)))
    if names:
        axis.barh(range(len(names)), [sparsity[n] * 100 for n in names], color="#3b7dd8")
        axis.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=8)
        axis.invert_yaxis()
    else:
        axis.text(0.5, 0.5, "no weight tensors in the file", ha="center", transform=axis.transAxes)
    axis.set_xlim(0, 100)
    axis.set_xlabel("zero weights in the .tflite file (%)")
    axis.set_title("per-layer sparsity")
    figure.tight_layout()
    return figure


def _edgetpu_figure(edgetpu: dict[str, Any] | None, mode: str) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ops = edgetpu["ops"] if edgetpu else []
    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.25 * max(len(ops), 2)))
    if not ops:
        axis.text(
            0.5,
            0.5,
            f"no Edge TPU map: mode '{mode}' is not full integer (use int8 or edgetpu)",
            ha="center",
            transform=axis.transAxes,
        )
        axis.set_axis_off()
    else:
        colours = ["#2e9e44" if op["on_tpu"] else "#d8573b" for op in ops]
        axis.barh(range(len(ops)), [1] * len(ops), color=colours)
        axis.set_yticks(range(len(ops)), [f"{op['index']} {op['name']}" for op in ops], fontsize=8)
        axis.invert_yaxis()
        axis.set_xticks([])
        axis.legend(
            handles=[Patch(color="#2e9e44", label="TPU"), Patch(color="#d8573b", label="CPU")],
            loc="lower right",
            fontsize=8,
        )
    axis.set_title("Edge TPU map (offline estimate from Coral's published rules)")
    figure.tight_layout()
    return figure


def _short(name: str, width: int = 40) -> str:
    """The layer part of a converter tensor name ('model/quant_conv1_1/FakeQuant...' -> 'quant_conv1_1')."""
    parts = [p for p in name.split(";")[0].split("/") if p and not p[0].isupper()]
    label = parts[-1] if len(parts) > 1 else name
    return label if len(label) <= width else "..." + label[-(width - 3) :]
