"""Kill-and-resume matrix: every compressed model type, killed with SIGKILL and resumed.

The scenarios and the machinery live in `tests/harness/resume.py`, which the tests share.
Run: .venv/bin/python benchmarks/resume_bench.py   (writes benchmarks/results/resume.json)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_results  # noqa: E402
from tests.harness.resume import (  # noqa: E402
    EPOCHS,
    KINDS,
    STEPS_PER_EPOCH,
    backup_dir,
    continued,
    float_difference,
    matrix,
    max_difference,
    replayed,
    resumed,
    run_child,
    uninterrupted,
    write_checkpoint,
)


def main() -> None:

    scenarios = matrix()
    rows, checkpoints = [], []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        written = {kind: write_checkpoint(kind, root) for kind in KINDS}
        started = time.perf_counter()
        run_child(scenarios, root, continue_kinds=KINDS)
        child_s = time.perf_counter() - started
        loading = json.loads((root / "continue_report.json").read_text())
        for kind in KINDS:
            difference, where = max_difference(continued(root, kind), written[kind])
            checkpoints.append(
                {
                    "kind": kind,
                    "loading": loading[kind],
                    "continued_vs_in_memory_max_abs": difference,
                    "worst_variable": where,
                }
            )
        references = {kind: uninterrupted(kind) for kind in KINDS}
        for scenario in scenarios:
            after = resumed(scenario, backup_dir(root, scenario))
            plain, plain_where = max_difference(after, references[scenario.kind])
            row: dict[str, Any] = {**asdict(scenario), "name": scenario.name}
            row["vs_uninterrupted_max_abs"] = plain
            row["vs_uninterrupted_worst_variable"] = plain_where
            row["vs_uninterrupted_max_abs_float_variables"] = float_difference(
                after, references[scenario.kind]
            )
            if scenario.save_freq != "epoch":
                exact, exact_where = max_difference(after, replayed(scenario))
                row["vs_replayed_max_abs"] = exact
                row["vs_replayed_worst_variable"] = exact_where
            reference = row.get("vs_replayed_max_abs", plain)
            row["identical"] = reference <= 1e-6
            steps = [v for k, v in after.items() if k.endswith("pruning_step")]
            if steps:
                row["pruning_step"] = int(max(int(s) for s in steps))
            rows.append(row)
    write_results(
        "resume",
        {
            "scenarios": len(rows),
            "identical": sum(r["identical"] for r in rows),
            "tolerance": 1e-6,
            "epochs": EPOCHS,
            "steps_per_epoch": STEPS_PER_EPOCH,
            "child_seconds": round(child_s, 1),
            "note": (
                "Keras 3 BackupAndRestore with an integer save_freq restarts the epoch in "
                "progress (it records no batch), so those runs replay batches: compare "
                "vs_replayed (same batches, no kill). vs_uninterrupted is the plain run."
            ),
            "rows": rows,
            "model_checkpoint": checkpoints,
        },
    )


if __name__ == "__main__":
    main()
