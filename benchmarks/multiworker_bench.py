"""2-worker MultiWorkerMirroredStrategy against single-process training, per scenario.

Launches two CPU worker processes (127.0.0.1) that train QAT min/max, QAT LSQ, pruning,
clustering and the Distiller one after another, then the single-process reference (after the
workers, so they do not share the cores). Reports, per scenario, the largest absolute difference
of any final variable between the two workers and between worker 0 and the reference, and the
training wall-clock of each (model building, tracing and fit; process start-up and the import of
TensorFlow are excluded).

    .venv/bin/python benchmarks/multiworker_bench.py

On a 2-core machine the two workers share the cores, so the multi-worker run is not expected to
be faster; the figures show what the synchronisation costs and that the results agree.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_results  # noqa: E402
from tests.distributed.multiworker_scenarios import (  # noqa: E402
    EPOCHS,
    GLOBAL_BATCH,
    SAMPLES,
    SCENARIOS,
    launch,
)


def _largest_difference(out: Path, first: str, second: str, scenario: str) -> float:
    with (
        np.load(out / f"{first}_{scenario}.npz") as a,
        np.load(out / f"{second}_{scenario}.npz") as b,
    ):
        return max(
            float(np.max(np.abs(a[k].astype(np.float64) - b[k]), initial=0.0)) for k in a.files
        )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        launch(out, timeout=900, sequential=True)
        times = {
            role: json.loads((out / f"{role}_times.json").read_text())
            for role in ("worker0", "worker1", "single0")
        }
        rows = []
        for scenario in SCENARIOS:
            rows.append(
                {
                    "scenario": scenario,
                    "max_abs_diff_worker0_vs_worker1": _largest_difference(
                        out, "worker0", "worker1", scenario
                    ),
                    "max_abs_diff_vs_single_process": _largest_difference(
                        out, "worker0", "single0", scenario
                    ),
                    "wall_s_two_workers": max(times[w][scenario] for w in ("worker0", "worker1")),
                    "wall_s_single_process": times["single0"][scenario],
                }
            )
    write_results(
        "multiworker",
        {
            "setup": {
                "workers": 2,
                "replicas": int(times["worker0"]["replicas"]),
                "device": "CPU (CUDA_VISIBLE_DEVICES=-1)",
                "global_batch": GLOBAL_BATCH,
                "epochs": EPOCHS,
                "samples": SAMPLES,
                "model": "Conv2D(4)-MaxPool-Dense(16)-Dense(10) on 8x8 digits",
                "multi_worker_training": "tfcompress.distribute.fit (Keras 3 fit fails under "
                "MultiWorkerMirroredStrategy, keras-team/keras#20585)",
                "single_process_training": "model.fit",
            },
            "rows": rows,
            "note": "wall-clock measured on a shared 2-core machine: rerun on a quiet machine",
        },
    )


if __name__ == "__main__":
    main()
