"""The coverage matrix as a table: every `keras.layers` layer, tfcompress beside tfmot.

Runs every row of tests/coverage/cases.py through QAT, PTQ, pruning and clustering with the same
checks as tests/coverage/test_matrix.py, and tfmot's QAT and pruning on the same layer built in
tf_keras (in a process with TF_USE_LEGACY_KERAS=1), then writes benchmarks/results/coverage.json
and docs/reference/coverage.md.

    .venv/bin/python benchmarks/coverage_bench.py            # about 15 min on 2 cores
    .venv/bin/python benchmarks/coverage_bench.py --rows Conv1D,LSTM
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_results  # noqa: E402

DOC = ROOT / "docs" / "reference" / "coverage.md"
_OURS = ("qat", "ptq", "pruning", "clustering")
_TFMOT = ("qat", "pruning")


def _selected(rows: str | None) -> list:
    from tests.coverage.cases import all_cases

    names = set(rows.split(",")) if rows else None
    return [c for c in all_cases() if names is None or c.layer in names or c.id in names]


def run_ours(rows: str | None) -> dict[str, dict[str, Any]]:
    from tests.coverage.runner import TECHNIQUES

    results: dict[str, dict[str, Any]] = {}
    for case in _selected(rows):
        results[case.id] = {"layer": case.layer, "variant": case.variant}
        for technique in _OURS:
            if technique in ("pruning", "clustering") and not case.prunable:
                continue
            outcome = TECHNIQUES[technique](case)
            results[case.id][technique] = outcome.to_dict()
            print(
                f"ours  {case.id:32s} {technique:10s} {'ok' if outcome.ok else 'FAIL'}", flush=True
            )
    return results


# -- tfmot's column (this part runs in a child process with TF_USE_LEGACY_KERAS=1) -----------
def _tfmot_row(case: Any, technique: str) -> dict[str, Any]:
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras

    import tfcompress as tfc
    from tests.coverage import runner
    from tfcompress.converter import run_tflite

    def fit(model: Any, x: Any, y: Any, epochs: int, batch: int, callbacks: list) -> None:
        model.compile(
            tf_keras.optimizers.Adam(1e-2 if epochs > 1 else 1e-4),
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=callbacks)

    try:
        tf_keras.utils.set_random_seed(0)
        model = case.build(tf_keras)
    except Exception as error:  # noqa: BLE001 - the layer does not exist in tf_keras
        return {"ok": False, "detail": f"not in tf_keras: {type(error).__name__}: {error}"[:300]}
    x, y, x_test = runner._data(case, model)
    try:
        fit(model, x, y, runner._PRETRAIN_EPOCHS, 32, [])
        if technique == "qat":
            qat = tfmot.quantization.keras.quantize_model(model)
            fit(qat, x, y, 1, len(x), [])
            flatbuffer = tfc.convert(qat, "int8", x[:64])
            float_ops = sorted(set(tfc.inspect(flatbuffer).float_ops))
            expected = qat.predict(x_test, verbose=0).argmax(-1)
            agreement = float(
                (np.asarray(run_tflite(flatbuffer, x_test)).argmax(-1) == expected).mean()
            )
            ok = not float_ops and agreement >= runner.AGREEMENT
            return {"ok": ok, "float_ops": float_ops, "agreement": agreement}
        sparsity = tfmot.sparsity.keras
        schedule = sparsity.ConstantSparsity(runner.SPARSITY, begin_step=0, frequency=1)
        pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
        fit(pruned, x, y, 1, len(x) // 2, [sparsity.UpdatePruningStep()])
        flatbuffer = tfc.convert(sparsity.strip_pruning(pruned), "int8", x[:64])
        zeros = [float((w == 0).mean()) for w in runner._weight_tensors(flatbuffer)]
        ok = bool(zeros) and min(zeros) >= runner.SPARSITY - 0.02
        return {
            "ok": ok,
            "detail": f"zero fraction per int8 kernel: {[round(z, 3) for z in zeros]}",
        }
    except Exception as error:  # noqa: BLE001 - a failure is the row's result
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        return {"ok": False, "detail": f"{type(error).__name__}: {first}"[:300]}


def run_tfmot_child(rows: str | None) -> None:
    warnings.simplefilter("ignore")
    results = {}
    for case in _selected(rows):
        results[case.id] = {}
        for technique in _TFMOT:
            if technique == "pruning" and not case.prunable:
                continue
            results[case.id][technique] = _tfmot_row(case, technique)
            ok = results[case.id][technique]["ok"]
            print(f"tfmot {case.id:32s} {technique:10s} {'ok' if ok else 'FAIL'}", file=sys.stderr)
    print(json.dumps(results))


def run_tfmot(rows: str | None) -> dict[str, Any]:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--tfmot-child"] + (["--rows", rows] if rows else [])
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the document ------------------------------------------------------------------------------
def _cell(result: dict | None) -> str:
    if result is None:
        return ""
    if result.get("ok"):
        agreement = result.get("agreement")
        return "yes" if agreement is None else f"yes ({agreement:.3f})"
    if result.get("float_ops"):
        compute = [op for op in result["float_ops"] if op not in _IO_OPS]
        return "float: " + (" ".join(compute) if compute else "requantize")
    detail = result.get("detail", "")
    if result.get("error_steps") is not None and "int8 steps" in detail:
        return f"no: {result['error_steps']:g} int8 steps"
    return "no: " + detail.split(":")[0][:40] if detail else "no"


_IO_OPS = ("DEQUANTIZE", "QUANTIZE")


def write_doc(ours: dict, tfmot: dict) -> None:
    from tests.coverage.cases import SKIPS
    from tests.coverage.expectations import FLOAT_IN_INT8, KNOWN_GAPS

    lines = [
        "# Coverage: every Keras layer through QAT, PTQ, pruning and clustering",
        "",
        "Generated by `python benchmarks/coverage_bench.py` from the rows that "
        "`tests/coverage/test_matrix.py` tests in CI; do not edit by hand.",
        "",
        "Each row is a tiny functional model (input, the layer, Flatten, Dense(10)) trained on a "
        "10-class task. **QAT**: `quantize_model`, one training step, `convert(mode='int8')`: "
        "*yes* means no float op in the file, top-1 agreement (shown) >= 0.99 between the "
        "Keras QAT model and the file on LiteRT, and logits within 8 int8 output steps of the "
        "Keras QAT model's. **PTQ**: the float model to `convert(mode='int8', "
        "data)`, no float op and agreement >= 0.97 with the float model (PTQ rounding is not "
        "simulated in training). **Pruning**: `prune_low_magnitude` at 50%, "
        "train, `strip_pruning`, int8: the file's kernels hold >= 48% zeros overall (ours spread "
        "them by LAMP; tfmot's check is per kernel, as it prunes each to 50%) and no fewer than the "
        "stripped model. **Clustering**: 8 "
        "clusters, per-tensor int8: <= 8 values per kernel. tfmot's columns run the same checks on "
        "the same layer built in tf_keras (`tfmot.quantization.keras.quantize_model`, "
        "`tfmot.sparsity.keras.prune_low_magnitude`).",
        "",
        "| layer | variant | QAT int8 | PTQ int8 | pruning | clustering | tfmot QAT | tfmot pruning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours_only = 0
    for row_id, row in ours.items():
        theirs = tfmot.get(row_id, {})
        cells = [_cell(row.get(t)) for t in _OURS] + [_cell(theirs.get(t)) for t in _TFMOT]
        if row.get("qat", {}).get("ok") and not theirs.get("qat", {}).get("ok"):
            ours_only += 1
        lines.append(f"| {row['layer']} | {row['variant']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Rows where tfcompress QAT works and tfmot's does not: **{ours_only}** of {len(ours)}.",
        "",
        "## Layers that stay float in an int8 file",
        "",
        "| layer | float ops | why, and what to do |",
        "|---|---|---|",
    ]
    for layer, (ops, reason) in FLOAT_IN_INT8.items():
        lines.append(f"| {layer} | {', '.join(sorted(ops))} | {reason} |")
    lines += ["", "## Known gaps (tested as expected failures)", ""]
    if KNOWN_GAPS:
        lines += ["| row | why |", "|---|---|"]
        lines += [f"| {key} | {reason} |" for key, reason in KNOWN_GAPS.items()]
    else:
        lines += ["None: every row outside the skip lists passes."]
    lines += ["", "## Layers without a row", "", "| layer | why |", "|---|---|"]
    lines += [f"| {layer} | {reason} |" for layer, reason in sorted(SKIPS.items())]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
    print(f"wrote {DOC}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", help="comma-separated layer names or row ids (default: all)")
    parser.add_argument("--tfmot-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--reuse-tfmot",
        action="store_true",
        help="take tfmot's column from results/coverage.json instead of running tfmot again",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --rows: replace only those rows in results/coverage.json (the other rows and "
        "their commands stay as saved) and rewrite docs/reference/coverage.md",
    )
    parser.add_argument(
        "--doc-only",
        action="store_true",
        help="rewrite docs/reference/coverage.md from results/coverage.json",
    )
    args = parser.parse_args()
    if args.doc_only:
        saved = json.loads((ROOT / "benchmarks" / "results" / "coverage.json").read_text())
        write_doc(saved["ours"], saved["tfmot"])
        return
    if args.tfmot_child:
        run_tfmot_child(args.rows)
        return
    if args.reuse_tfmot:
        saved = json.loads((ROOT / "benchmarks" / "results" / "coverage.json").read_text())
        tfmot = saved["tfmot"]
    else:
        tfmot = run_tfmot(args.rows)
    ours = run_ours(args.rows)
    updated_rows = sorted(ours) if args.update else None
    if args.update:
        if not args.rows:
            parser.error("--update needs --rows (a full run rewrites every row anyway)")
        saved = json.loads((ROOT / "benchmarks" / "results" / "coverage.json").read_text())
        ours = {**saved["ours"], **ours}
        tfmot = {**saved["tfmot"], **tfmot}
    summary = {
        technique: {
            "ours": sum(bool(r.get(technique, {}).get("ok")) for r in ours.values()),
            "tfmot": sum(bool(r.get(technique, {}).get("ok")) for r in tfmot.values())
            if technique in _TFMOT
            else None,
            "rows": sum(technique in r for r in ours.values()),
        }
        for technique in _OURS
    }
    payload = {"summary": summary, "ours": ours, "tfmot": tfmot}
    if updated_rows:
        payload["updated_rows"] = updated_rows
    write_results("coverage", payload)
    if not args.rows or args.update:
        write_doc(ours, tfmot)


if __name__ == "__main__":
    main()
