"""Write the results pages of the documentation, and the README's results table, from the JSON.

Run: .venv/bin/python benchmarks/make_results_pages.py [--check]

Every figure on `docs/results/*.md` and between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` in README.md is formatted here from `benchmarks/results/*.json`, as each
benchmark script wrote it; nothing on those pages is typed by hand. `--check` writes nothing and
exits with status 1 when a page differs from what the JSON gives (the docs tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
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


def coverage_table(data: dict, link: str = "../reference/coverage.md") -> str:
    """How many coverage-matrix rows each technique passes, ours beside tfmot's."""
    ours, tfmot = data["ours"], data["tfmot"]
    only_ours = sum(
        1
        for row_id, row in ours.items()
        if row.get("qat", {}).get("ok") and not tfmot.get(row_id, {}).get("qat", {}).get("ok")
    )
    lines = [
        f"{len(ours)} rows (every `keras.layers` layer, 1-D/2-D/3-D variants; every row in "
        f"[the coverage matrix]({link})):",
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


def _seeds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def recurrent_agreement_table(data: dict) -> str:
    """Top-1 agreement of each recurrent file with its Keras model, per seed."""
    models = data["models"]
    seeds = sorted({seed for model in models.values() for seed in model["seeds"]}, key=int)
    has_qat = any("qat" in run for model in models.values() for run in model["seeds"].values())
    lines = [
        f"{data['task']}; mode `{data['mode']}`, route `{data['route']}`, {data['units']} units, "
        f"{data['epochs']} epochs; seeds {' / '.join(seeds)}.",
        "",
        "| model | PTQ file vs float Keras | float ops |"
        + (" QAT file vs QAT Keras | float ops |" if has_qat else ""),
        "|---|---|---:|" + ("---|---:|" if has_qat else ""),
    ]
    for name, model in models.items():
        cells = [name]
        for kind in ("ptq", "qat") if has_qat else ("ptq",):
            runs = [model["seeds"].get(seed, {}).get(kind, {}) for seed in seeds]
            if any("error" in run for run in runs):
                failed = sum("error" in run for run in runs)
                cells += [f"fails on {failed} of {len(runs)} seeds", "-"]
                continue
            cells.append(" / ".join(_seeds(run.get("agreement")) for run in runs))
            ops = {run.get("float_ops") for run in runs}
            cells.append(", ".join(str(op) for op in sorted(ops, key=str)))
        lines.append("| " + " | ".join(cells) + " |")
    errors = {
        run[kind]["error"]
        for model in models.values()
        for run in model["seeds"].values()
        for kind in ("ptq", "qat")
        if "error" in run.get(kind, {})
    }
    for error in sorted(errors):
        lines += ["", f"The failing runs raised: {error}"]
    return "\n".join(lines)


def qat_step_profile_table(data: dict) -> str:
    """Share of a training step's kernel time per op group, float against QAT."""
    lines = [
        f"Batch {data['batch']}, {data['steps']} profiled step(s), `jit_compile={data['jit_compile']}`; "
        "share of kernel time per op group:",
        "",
        "| model | step | kernel s | conv / matmul | fake quant | BatchNorm | other |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, result in data["models"].items():
        for step in ("float", "qat"):
            row = result[step]
            share = row["group_share"]
            lines.append(
                f"| {model} | {step} | {row['kernel_s']:.2f} | {share.get('conv_matmul', 0):.1%} | "
                f"{share.get('fake_quant', 0):.1%} | {share.get('batchnorm', 0):.1%} | "
                f"{share.get('other', 0):.1%} |"
            )
    return "\n".join(lines)


def file_size_table(data: dict) -> str:
    """Bytes of each file before and after repeated vectors are stored once."""
    lines = [
        "| model / mode | bytes without sharing | bytes written | smaller by | identical LiteRT outputs | time s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, row in data["models"].items():
        lines.append(
            f"| {name} | {row['bytes_before']:,} | {row['bytes_after']:,} | {row['smaller_by']:.1%} | "
            f"{'yes' if row['identical_outputs'] else 'no'} | {row['share_seconds']:.3f} |"
        )
    return "\n".join(lines)


def isolation_table(data: dict) -> str:
    """Cost of running the converter in a forked child process, and the recipe in a process of
    its own."""
    lines = [
        f"{data['model']}, {data['calibration_samples']} calibration samples, best of "
        f"{data['rounds']} rounds:",
        "",
        "| mode | isolated s | in-process s | isolated / in-process | extra s |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, row in data["modes"].items():
        lines.append(
            f"| {mode} | {row['isolated_s']:.2f} | {row['in_process_s']:.2f} | "
            f"{row['isolated_over_in_process']:.3f}x | {row['extra_s']:.3f} |"
        )
    stress = data.get("stress")
    lines += ["", f"Fork round trip: {data['fork_round_trip_s']:.3f} s."]
    if stress:
        counts = ", ".join(f"{k} {v}" for k, v in stress["conversions_per_model"].items())
        lines[-1] += (
            f" Stress run: {counts} conversions, longest "
            + ", ".join(f"{k} {v:.2f} s" for k, v in stress["longest_s"].items())
            + f", {stress['total_s']:.1f} s in all."
        )
    recipe = data.get("recipe")
    if recipe:
        lines += [
            "",
            f"`tfc.recipe.compress` in a Python process of its own (`isolate=True`) or in-process: "
            f"{recipe['model']} on {recipe['data']}, recipe `{recipe['recipe']}`, two runs in one "
            "process (the first isolated run starts the recipe's process), best of "
            f"{data['rounds']} rounds:",
            "",
            "| run | isolated s | in-process s | isolated / in-process | extra s |",
            "|---|---:|---:|---:|---:|",
        ]
        for run, row in recipe["runs"].items():
            lines.append(
                f"| {run} | {row['isolated_s']:.2f} | {row['in_process_s']:.2f} | "
                f"{row['isolated_over_in_process']:.3f}x | {row['extra_s']:.2f} |"
            )
    return "\n".join(lines)


def inspect_table(data: dict) -> str:
    """Wall time of `tfcompress inspect` against the same after importing TensorFlow."""
    rows = (
        ("`tfcompress inspect FILE` (loads neither TensorFlow nor Keras)", "cli_inspect_wall"),
        (
            "`tfcompress inspect FILE` with TensorFlow imported first",
            "cli_inspect_wall_with_tensorflow_imported",
        ),
        ("`tfc.inspect(FILE)` in a running process", "in_process_inspect"),
    )
    lines = [
        f"A {data['file_bytes']:,}-byte float file, {data['runs']} runs ({data['rounds']}):",
        "",
        "| | median s | min s | max s |",
        "|---|---:|---:|---:|",
    ]
    for title, key in rows:
        row = data[key]
        lines.append(
            f"| {title} | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['max_s']:.3f} |"
        )
    lines += [
        "",
        f"Speed-up of the command line: {data['cli_speedup_vs_tensorflow_import']:.1f}x; heavy modules "
        f"loaded by `tfcompress inspect`: {', '.join(data['heavy_modules_loaded_by_cli_inspect']) or 'none'}.",
    ]
    return "\n".join(lines)


def debug_table(data: dict) -> str:
    """The debugger on nets with one layer made int8-sensitive."""
    lines = [
        "One layer of a trained net made int8-sensitive (an outlier channel that keeps the float "
        f"function); {data['calibration_samples']} calibration samples:",
        "",
        "| outlier factor | runs | sensitive layer ranked first | int8 accuracy gap (pp) | runs with a gap >= 1 pp | of those, >= 80% of the gap recovered by keeping the layer float | least gap recovered | `suggest_keep_float` meets 1 pp |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for key, row in data["summary"].items():
        low, high = row["gap_pp_range"]
        lines.append(
            f"| {key.removeprefix('factor_')} | {row['runs']} | {row['ranked_first']} | {low} to {high} | "
            f"{row['runs_with_gap_ge_1pp']} | {row['recovered_80pct_of_those']} | "
            f"{row['min_gap_recovered']:.1%} | {row['suggestion_target_met']} |"
        )
    lines += [
        "",
        "| architecture | seed | factor | layer | float acc. | int8 acc. | layer kept float | `suggest_keep_float` | debugger s |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for run in data["runs"]:
        lines.append(
            f"| {run['arch']} | {run['seed']} | {run['factor']:g} | {run['sensitive_layer']} | "
            f"{run['float_accuracy']:.4f} | {run['int8_accuracy']:.4f} | {run['keep_float_accuracy']:.4f} | "
            f"{', '.join(run['suggested_keep_float']) or '-'} ({run['suggested_accuracy']:.4f}) | "
            f"{run['debug_seconds']:.2f} |"
        )
    timing = data.get("timing_mobilenetv2")
    if timing:
        lines += [
            "",
            f"{timing['model']}: {timing['rows']} rows, {timing['samples']} samples "
            f"({timing['isolated_samples']} isolated), {timing['debug_total_seconds']:.2f} s including "
            f"{timing['calibrate_seconds']:.2f} s of calibration.",
        ]
    return "\n".join(lines)


PTQ_RECOVERY_ROWS = (
    ("float (Keras)", "float"),
    ("int8 per-channel", "int8_per_channel"),
    ("per-tensor int8, naive", "per_tensor_naive"),
    ("per-tensor int8, equalize (ReLU6 pairs skipped)", "per_tensor_equalize_relu6_skip"),
    ("per-tensor int8, equalize", "per_tensor_equalize"),
    ("per-tensor int8, bias correction only", "per_tensor_bias_correction_only"),
    ("per-tensor int8, fold + equalize + bias correction", "per_tensor_equalize_bias_correction"),
    ("4-bit weights, round-to-nearest", "w4_nearest"),
    ("4-bit weights, round-to-nearest + bias correction", "w4_nearest_bias_correction"),
    ("4-bit weights, AdaRound", "w4_adaround"),
    ("4-bit weights, AdaRound + bias correction", "w4_adaround_bias_correction"),
    (
        "INT4 file from `convert(optimize=..., int4_weights=True)`",
        "w4_adaround_convert_optimize_int4",
    ),
)


def ptq_recovery_table(data: dict) -> str:
    """Accuracy on LiteRT after each recovery step, mean of the seeds."""
    mean = data["mean"]
    lines = [
        f"{data['model']}, {data['calibration_samples']} calibration samples, "
        f"{data['adaround_iterations']} AdaRound iterations, accuracy on LiteRT, mean of "
        f"{data['seeds_done']} seeds:",
        "",
        "| setting | accuracy |",
        "|---|---:|",
    ]
    for title, key in PTQ_RECOVERY_ROWS:
        if key in mean:
            lines.append(f"| {title} | {mean[key]:.4f} |")
    lines += [
        "",
        f"Seconds per step (mean): fold {mean['fold_s']:.2f}, equalize {mean['equalize_s']:.2f}, bias "
        f"correction {mean['bias_correction_s']:.2f}, AdaRound {mean['adaround_s']:.2f}; INT4 file "
        f"{mean['int4_file_bytes']:,.0f} bytes.",
    ]
    return "\n".join(lines)


def ptq_recovery_dfq_table(data: dict) -> str:
    """Per-channel range spread of folded depthwise kernels and per-tensor int8 accuracy."""
    lines = [
        f"{data['model']}, {data['calibration_samples']} calibration samples; recipes: "
        + "; ".join(f"{k}: {v}" for k, v in data["recipes"].items())
        + ". Spread: a depthwise kernel's largest over smallest per-channel range after BatchNorm folding.",
        "",
        "| recipe | seed | epochs | float | max spread | median spread | int8 per-channel | per-tensor naive | per-tensor, equalize + bias correction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        for epochs, point in row["points"].items():
            lines.append(
                f"| {row['recipe']} | {row['seed']} | {epochs} | {point['float']:.4f} | "
                f"{point['max_spread']:.1f}x | {point['median_spread']:.1f}x | {point['int8_per_channel']:.4f} | "
                f"{point['per_tensor_naive']:.4f} | {point['per_tensor_equalize_bias_correction']:.4f} |"
            )
    collapsed = data["naive_per_tensor_collapsed_runs"]
    lines += [
        "",
        f"Runs where naive per-tensor int8 collapsed: {len(collapsed)} of {data['runs_done']}.",
    ]
    return "\n".join(lines)


def _aq_figure(cell: dict) -> str:
    if "error" in cell:
        return "does not run"
    if cell["metric"] == "sqnr_db":
        return f"{cell['value']:.1f} dB"
    return f"{cell['value']:.3f}"


def _aq_margin(cell: dict) -> str:
    if cell.get("margin_rows") is None:
        return f"{cell['value'] - cell['target']:+.1f} dB"
    word = "met by" if cell["margin_rows"] >= 0 else "missed by"
    return f"{word} {abs(cell['margin_rows'])} of {cell['of']} rows"


def auto_quantize_table(data: dict) -> str:
    """auto_quantize's choice per model and seed: the held-out verdict, what the search rows said,
    and the chosen file on each runtime."""
    lines = [
        f"`max_accuracy_drop={data['max_accuracy_drop']}` on every output (the worst decides); "
        f"{data['runs']} runs. Target met on the held-out rows: {data['held_out_met']}; claimed "
        f"by the search rows: {data['search_claimed_met']}; claimed by the search rows but missed "
        f"on the held-out rows: {data['claimed_on_search_but_missed_held_out']}; no larger than "
        f"the plain int8 file: {data['no_larger_than_plain_int8']}.",
        "",
        "| model / seed | chosen | size / plain int8 | deciding output | held-out figure (target) | held-out margin | search rows said | XNNPACK | reference kernels | TFLM | seconds |",
        "|---|---|---:|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for key, row in data["rows"].items():
        if "choice" not in row:
            lines.append(
                f"| {key} | {row.get('skipped') or row.get('error', '')[:80]} |" + " |" * 9
            )
            continue
        held, search = row["held_out"], row["search_claimed"]
        by_runtime = row["held_out_by_runtime"]
        lines.append(
            f"| {key} | {row['choice']} | {row['size_vs_plain_int8']:.2f}x | {held['output']} | "
            f"{_aq_figure(held)} ({held['target']:.3f}) | {_aq_margin(held)} | "
            f"{_aq_margin(search)} | "
            + " | ".join(_aq_figure(by_runtime[r]) for r in ("xnnpack", "reference", "micro"))
            + f" | {row['seconds']:.0f} |"
        )
    lines += [
        "",
        "Every candidate on the held-out rows, for the record (the choice never sees these "
        "figures): the deciding output's figure on the search rows and on the held-out rows.",
        "",
        "| model / seed | candidate | KB | search rows | held-out rows |",
        "|---|---|---:|---:|---:|",
    ]
    for key, row in data["rows"].items():
        for name, cell in row.get("candidates", {}).items():
            if "error" in cell:
                lines.append(f"| {key} | {name} | | failed: {cell['error'][:60]} | |")
                continue
            lines.append(
                f"| {key} | {name} | {cell['size_bytes'] / 1024:.1f} | "
                f"{_aq_figure(cell['search'])} | {_aq_figure(cell['held_out_for_the_record'])} |"
            )
    return "\n".join(lines)


def auto_quantize_int16_table(data: dict) -> str:
    """16-bit activations on chosen ops (AI Edge Quantizer), against int8 and int16 everywhere."""
    lines = [
        f"{data['model']}, seed {data['seed']} split, {data['held_out_rows']} held-out rows; "
        f"{data['figure']}.",
        "",
        "| file (AI Edge Quantizer) | bytes | QUANTIZE ops | XNNPACK | reference kernels |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in data["files"].items():
        lines.append(
            f"| {label} | {row['bytes']:,} | {row['quantize_ops']} | {row['xnnpack']:.3f} | "
            f"{row['reference']:.3f} |"
        )
    return "\n".join(lines)


def int16_layers_table(data: dict) -> str:
    """int8, 16 bits for the debugger's k worst layers, int16x8: mean over the seeds (range)."""

    def figure(entry: dict, key: str, digits: int) -> str:
        low, high = entry[key]["range"]
        text = f"{entry[key]['mean']:.{digits}f}"
        return text + (f" ({low:.{digits}f}-{high:.{digits}f})" if low != high else "")

    lines = [
        "Each file against the float Keras model on held-out rows, on "
        f"{data['runtime']}; the layers are ranked by `tfc.debug_quantization` on the "
        "calibration rows. Mean over the seeds (range).",
    ]
    for name, cells in data["summary"].items():
        seeds = len(data["runs"][name])
        rows = data["runs"][name][0]["rows"]
        lines += [
            "",
            f"**{name}** ({seeds} seeds, {rows} held-out rows)",
            "",
            "| file | agreement | SQNR (dB) | bytes |",
            "|---|---:|---:|---:|",
        ]
        for cell, entry in cells.items():
            if "[" in cell:
                label = f"`int16_layers`: the {cell.split('[')[1][:-1]} worst layers"
            else:
                label = f'`convert(..., "{cell}")`'
            if "error" in entry:
                lines.append(f"| {label} | refused: {entry['error'][:120]} | | |")
                continue
            lines.append(
                f"| {label} | {figure(entry, 'agreement', 3)} | {figure(entry, 'sqnr_db', 1)} "
                f"| {entry['bytes']['mean']:,.0f} |"
            )
    return "\n".join(lines)


def multiworker_table(data: dict) -> str:
    """Two workers against one process: largest absolute difference over all variables."""
    setup = data["setup"]
    lines = [
        f"{setup['workers']} workers, {setup['device']}, global batch {setup['global_batch']}, "
        f"{setup['epochs']} epochs on {setup['samples']} samples; model {setup['model']}; "
        f"multi-worker training with {setup['multi_worker_training']}.",
        "",
        "| scenario | worker 0 vs worker 1 | workers vs one process | wall s, 2 workers / 1 process |",
        "|---|---:|---:|---:|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['scenario']} | {row['max_abs_diff_worker0_vs_worker1']:.1e} | "
            f"{row['max_abs_diff_vs_single_process']:.1e} | {row['wall_s_two_workers']:.1f} / "
            f"{row['wall_s_single_process']:.1f} |"
        )
    lines += ["", f"Note: {data['note']}."]
    return "\n".join(lines)


def resume_table(data: dict) -> str:
    """Killed (SIGKILL) and resumed with BackupAndRestore."""
    lines = [
        f"{data['identical']} of {data['scenarios']} scenarios identical (tolerance {data['tolerance']:g}); "
        f"{data['epochs']} epochs of {data['steps_per_epoch']} steps. {data['note']}",
        "",
        "| scenario | identical | max abs difference (compared run) |",
        "|---|---|---:|",
    ]
    for row in data["rows"]:
        if "vs_replayed_max_abs" in row:
            difference = f"{row['vs_replayed_max_abs']:g} (replayed)"
        else:
            difference = f"{row['vs_uninterrupted_max_abs']:g} (uninterrupted)"
        lines.append(f"| {row['name']} | {'yes' if row['identical'] else 'no'} | {difference} |")
    return "\n".join(lines)


def model_kinds_table(data: dict) -> str:
    """Every model kind through every tool: works on every seed, and the file's worst figure."""
    cells = list(next(iter(data["kinds"].values())))
    lines = [
        "| model kind | " + " | ".join(cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    for kind, by_cell in data["kinds"].items():
        row = []
        for cell in cells:
            runs = by_cell[cell]
            errors = [run["error"] for run in runs if run.get("error")]
            if errors:
                row.append("fails: " + errors[0].split(":")[0])
                continue
            figures = [output for run in runs for output in run.get("outputs", {}).values()]
            agreements = [f["agreement"] for f in figures if f["agreement"] is not None]
            sqnr = min(f["sqnr_db"] for f in figures) if figures else None
            figure = f"{min(agreements):.3f}" if agreements else f"{sqnr:.1f} dB"
            row.append(("yes" if all(run["works"] for run in runs) else "warns") + f" ({figure})")
        lines.append(f"| {kind} | " + " | ".join(row) + " |")
    summary = data["summary"]
    lines += [
        "",
        f"Cells that work on every seed: **{summary['cells_that_work_on_every_seed']}** of "
        f"{summary['cells']}. A cell works when every call returns and the file matches its "
        "Keras model on held-out rows (`convert`'s own check; shown: the lowest top-1 agreement "
        "over the seeds, or the lowest SQNR for value outputs); *warns* is a file below the "
        "thresholds, which `convert` says, with the fix.",
    ]
    return "\n".join(lines)


def legacy_files_table(data: dict) -> str:
    """Keras 2 files: read by plain Keras 3, and by tfc.load_model (rebuilt, outputs compared)."""
    lines = [
        f"{data['files']} Keras 2 files: plain Keras 3 reads {data['keras3_reads']}, "
        f"`tfc.load_model` reads {data['tfc_load_model_reads']}; largest difference from "
        f"tf_keras's outputs on a held-out batch: {data['worst_max_abs_difference']:.2g}.",
        "",
        "| architecture | format | plain Keras 3 | `tfc.load_model` | max abs difference | s |",
        "|---|---|---|---|---:|---:|",
    ]
    for row in data["rows"]:
        keras3 = "reads" if row["keras3_load_model"] == "read" else "refuses"
        ours = "reads" if row["tfc_load_model"] == "read" else row["tfc_load_model"][:80]
        difference = row.get("max_abs_difference")
        shown = "" if difference is None else f"{difference:.2g}"
        lines.append(
            f"| {row['architecture']} | {row['format']} | {keras3} | {ours} | {shown} | "
            f"{row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def files_table(data: dict) -> str:
    """Damaged model files: what loading each one says."""
    damaged = data["damaged_files"]
    outcomes = ", ".join(f"{k}: {v}" for k, v in damaged["outcomes"].items())
    lines = [
        f"{damaged['count']} damaged files, {damaged['crashes']} crashes; outcomes: {outcomes}.",
        "",
        "| file | outcome |",
        "|---|---|",
    ]
    for row in damaged["rows"]:
        lines.append(f"| `{row['file']}` | {row['outcome']} |")
    for key, value in data.items():
        if key in ("benchmark", "command", "environment", "damaged_files") or not isinstance(
            value, dict
        ):
            continue
        facts = ", ".join(f"{k}: {v}" for k, v in value.items() if not isinstance(v, (dict, list)))
        if facts:
            lines += ["", f"{key.replace('_', ' ')}: {facts}."]
    return "\n".join(lines)


def memory_table(data: dict) -> str:
    """Peak resident memory of each configuration, in its own process."""
    setup = data["setup"]
    lines = [
        "; ".join(f"{k}: {v}" for k, v in setup.items()) + ".",
        "",
        "| model | configuration | peak MB | peak MB after build | ratio to float |",
        "|---|---|---:|---:|---:|",
    ]
    for row in data["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['mode']} | fails: {row['error'][:90]} | | |")
            continue
        peak = f"{row['peak_rss_mb']:.0f}" if "peak_rss_mb" in row else "-"
        lines.append(
            f"| {row['model']} | {row['mode']} | {peak} | {row['peak_rss_after_build_mb']:.0f} | "
            f"{row['ratio_to_float']:.3f} |"
        )
    return "\n".join(lines)


def _step(value: float | str) -> str:
    return f"fails ({value.split(':')[0]})" if isinstance(value, str) else f"{value * 1000:.0f} ms"


def _ratio(ratios: dict, key: str) -> str:
    return f"{ratios[key]:.2f}x" if key in ratios else "-"


def speed_train_table(data: dict) -> str:
    """Training step time of QAT and pruning as a multiple of the same library's float step."""
    lines = []
    convert = data.get("convert")
    if convert:
        lines += [
            f"int8 calibration and conversion of {convert['model']}: `tfc.convert` "
            f"{convert['seconds']['ours']['convert_s']:.1f} s, plain `tf.lite.TFLiteConverter` "
            f"{convert['seconds']['plain']['convert_s']:.1f} s ({convert['ours_over_plain']:.2f}x).",
            "",
        ]
    lines += [
        f"Training step, batch {data['batch']}, best of {data['rounds']} round(s):",
        "",
        "| model | tfcompress float step | tfcompress QAT | tfcompress pruning | tfmot float step | tfmot QAT | tfmot pruning |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, row in data["train"].items():
        if not isinstance(row, dict) or "step_s" not in row:
            continue
        steps, ratios = row["step_s"], row["ratios"]
        tfmot_qat = _ratio(ratios, "tfmot_qat_over_float")
        tfmot_prune = _ratio(ratios, "tfmot_prune_over_float")
        if isinstance(steps["tfmot_qat"], str):
            tfmot_qat = _step(steps["tfmot_qat"])
        if isinstance(steps["tfmot_prune"], str):
            tfmot_prune = _step(steps["tfmot_prune"])
        lines.append(
            f"| {model} | {_step(steps['ours_float'])} | {_ratio(ratios, 'ours_qat_over_float')} | "
            f"{_ratio(ratios, 'ours_prune_over_float')} | {_step(steps['tfmot_float'])} | "
            f"{tfmot_qat} | {tfmot_prune} |"
        )
    return "\n".join(lines)


def speed_channels_table(data: dict) -> str:
    """Channel pruning for LiteRT latency, and INT4-packed weights."""
    channels, int4 = data["channels"], data["int4"]
    search = channels["int8_search_report"]
    lines = [
        f"{channels['model']}, `prune_channels(latency_ratio={channels['latency_ratio_target']}, "
        f'latency_mode="{search["latency_mode"]}")`: {search["rounds"]} rounds, '
        f"{channels['search_s']:.0f} s, reached {search['reached']:.3f} of the dense latency on its own "
        f"timings; MACs {search['pruned_macs'] / search['dense_macs']:.2f}x.",
        "",
        "| | dense | compressed | ratio |",
        "|---|---:|---:|---:|",
    ]
    for threads, row in channels["int8_latency"].items():
        lines.append(
            f"| channel-pruned int8, {threads.replace('_', ' ')} | {row['dense_ms']:.2f} ms | "
            f"{row['pruned_ms']:.2f} ms | {row['ratio']:.2f}x |"
        )
    size = channels["int8_bytes"]
    lines.append(
        f"| channel-pruned int8 file bytes | {size['dense']:,} | {size['pruned']:,} | "
        f"{size['pruned'] / size['dense']:.2f}x |"
    )
    lines.append(
        f"| INT4-packed 4-bit weights, file bytes | {int4['bytes']['int8_levels_4bit']:,} | "
        f"{int4['bytes']['int4']:,} | {int4['int4_over_int8_levels']:.2f}x |"
    )
    for threads in ("1_threads", "2_threads"):
        row = int4[threads]
        lines.append(
            f"| INT4-packed latency, {threads.replace('_', ' ')} (builtin kernels) | "
            f"{row['int8_levels_ms']:.2f} ms | {row['int4_ms']:.2f} ms | {row['ratio']:.2f}x |"
        )
    cost = channels["accuracy_cost"]
    lines += [
        "",
        f"Accuracy cost on the digits CNN (int8 on LiteRT): dense {cost['dense']['int8_accuracy']:.4f}; "
        f"pruned in one shot to {cost['int8_search_reached']:.2f} of the int8 latency "
        f"{cost['pruned']['int8_accuracy']:.4f}; pruned during training (`StructuredPruning` + "
        f"`strip_channels`) {cost['gradual']['int8_accuracy']:.4f}.",
        "",
        "| architecture | MACs target | MACs reached | groups pruned | left whole | search s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, row in channels["architectures"].items():
        whole = "; ".join(f"{k}: {v}" for k, v in row["left_whole"].items())
        lines.append(
            f"| {name} | {row['macs_ratio_target']} | {row['macs_reached']:.3f} | {row['groups_pruned']} | "
            f"{whole} | {row['search_s']:.1f} |"
        )
    return "\n".join(lines)


def pruning_allocation_table(data: dict) -> str:
    """LAMP against tfmot at equal overall sparsity, int8 on LiteRT, mean of the seeds."""
    settings = data["settings"]
    default = data["default_allocation"]
    lines = [
        f"Seeds {settings['seeds']}, {settings['prune_epochs']} pruning epochs, schedule "
        f"{settings['schedule']}, batch order: {settings['batch_order']}. Gap: {default}'s int8 file "
        "minus tfmot's, in test digits (of 450), with its paired 95% interval.",
        "",
        f"| architecture | sparsity | {default} int8 | tfmot int8 (sparsity reached) | gap, digits [95% CI] |",
        "|---|---:|---:|---:|---:|",
    ]
    for arch, sides in data["summary_mean_of_seeds"].items():
        for target, mine in sides[default].items():
            peer = sides.get("tfmot", {}).get(target, {})
            low, high = mine["int8_gap_to_tfmot_digits_ci95"]
            lines.append(
                f"| {arch} | {target} | {mine['int8_accuracy']:.4f} | "
                f"{peer.get('int8_accuracy', float('nan')):.4f} ({peer.get('int8_sparsity', float('nan')):.2f}) | "
                f"{mine['int8_gap_to_tfmot_digits']:+.1f} [{low:+.1f}, {high:+.1f}] |"
            )
    return "\n".join(lines)


def distill_defaults_table(data: dict) -> str:
    """Distilled student minus the same student trained alone, in test digits of 450."""
    protocol = data["protocol"]
    students = data["students"]
    recipes = [
        key for key in next(iter(students.values()))["minus_scratch_digits"] if key != "scratch"
    ]
    has_interval = any("minus_scratch_digits_95" in s for s in students.values())
    lines = [
        f"Seeds {protocol['seeds']}, {protocol['epochs']} epochs, batch {protocol['batch_size']}, "
        f"{protocol['optimizer']}; same initial weights and batches for both arms. Library defaults: "
        f"alpha {data['library_defaults']['alpha']}, temperature {data['library_defaults']['temperature']}.",
        "",
        "| student | teacher % | alone % | " + " | ".join(f"`{r}`" for r in recipes) + " |",
        "|---|---:|---:|" + "---:|" * len(recipes),
    ]
    for name, student in students.items():
        means = student["means"]
        cells = []
        for recipe in recipes:
            cell = f"{student['minus_scratch_digits'][recipe]:+.2f}"
            interval = student.get("minus_scratch_digits_95", {}).get(recipe)
            if has_interval and interval:
                cell += f" [{interval[0]:+.2f}, {interval[1]:+.2f}]"
            cells.append(cell)
        lines.append(
            f"| {name} | {means['teacher'] * 100:.1f} | {means['scratch'] * 100:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    if has_interval:
        lines += ["", "In brackets: the paired 95% interval over the seeds."]
    return "\n".join(lines)


def micro_compress_table(data: dict) -> str:
    """Flash of clustered and pruned int8 files compressed for TFLM, mean of the seeds."""
    lines = [
        "| model | weights | int8 scales | int8 flash | compressed | ratio (worst seed) "
        "| arena growth | TFLM outputs identical |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in data["summary"]:
        scales = "per channel" if row["per_channel"] else "per tensor"
        lines.append(
            f"| {row['model']} | {row['variant']} | {scales} | {row['int8_flash_bytes']:,} "
            f"| {row['compressed_flash_bytes']:,} | {row['flash_ratio_mean']:.3f} "
            f"({row['flash_ratio_max']:.3f}) | +{row['arena_growth_bytes_max']:,} "
            f"| {'yes' if row['tflm_identical_all'] else 'NO'} ({row['seeds']} seeds) |"
        )
    return "\n".join(lines)


def readme_convert_table(data: dict) -> str:
    """The README's one results table: the digits CNN in every conversion mode."""
    digits = data["digits_cnn"]
    lines = [
        f"digits CNN (Keras float accuracy {digits['keras_accuracy']:.4f}), measured on LiteRT:",
        "",
        "| mode | accuracy | top-1 agreement with Keras | bytes | float ops |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, row in digits["modes"].items():
        lines.append(
            f"| `{mode}` | {row['accuracy']:.4f} | {row['top1_agreement_with_keras']:.4f} | "
            f"{row['bytes']:,} | {row['float_ops']} |"
        )
    return "\n".join(lines)


_MLPERF_FILES = (
    ("tfcompress", "tfcompress int8"),
    ("plain", "TF converter int8"),
    ("plain_per_tensor_dense", "TF converter, per-tensor Dense"),
    ("compressed", "16 clusters + tfc.micro.compress"),
)


def mlperf_tiny_table(data: dict) -> str:
    """MLPerf Tiny reference models on TFLM: flash, measured arena, agreement, per file."""
    lines = [
        "| model | file | flash (bytes) | TFLM arena (bytes) | max steps vs LiteRT | "
        "agreement with Keras |",
        "|---|---|---:|---:|---:|---|",
    ]
    for task in data["tasks"].values():
        summary = task["summary"]
        name = f"{task['model']} ({task['parameters']:,} parameters)"
        for key, label in _MLPERF_FILES:
            row = summary.get(key, {})
            if "arena_bytes" not in row:
                lines.append(f"| {name} | {label} | | | | does not run ({row.get('runs', '')}) |")
                continue
            if "auc" in row:
                agreement = (
                    f"AUC {row['auc']:.3f} (Keras {summary['keras_score']:.3f}), score "
                    f"correlation {row['score_correlation']:.3f}, relative error "
                    f"{row['relative_error']:.3f}"
                )
            else:
                agreement = (
                    f"top-1 {row['top1_agreement']:.3f}, accuracy {row['accuracy']:.3f} "
                    f"(Keras {summary['keras_score']:.3f})"
                )
            lines.append(
                f"| {name} | {label} | {row['flash_bytes']:,} | {row['arena_bytes']:,} | "
                f"{row['max_steps_vs_litert']} | {agreement} |"
            )
    seeds = len(data["settings"]["seeds"])
    lines += [
        "",
        f"Mean over {seeds} seed{'s' if seeds != 1 else ''} (flash, arena and steps: the "
        "largest), on the held-out rows "
        f"of the stand-in data; calibration on {data['settings']['calibration_rows']} training "
        f"rows; {data['settings']['tflm']}.",
    ]
    references = data.get("mlperf_reference_files", {})
    if references:
        lines += [
            "",
            "MLPerf Tiny's own pretrained int8 files (TF 2.3-era), for comparison:",
            "",
            "| file | flash (bytes) | TFLM arena (bytes) |",
            "|---|---:|---:|",
        ]
        for reference in references.values():
            lines.append(
                f"| `{reference['file'].split('/')[-1]}` | {reference['flash_bytes']:,} | "
                f"{reference['arena_bytes']:,} |"
            )
    return "\n".join(lines)


def micro_coverage_summary(data: dict) -> str:
    """One sentence: how many int8 models run on TFLM, how close to LiteRT, why the rest do not."""
    summary = data["summary"]
    fixes = summary["refused_by_fix"]
    return (
        f"{summary['run_on_tflm']} of the {summary['convert_to_int8']} models that convert to "
        f"int8 run on TFLM ({summary['rows']} models: the coverage matrix's rows and the zoo; "
        f"{len(summary['no_int8'])} do not convert to int8); {summary['within_one_step']} of them "
        f"are within one int8 step of LiteRT's builtin kernels (the nearer of its reference and optimized ones), none more than "
        f"{summary['max_steps_vs_litert']:g}. Of the "
        f"{summary['refused']} refused, {fixes['rewrite']} need a rewrite into layers TFLM runs, "
        f"{fixes['keep_float']} a layer kept in float, and {fixes['tflm_limit']} meet a TFLM limit."
    )


def micro_coverage_table(data: dict) -> str:
    """How many coverage-matrix rows and zoo models run on TFLM, and why the others do not."""
    lines = [
        micro_coverage_summary(data),
        "",
        "| op TFLM refused | fix | models | what to do |",
        "|---|---|---|---|",
    ]
    for op, entry in sorted(data["summary"]["refused_by_op"].items()):
        models = ", ".join(f"`{row}`" for row in entry["rows"])
        lines.append(f"| {op} | {entry['fix']} | {models} | {entry['advice']} |")
    return "\n".join(lines)


def micro_int16_summary(data: dict) -> str:
    """One sentence: how many int16x8 models run on TFLM, and which ops it refuses in int16."""
    summary = data["summary"]
    refused = ", ".join(f"`{op}`" for op in summary["ops_refused"])
    return (
        f"{summary['run_on_tflm']} of the {summary['convert_to_int16x8']} coverage-matrix models "
        f"that convert to int16x8 run on TFLM ({summary['rows']} models with float inputs; "
        f"{len(summary['no_int16x8'])} do not convert to int16x8), with {len(summary['ops_run'])} "
        f'distinct ops in 16-bit; `target="micro"` refuses the rest at {refused}.'
    )


_INT16_REASONS = {
    "no_tflm_kernel": "TFLM has no kernel for it",
    "kernel_refuses_types": "TFLM's kernel refuses its int16 tensors",
}


def micro_int16_table(data: dict) -> str:
    """Per op: the int16x8 models TFLM ran it in, their largest output difference from LiteRT's
    reference kernels in int16 steps, and the models refused at it, with why."""
    why = {
        row["op"]: _INT16_REASONS.get(row.get("why", ""), "")
        for row in data["rows"].values()
        if row["status"] == "refused" and row.get("op")
    }
    lines = [
        micro_int16_summary(data),
        "",
        "| op | models TFLM ran it in | their largest output difference (int16 steps) | "
        "refused in | why |",
        "|---|---:|---:|---|---|",
    ]
    for op, entry in data["ops"].items():
        steps = entry["max_steps_vs_litert"]
        refused = ", ".join(f"`{row}`" for row in entry["refused_in"])
        lines.append(
            f"| {op} | {len(entry['runs_in'])} | {'' if steps is None else f'{steps:g}'} | "
            f"{refused} | {why.get(op, '') if refused else ''} |"
        )
    return "\n".join(lines)


def mlperf_tiny_guide_table(data: dict) -> str:
    """The microcontroller guide's short table: each MLPerf Tiny model, tfcompress against TF."""
    references = data.get("mlperf_reference_files", {})
    lines = [
        "| model | tfcompress: flash / arena (bytes) | TF converter: flash / arena | "
        "MLPerf Tiny's TF 2.3 file: arena | TFLM vs LiteRT (steps) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, task in data["tasks"].items():
        ours, plain = task["summary"]["tfcompress"], task["summary"]["plain"]
        reference = references.get(key, {}).get("arena_bytes")
        lines.append(
            f"| {task['model']} | {ours['flash_bytes']:,} / {ours['arena_bytes']:,} | "
            f"{plain['flash_bytes']:,} / {plain['arena_bytes']:,} | "
            f"{f'{reference:,}' if reference else 'n/a'} | {ours['max_steps_vs_litert']} |"
        )
    return "\n".join(lines)


# One page per capability: (file name, title, introduction, sections). A section is
# (heading, JSON file stem, formatter). Introductions say what is measured, never a figure.
PRETRAINED_LABELS = {
    "float": "float Keras model",
    "tf_converter_int8": "TF converter, full int8",
    "tfc_int8": '`tfc.convert(..., "int8")`',
    "tfc_int8+fold_bn": '+ `optimize=["fold_bn"]`',
    "tfc_int8+equalize": '+ `optimize=["equalize"]`',
    "tfc_int8+adaround": '+ `optimize=["adaround"]`',
    "tfc_int8+bias_correction": '+ `optimize=["bias_correction"]`',
    "tfc_int8+all_steps": "+ all four recovery steps",
    "tfc_int8+keep_float": "+ `keep_float` as `suggest_keep_float` picks it",
    "tfc_int8+int16_layers": "+ `int16_layers`: the debugger's two worst layers 16-bit",
    "auto_quantize": "`tfc.auto_quantize` (1 pp)",
    "tfc_int16x8": '`tfc.convert(..., "int16x8")`',
    "tfc_int16x8+adaround": '+ `optimize=["adaround"]`, int16x8',
    "tfc_int16x8+bias_correction": '+ `optimize=["bias_correction"]`, int16x8',
    "tfc_int16x8+all_steps": "+ all four recovery steps, int16x8",
    "ai_edge_quantizer_int8": "AI Edge Quantizer, static int8",
    "authors_tflite": "the package's own `.tflite`",
}


def _pretrained_figure(entry: dict, key: str, digits: int) -> str:
    value, span = entry.get(key), entry.get(f"{key}_range")
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    if span and len(set(span)) > 1:
        text += f" ({span[0]:.{digits}f}-{span[1]:.{digits}f})"
    return text


def _pretrained_note(runs: dict, cell: str) -> str:
    """What the tool chose (keep_float layers, auto_quantize's file) or why the cell failed."""
    notes = []
    for seed, cells in runs.items():
        row = cells.get(cell, {})
        if "error" in row:
            notes.append(f"seed {seed}: {row['error'].splitlines()[0][:160]}")
        elif "keep_float" in row:
            notes.append(f"seed {seed}: {len(row['keep_float'])} layers float")
        elif "int16_layers" in row:
            notes.append(f"seed {seed}: {', '.join(row['int16_layers'])} 16-bit")
        elif "choice" in row:
            notes.append(f"seed {seed}: {row['choice']}")
        elif "skipped" in row:
            return row["skipped"]
    return "; ".join(notes)


def pretrained_table(data: dict) -> str:
    """Every tool and alternative on the pretrained models, on held-out rows, mean of the seeds."""
    lines = [
        "Agreement with the float Keras model on held-out rows (top-1 class, or F1 of the "
        "thresholded frames for basic-pitch), SQNR of that output and of the worst output, mean "
        "over the seeds (range in brackets); every file runs on LiteRT with XNNPACK unless the "
        "row names another runtime.",
    ]
    for name, model in data["models"].items():
        summary, runs = data["summary"].get(name, {}), data["runs"].get(name, {})
        outputs = ", ".join(f"{o} ({kind})" for o, kind in model["outputs"].items())
        lines += [
            "",
            f"### {name}",
            "",
            f"{model['package']}; input {tuple(model['inputs'])}; outputs {outputs}; headline "
            f"output `{model['primary_output']}`; {model['calibration_rows']} calibration and "
            f"{model['held_out_rows']} held-out rows per seed, seeds {model.get('seeds', '?')}. "
            + "; ".join(note[0].upper() + note[1:] for note in model["notes"])
            + ".",
            "",
            "| file | runtime | agreement | SQNR (dB) | worst output SQNR (dB) | bytes | note |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        if not summary:
            lines.append("| not measured yet | | | | | | |")
        for cell, label in PRETRAINED_LABELS.items():
            entry = summary.get(cell)
            if entry is None:
                continue
            lines.append(
                f"| {label} | {entry.get('runtime', '')} | {_pretrained_figure(entry, 'agreement', 3)} "
                f"| {_pretrained_figure(entry, 'sqnr_db', 1)} "
                f"| {_pretrained_figure(entry, 'worst_sqnr_db', 1)} "
                f"| {_pretrained_figure(entry, 'bytes', 0)} | {_pretrained_note(runs, cell)} |"
            )
            if cell == "tfc_int8":
                lines += _pretrained_other_runtimes(runs)
    if data.get("skipped"):
        lines += [
            "",
            "Not measured here: " + "; ".join(f"{k}: {v}" for k, v in data["skipped"].items()),
        ]
    return "\n".join(lines)


#: the recovery cells and the plain PTQ cell each is measured against
RECOVERY_CELLS = {
    cell: cell.split("+")[0]
    for cell in PRETRAINED_LABELS
    if "+" in cell
    and cell.split("+")[1] in ("fold_bn", "equalize", "adaround", "bias_correction", "all_steps")
}


def recovery_below_plain_table(data: dict) -> str:
    """Per model and recovery cell, the seeds whose file is below plain PTQ of the same mode on
    the held-out rows: lower headline agreement, or lower headline SQNR (figures to 0.01 dB)."""
    models = list(data["models"])
    lines = [
        "Seeds whose file is below plain PTQ of the same mode on the held-out rows (lower "
        "agreement or lower SQNR of the headline output), out of the seeds measured; a blank "
        "cell was not measured, and the reason is in the table above.",
        "",
        "| recovery cell | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    total = below_total = 0
    for cell, plain in RECOVERY_CELLS.items():
        row = []
        for name in models:
            primary = data["models"][name]["primary_output"]
            below = measured = 0
            for cells in data["runs"].get(name, {}).values():
                mine, base = cells.get(cell, {}), cells.get(plain, {})
                if "agreement" not in mine or "agreement" not in base:
                    continue
                measured += 1
                sqnr = mine.get("outputs", {}).get(primary, mine).get("sqnr_db")
                base_sqnr = base.get("outputs", {}).get(primary, base).get("sqnr_db")
                below += mine["agreement"] < base["agreement"] or sqnr < base_sqnr
            row.append(f"{below} of {measured}" if measured else "")
            total, below_total = total + measured, below_total + below
        lines.append(f"| {PRETRAINED_LABELS[cell]} | " + " | ".join(row) + " |")
    lines += ["", f"In all: {below_total} of {total} files below plain PTQ."]
    return "\n".join(lines)


def _pretrained_other_runtimes(runs: dict) -> list[str]:
    """The plain int8 file on LiteRT's reference kernels and on TFLite Micro, first seed."""
    for cells in runs.values():
        others = cells.get("tfc_int8", {}).get("other_runtimes", [])
        rows = []
        for other in others:
            if "agreement" in other:
                rows.append(
                    f"| same file | {other['runtime']} | {other['agreement']:.3f} | "
                    f"{other['sqnr_db']:.1f} | {other['worst_sqnr_db']:.1f} | | first seed |"
                )
            else:
                status = "runs" if other.get("runs") else f"fails: {other.get('error', '')[:120]}"
                difference = ", ".join(
                    f"{k}: {v}" for k, v in other.get("max_difference_from_reference", {}).items()
                )
                rows.append(
                    f"| same file | {other['runtime']} | | | | | {status}, arena "
                    f"{other.get('arena_bytes')} bytes; largest difference from LiteRT's "
                    f"reference kernels on {other.get('samples')} rows: {difference or 'n/a'} |"
                )
        return rows
    return []


Section = tuple[str, str, Callable[[dict], str]]
PAGES: list[tuple[str, str, str, list[Section]]] = [
    (
        "conversion",
        "Conversion and deployment",
        "Accuracy, size and latency of the files `tfc.convert` writes, measured on the LiteRT "
        "interpreter. See the [conversion guide](../guide/conversion.md).",
        [
            ("Every mode on the digits CNN and MobileNetV2", "convert", convert_table),
            ("Recurrent models in full integer", "recurrent", recurrent_table),
            ("Repeated vectors stored once", "file_size", file_size_table),
            ("The converter in a child process", "isolation", isolation_table),
            ("Inspection without TensorFlow", "inspect", inspect_table),
        ],
    ),
    (
        "qat",
        "Quantization-aware training",
        "QAT side by side with tfmot, the QAT options, and recurrent models. See the "
        "[QAT guide](../guide/qat.md).",
        [
            ("keras.applications, the digits CNN and the options", "qat", qat_table),
            (
                "Recurrent int8 files against Keras",
                "recurrent_agreement",
                recurrent_agreement_table,
            ),
            (
                "Recurrent int16x8 files against Keras",
                "recurrent_agreement_int16x8",
                recurrent_agreement_table,
            ),
            (
                "TFLite's own integer LSTM kernel",
                "recurrent_agreement_lstm_kernel",
                recurrent_agreement_table,
            ),
            (
                "Where a QAT training step spends its time",
                "qat_step_profile",
                qat_step_profile_table,
            ),
        ],
    ),
    (
        "pruning",
        "Pruning",
        "Magnitude pruning side by side with tfmot, the default (LAMP) allocation, and structured "
        "pruning for LiteRT latency. See the [pruning guide](../guide/pruning.md).",
        [
            ("Magnitude pruning and structured pruning", "pruning", pruning_table),
            (
                "LAMP against tfmot on identical batches",
                "pruning_allocation_same_order",
                pruning_allocation_table,
            ),
            ("Channel pruning for latency, and INT4 weights", "speed", speed_channels_table),
        ],
    ),
    (
        "distillation",
        "Distillation",
        "The `Distiller` against the same student trained alone. See the "
        "[distillation guide](../guide/distillation.md).",
        [
            ("Teacher to student on the digits", "distill", distill_table),
            (
                "Defaults on seven students, trained to their plateau",
                "distill_defaults_converged2",
                distill_defaults_table,
            ),
            ("Defaults over ten seeds", "distill_defaults_10seeds", distill_defaults_table),
        ],
    ),
    (
        "sharing",
        "Clustering and factorization",
        "Weight clustering side by side with tfmot, and low-rank factorization. See the "
        "[clustering and factorization guide](../guide/sharing.md).",
        [
            ("Clustering and factorization of the digits CNN", "sharing", sharing_table),
            (
                "Clustered and pruned files compressed for TFLM",
                "micro_compress",
                micro_compress_table,
            ),
        ],
    ),
    (
        "quantization_error",
        "Finding and fixing quantization error",
        "The debugger, PTQ recovery and `auto_quantize`. See the "
        "[guide](../guide/quantization_error.md).",
        [
            ("The debugger finds the sensitive layer", "debug", debug_table),
            ("PTQ recovery on MobileNetV2", "ptq_recovery", ptq_recovery_table),
            (
                "Per-tensor int8 and the folded depthwise ranges",
                "ptq_recovery_dfq",
                ptq_recovery_dfq_table,
            ),
            ("auto_quantize on the zoo", "auto_quantize_zoo", auto_quantize_table),
            (
                "16-bit activations on chosen layers (AI Edge Quantizer)",
                "auto_quantize_int16",
                auto_quantize_int16_table,
            ),
            (
                "16-bit activations for the debugger's worst layers (`int16_layers`)",
                "int16_layers",
                int16_layers_table,
            ),
        ],
    ),
    (
        "training",
        "Training: speed, memory, several workers, resuming",
        "Training-step time and memory against the float step and tfmot, several workers against "
        "one process, kill-and-resume, damaged files. See the "
        "[distributed](../guide/distributed.md) and [resilience](../guide/resilience.md) guides.",
        [
            ("Training-step time", "speed", speed_train_table),
            ("Training-step time with XLA (`jit_compile=True`)", "speed_jit", speed_train_table),
            ("Peak memory of a training step", "memory", memory_table),
            ("Peak memory of wrapping for pruning", "memory_wrap", memory_table),
            ("Two workers against one process", "multiworker", multiworker_table),
            ("Killed and resumed", "resume", resume_table),
            ("Damaged model files", "files", files_table),
            ("Keras 2 / TF 2.x files", "legacy_files", legacy_files_table),
        ],
    ),
    (
        "model_kinds",
        "The model kinds users bring",
        "A U-Net, a multi-output net, a regression net, a subclassed model, a custom layer, a "
        "`Lambda`, audio front ends, Rescaling with augmentation and a keras.io-style transformer, "
        "each through PTQ, QAT, pruning, clustering and the microcontroller target; every file "
        "checked against its Keras model on held-out rows by `convert` itself. See the "
        "[conversion guide](../guide/conversion.md).",
        [("Every kind through every tool", "model_kinds", model_kinds_table)],
    ),
    (
        "coverage",
        "Coverage of Keras layers",
        "How many rows of the [coverage matrix](../reference/coverage.md) each technique passes.",
        [("Rows that pass", "coverage", coverage_table)],
    ),
    (
        "zoo",
        "Every technique on seven small architectures",
        "Each technique on seven small architectures, tfcompress against tfmot from the same float "
        "model, measured on LiteRT.",
        [("LiteRT accuracy and what the files hold", "zoo", zoo_table)],
    ),
    (
        "pretrained",
        "Pretrained models from PyPI packages",
        "Every quantization tool on pretrained models that PyPI packages ship (an emotion "
        "classifier, a face detector's two stages, a note-transcription network), beside "
        "TensorFlow's own converter, AI Edge Quantizer and the authors' own files, on held-out "
        "rows built from packaged photos and synthesized audio. See the "
        "[guide](../guide/quantization_error.md).",
        [
            ("Agreement, SQNR and size on held-out rows", "pretrained", pretrained_table),
            ("Recovery steps against plain PTQ", "pretrained", recovery_below_plain_table),
        ],
    ),
    (
        "micro",
        "Microcontrollers (TensorFlow Lite Micro)",
        "The MLPerf Tiny reference models and every coverage-matrix and zoo model on TFLM's "
        "interpreter: flash, measured tensor arena, and outputs against LiteRT's reference "
        "kernels. See the [microcontroller guide](../guide/microcontrollers.md).",
        [
            ("MLPerf Tiny reference models", "mlperf_tiny", mlperf_tiny_table),
            ("Which int8 files run on TFLM", "micro_coverage", micro_coverage_table),
            ("Which ops TFLM runs in int16x8", "micro_int16", micro_int16_table),
        ],
    ),
]

# README.md: `<!-- results:NAME -->` ... `<!-- /results:NAME -->`, NAME the JSON file stem
README_TABLES: dict[str, Callable[[dict], str]] = {"convert": readme_convert_table}


def _load(stem: str) -> dict:
    return json.loads((RESULTS / f"{stem}.json").read_text())


def _command(data: dict) -> str:
    return data.get("measured_by") or data.get("command", "")


def _earlier(data: dict) -> str:
    """The commands that measured the cells an `--update` run kept."""
    earlier = data.get("earlier_commands") or []
    if not earlier:
        return ""
    return " The other cells come from earlier runs: " + "; ".join(f"`{c}`" for c in earlier) + "."


def _environment(data: dict) -> str:
    env = data.get("environment", {})
    return (
        f"TensorFlow {env.get('tensorflow', '?')}, Keras {env.get('keras', '?')}, "
        f"ai-edge-litert {env.get('ai_edge_litert', '?')}, {env.get('cpus', '?')} CPUs"
    )


def page_text(title: str, intro: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", GENERATED, "", intro]
    for heading, stem, formatter in sections:
        data = _load(stem)
        lines += [
            "",
            f"## {heading}",
            "",
            f"Command: `{_command(data)}` (`benchmarks/results/{stem}.json`; {_environment(data)})."
            + _earlier(data),
            "",
            formatter(data),
        ]
    return "\n".join(lines) + "\n"


GENERATED = (
    "<!-- Generated by benchmarks/make_results_pages.py from benchmarks/results/*.json; "
    "do not edit. -->"
)


def index_text() -> str:
    lines = [
        "# Results",
        "",
        GENERATED,
        "",
        "Every figure on these pages is formatted from the JSON file that a benchmark script in "
        "`benchmarks/` wrote (`benchmarks/results/`); rerun the command shown above a table to "
        "measure it again on your machine, then `python benchmarks/make_results_pages.py`. "
        "Latencies are medians of batch-1 runs on LiteRT; accuracies are on the 450 test images "
        "of scikit-learn's digits unless a table says otherwise.",
        "",
        "| page | results |",
        "|---|---|",
    ]
    for name, title, _, sections in PAGES:
        stems = ", ".join(f"`{stem}.json`" for _, stem, _ in sections)
        lines.append(f"| [{title}]({name}.md) | {stems} |")
    return "\n".join(lines) + "\n"


def readme_text(text: str) -> str:
    for name, formatter in README_TABLES.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        table = formatter(_load(name))
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


# Guides quote a few figures between the same markers: {guide file: {NAME: formatter}}
GUIDE_TABLES: dict[str, dict[str, Callable[[dict], str]]] = {
    "microcontrollers.md": {
        "mlperf_tiny": mlperf_tiny_guide_table,
        "micro_coverage": micro_coverage_summary,
        "micro_int16": micro_int16_summary,
    },
}


def guide_text(text: str, tables: dict[str, Callable[[dict], str]]) -> str:
    """`text` with the figures between each `<!-- results:NAME -->` pair formatted anew."""
    for name, formatter in tables.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        table = formatter(_load(name))
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


def outputs() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    pages = {DOCS / "index.md": index_text()}
    for name, title, intro, sections in PAGES:
        pages[DOCS / f"{name}.md"] = page_text(title, intro, sections)
    readme = ROOT / "README.md"
    pages[readme] = readme_text(readme.read_text())
    for name, tables in GUIDE_TABLES.items():
        guide = ROOT / "docs" / "guide" / name
        pages[guide] = guide_text(guide.read_text(), tables)
    return pages


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


DOCS = ROOT / "docs" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail on a stale page")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(ROOT)))
        else:
            _write(path, text)
    if stale:
        print("out of date with benchmarks/results/*.json: " + ", ".join(stale), file=sys.stderr)
        print("run: python benchmarks/make_results_pages.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
