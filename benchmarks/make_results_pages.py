"""Rebuild the README's results tables from benchmarks/results/*.json.

Run: .venv/bin/python benchmarks/make_results_pages.py
Each table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in README.md.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def convert_table(data: dict) -> str:
    digits, mobilenet = data["digits_cnn"], data["mobilenet_v2_035_96"]
    lines = [
        f"digits CNN, Keras float accuracy {digits['keras_accuracy']:.4f}:",
        "",
        "| mode | LiteRT accuracy | drop (pp) | top-1 agreement with Keras | bytes | float ops |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, row in digits["modes"].items():
        lines.append(
            f"| {mode} | {row['accuracy']:.4f} | {row['accuracy_drop_pp']:.2f} | "
            f"{row['top1_agreement_with_keras']:.4f} | {row['bytes']:,} | {row['float_ops']} |"
        )
    lines += [
        "",
        "MobileNetV2 (alpha 0.35, 96x96, `weights=None`), 1 thread, XNNPACK:",
        "",
        "| mode | bytes | median ms | p90 ms |",
        "|---|---:|---:|---:|",
    ]
    for mode in ("float32", "int8"):
        row = mobilenet[mode]
        lines.append(
            f"| {mode} | {row['bytes']:,} | {row['median_ms']:.3f} | {row['p90_ms']:.3f} |"
        )
    lines += [
        "",
        f"int8 / float32: size {mobilenet['int8_over_float32_bytes']:.3f}x, median latency "
        f"{mobilenet['int8_over_float32_median_latency']:.3f}x (digits CNN size "
        f"{digits['int8_over_float32_bytes']:.3f}x).",
    ]
    return "\n".join(lines)


def sharing_table(data: dict) -> str:
    ours, theirs = data["tfcompress"], data["tfmot"]
    lines = [
        f"digits CNN, {data['settings']['clusters']} clusters, "
        f"{data['settings']['fine_tune_epochs']} fine-tuning epochs, int8 on LiteRT:",
        "",
        "| | float Keras | dense int8 acc. | clustered int8 acc. | gzip clustered / dense | max unique values per kernel |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, side in (("tfcompress", ours), ("tfmot", theirs)):
        if "error" in side:
            lines.append(f"| {name} | failed: {side['error']} | | | | |")
            continue
        lines.append(
            f"| {name} | {side['float_keras_accuracy']:.4f} | {side['dense_int8']['accuracy']:.4f} | "
            f"{side['clustered_int8']['accuracy']:.4f} | {side['clustered_gzip_over_dense_gzip']:.3f}x | "
            f"{side['clustered_int8']['max_unique_values_per_kernel']} |"
        )
    factor = ours["factorization"]
    lines += [
        "",
        f"Low-rank factorization, Dense parameters {factor['dense_parameters_before']:,} -> "
        f"{factor['dense_parameters_after']:,} ({factor['dense_parameter_ratio']:.2f}x): Keras accuracy "
        f"{factor['keras_accuracy_before_fine_tuning']:.4f} before and "
        f"{factor['keras_accuracy_after_fine_tuning']:.4f} after 5 fine-tuning epochs; int8 on LiteRT "
        f"{factor['int8']['accuracy']:.4f}.",
    ]
    return "\n".join(lines)


def pruning_table(data: dict) -> str:
    ours, theirs = data["tfcompress"], data["tfmot"]
    dense = data["dense_int8"]
    lines = [
        f"digits CNN, float Keras {data['float_keras_accuracy']:.4f}, dense int8 "
        f"{dense['accuracy']:.4f} ({dense['gzip_bytes']:,} gzip bytes); schedule: "
        f"{data['settings']['schedule']}, {data['settings']['prune_epochs']} epochs, same for both:",
        "",
        "| sparsity | tfcompress int8 acc. | tfmot int8 acc. | sparsity in int8 file (ours / tfmot) | gzip bytes (ours / tfmot) |",
        "|---|---:|---:|---:|---:|",
    ]
    for target in ("0.5", "0.8"):
        mine, peer = ours[target]["int8"], theirs.get(target, {})
        lines.append(
            f"| {float(target):.0%} | {mine['accuracy']:.4f} | {peer.get('accuracy', float('nan')):.4f} | "
            f"{mine['kernel_sparsity']:.3f} / {peer.get('kernel_sparsity', float('nan')):.3f} | "
            f"{mine['gzip_bytes']:,} / {peer.get('gzip_bytes', 0):,} |"
        )
    structured = data["structured"]
    qat = data["qat_of_80pct_sparse_model"]
    step = data["mobilenetv2_035_step_ms"]
    lines += [
        "",
        f"Structured pruning of 50% of channels: parameters {structured['params_ratio']:.3f}x, FLOPs "
        f"{structured['flops_ratio']:.3f}x, int8 file {structured['int8_bytes_ratio']:.3f}x, int8 accuracy "
        f"{structured['int8']['accuracy']:.4f} after fine-tuning.",
        f"QAT of the 80%-sparse model: `quantize_model` alone keeps "
        f"{qat['plain_qat']['kernel_sparsity']:.3f} sparsity in the int8 file (accuracy "
        f"{qat['plain_qat']['accuracy']:.4f}); with the `PreserveSparsity` callback "
        f"{qat['sparsity_preserving_qat']['kernel_sparsity']:.3f}.",
        "",
        f"MobileNetV2 0.35 96x96 training step (median ms, batch 16, SGD; best of {step.get('rounds', 1)} "
        "rounds that alternate between the libraries, each in a fresh process):",
        "",
        "| | plain model | pruned, mask update every 100 steps | pruned, every step |",
        "|---|---:|---:|---:|",
        f"| tfcompress (Keras 3) | {step['tfcompress']['plain']:.0f} | "
        f"{step['tfcompress']['pruned_frequency_100']:.0f} | {step['tfcompress']['pruned_frequency_1']:.0f} |",
        f"| tfmot (tf_keras) | {step['tfmot']['plain']:.0f} | {step['tfmot']['pruned_frequency_100']:.0f} | "
        f"{step['tfmot']['pruned_frequency_1']:.0f} |",
        "",
        f"The pruned Keras 3 model trains with `FusedBatchNormalization` (plain Keras 3 BatchNormalization "
        f"is unfused); against the same model with those layers ({step['tfcompress'].get('plain_same_layers', float('nan')):.0f} ms) "
        f"the wrapper costs {step['tfcompress']['overhead_frequency_100']:.2f}x "
        f"(tfmot's {step['tfmot']['overhead_frequency_100']:.2f}x) at the default frequency. Timings on a "
        "shared 2-core machine are noisy.",
    ]
    return "\n".join(lines)


def distill_table(data: dict) -> str:
    qat = data["qat_student_int8"]
    return "\n".join(
        [
            f"digits; teacher {data['teacher']['params']:,} parameters, student "
            f"{data['student']['params']:,} ({data['student']['params_ratio']:.3f}x), "
            f"{data['student']['epochs']} epochs, alpha {data['settings']['alpha']}, "
            f"temperature {data['settings']['temperature']}, seeds {data['settings']['seeds']}:",
            "",
            "| teacher | student distilled (mean) | student from scratch (mean) |",
            "|---:|---:|---:|",
            f"| {data['teacher_accuracy']:.4f} | {data['distilled_accuracy_mean']:.4f} | "
            f"{data['scratch_accuracy_mean']:.4f} |",
            "",
            f"QAT student ({qat['recipe']}): Keras {qat['keras_accuracy']:.4f}, int8 on LiteRT "
            f"{qat['int8_accuracy']:.4f} ({qat['int8_bytes']:,} bytes).",
        ]
    )


def qat_table(data: dict) -> str:
    ours, theirs = data["tfcompress"], data["tfmot"]
    lines = [
        f'`quantize_model` -> a few training steps -> `convert(mode="int8")` on `keras.applications` '
        f"(`weights=None`, small inputs): zero float ops for **{data['summary']['tfcompress_zero_float_ops']} "
        f"of {data['summary']['models']}** models (tfmot: {data['summary']['tfmot_zero_float_ops']}).",
        "",
        "| model | tfcompress | tfmot |",
        "|---|---|---|",
    ]
    for name, mine in ours["coverage"].items():
        peer = theirs["coverage"].get(name, {})
        ours_text = (
            "zero float ops"
            if mine.get("ok")
            else (
                f"float ops: {', '.join(mine.get('float_ops', []))}"
                if "float_ops" in mine
                else f"failed: {mine.get('error', '')[:80]}"
            )
        )
        peer_text = (
            "zero float ops"
            if peer.get("ok")
            else (
                f"float ops: {', '.join(peer.get('float_ops', []))}"
                if "float_ops" in peer
                else f"fails: {peer.get('error', '').splitlines()[0][:90]}"
            )
        )
        lines.append(f"| {name} | {ours_text} | {peer_text} |")
    digits = ours["digits"]
    lines += [
        "",
        f"digits CNN: float Keras {digits['float_keras_accuracy']:.4f}, QAT int8 on LiteRT "
        f"{digits['qat_int8_litert_accuracy']:.4f} (tfmot QAT {theirs['digits']['qat_int8_litert_accuracy']:.4f}); "
        f"Keras QAT vs its int8 file top-1 agreement {digits['keras_vs_tflite_top1_agreement']:.4f}.",
        *_qat_options(ours.get("options", [])),
        f"MobileNetV2 0.35 96x96 training step with Adam (best of {ours['step_time_s'].get('rounds', 1)} rounds "
        "alternating between the libraries, each in a fresh process), "
        f"QAT / float: tfcompress {ours['step_time_s']['ratio']:.2f}x "
        f"({ours['step_time_s']['qat'] * 1000:.0f} / {ours['step_time_s']['float'] * 1000:.0f} ms), tfmot "
        f"{theirs['step_time_s']['ratio']:.2f}x ({theirs['step_time_s']['qat'] * 1000:.0f} / "
        f"{theirs['step_time_s']['float'] * 1000:.0f} ms). tfcompress folds BatchNormalization during QAT, "
        "which Keras 3 runs unfused in the float model.",
    ]
    return "\n".join(lines)


def _qat_options(rows: list) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "QAT options on the same float digits CNN, each trained 3 epochs, measured on LiteRT:",
        "",
        "| weights | step sizes | activations | Keras acc. | LiteRT acc. | top-1 agreement | gzip bytes |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        bits = {1: "1 bit (binary)", 2: "2 bits (ternary)"}.get(
            row["weight_bits"], f"{row['weight_bits']} bits"
        )
        lines.append(
            f"| {bits} | {'learned (LSQ)' if row['learned_step'] else 'min/max'} | "
            f"{row['activation_bits']} bits ({row['mode']}) | {row['keras_accuracy']:.4f} | "
            f"{row['litert_accuracy']:.4f} | {row['keras_vs_tflite_top1_agreement']:.4f} | "
            f"{row['gzip_bytes']:,} |"
        )
    return [*lines, ""]


ZOO_COLUMNS = (
    ("float", "float32"),
    ("ptq_int8", "PTQ int8"),
    ("qat_int8", "QAT int8"),
    ("prune_50", "50% pruned int8"),
    ("prune_80", "80% pruned int8"),
    ("cluster_16", "16 clusters int8"),
    ("distill", "distilled student int8"),
    ("student_scratch", "student alone int8"),
)


def _zoo_cell(mine: float | None, peer: float | None) -> str:
    def text(value: float | None) -> str:
        return "fails" if value is None else f"{value:.3f}"

    return f"{text(mine)} / {text(peer)}"


def zoo_table(data: dict) -> str:
    settings, table, checks = data["settings"], data["mean_litert_accuracy"], data["checks"]
    epochs = settings["float_epochs"]
    lines = [
        f"LiteRT test accuracy on the digits, mean of seeds {settings['seeds']}, "
        f"**tfcompress / tfmot** from the same float model (float epochs per architecture "
        f"{', '.join(f'{a} {e}' for a, e in epochs.items())}; {settings['fine_tune_epochs']} "
        "fine-tuning epochs for QAT, pruning and clustering; PTQ on tfmot's side is the plain "
        "TFLiteConverter; tfmot has no distiller, so its side is a keras.io-style one on tf_keras). "
        '"fails" means at least one seed raised; `benchmarks/results/zoo.json` has the message.',
        "",
        "| architecture | " + " | ".join(title for _, title in ZOO_COLUMNS) + " |",
        "|---|" + "---:|" * len(ZOO_COLUMNS),
    ]
    for arch, rows in table.items():
        cells = [
            _zoo_cell(rows.get(key, {}).get("tfcompress"), rows.get(key, {}).get("tfmot"))
            for key, _ in ZOO_COLUMNS
        ]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    lines += _zoo_file_facts(data["architectures"])
    failing = checks["failing_rows"]
    lines += [
        "",
        f"QAT int8 within 0.5 pp of float Keras: "
        f"{sum(checks['qat_int8_ge_float_minus_0_5pp'].values())} of "
        f"{len(checks['qat_int8_ge_float_minus_0_5pp'])} architectures; QAT, pruned and "
        f"clustered rows within 0.5 pp of tfmot's or better: "
        f"{sum(checks['ge_tfmot_minus_0_5pp'].values())} of {len(checks['ge_tfmot_minus_0_5pp'])}"
        + (f" (not met: {', '.join(failing)})." if failing else "."),
    ]
    return "\n".join(lines)


def _zoo_side_facts(rows: list[dict]) -> list[str]:
    """QAT float ops, QAT agreement, 80% file sparsity, most values per clustered kernel."""

    def values(technique: str, key: str) -> list:
        found = [row.get(technique, {}).get(key) for row in rows]
        return [] if any(v is None for v in found) else found

    float_ops = values("qat_int8", "float_ops")
    agreement = values("qat_int8", "keras_vs_tflite_top1_agreement")
    sparsity = values("prune_80", "kernel_sparsity")
    unique = values("cluster_16", "max_unique_values_per_kernel")
    return [
        (", ".join(sorted({op for ops in float_ops for op in ops})) or "none")
        if float_ops
        else "-",
        f"{sum(agreement) / len(agreement):.3f}" if agreement else "-",
        f"{sum(sparsity) / len(sparsity):.3f}" if sparsity else "-",
        str(max(unique)) if unique else "-",
    ]


def _zoo_file_facts(architectures: dict) -> list[str]:
    lines = [
        "",
        "What the files hold (tfcompress / tfmot; mean over seeds, float ops over all seeds):",
        "",
        "| architecture | float ops in QAT int8 | QAT Keras-vs-LiteRT top-1 agreement | "
        "sparsity in the 80% int8 file | max values per clustered kernel |",
        "|---|---|---:|---:|---:|",
    ]
    for arch, result in architectures.items():
        seeds = result["seeds"].values()
        mine = _zoo_side_facts([seed["tfcompress"] for seed in seeds])
        peer = _zoo_side_facts([seed["tfmot"] for seed in seeds])
        cells = [f"{a} / {b}" for a, b in zip(mine, peer, strict=True)]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return lines


def generic_table(data: dict) -> str:
    """Fallback for results without a dedicated formatter: the targets and the command."""
    lines = [f"Command: `{data.get('command', '')}`", ""]
    for key, value in data.get("targets_met", {}).items():
        lines.append(f"- {key}: {'met' if value else 'NOT met'}")
    return "\n".join(lines)


def coverage_table(data: dict) -> str:
    """How many coverage-matrix rows each technique passes, ours beside tfmot's."""
    ours, tfmot = data["ours"], data["tfmot"]
    only_ours = sum(
        1
        for row_id, row in ours.items()
        if row.get("qat", {}).get("ok") and not tfmot.get(row_id, {}).get("qat", {}).get("ok")
    )
    lines = [
        f"{len(ours)} rows (every `keras.layers` layer, 1-D/2-D/3-D variants; details in "
        "[docs/reference/coverage.md](docs/reference/coverage.md)):",
        "",
        "| technique | tfcompress rows that pass | tfmot rows that pass |",
        "|---|---:|---:|",
    ]
    for technique, counts in data["summary"].items():
        theirs = "n/a" if counts["tfmot"] is None else counts["tfmot"]
        lines.append(f"| {technique} | {counts['ours']} / {counts['rows']} | {theirs} |")
    lines += [
        "",
        f"Rows where tfcompress QAT converts to full int8 and tfmot's does not: {only_ours}.",
    ]
    return "\n".join(lines)


def recurrent_table(data: dict) -> str:
    """Recurrent models: agreement, float ops and LiteRT latency of each file."""
    lines = [
        "| model | file | top-1 agreement with Keras | float ops | bytes | median ms | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, rows in data["models"].items():
        for name in (
            "float32",
            "float32_unrolled",
            "int8_ptq",
            "int16x8_ptq",
            "int8_qat",
            "int8_lstm_kernel",
        ):
            row = rows.get(name)
            if row is None:
                continue
            speedup = row.get("speedup_vs_float32", 1.0)
            lines.append(
                f"| {model} | {name} | {row['top1_agreement_with_keras']:.3f} | "
                f"{row['float_ops']} | {row['bytes']:,} | {row['median_ms']:.4f} | {speedup:.2f}x |"
            )
    return "\n".join(lines)


FORMATTERS: dict[str, Callable[[dict], str]] = {
    "coverage": coverage_table,
    "recurrent": recurrent_table,
    "convert": convert_table,
    "sharing": sharing_table,
    "pruning": pruning_table,
    "distill": distill_table,
    "qat": qat_table,
    "zoo": zoo_table,
}


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for path in sorted(RESULTS.glob("*.json")):
        name = path.stem
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            continue
        table = FORMATTERS.get(name, generic_table)(json.loads(path.read_text()))
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    handle, temporary = tempfile.mkstemp(prefix=".README.", dir=ROOT)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, readme)


if __name__ == "__main__":
    main()
