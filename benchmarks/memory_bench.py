"""Peak resident memory of a QAT and a pruning training step against the float step.

Each configuration (model x float / QAT / pruning, and tfmot's QAT / pruning on tf_keras as a
peer) runs in its own child process: build the model (`keras.applications`, `weights=None`,
224x224x3, 1000 classes), wrap it, compile it (SGD, sparse cross-entropy) and `fit` two steps
of batch 16 on random data. The child reports its peak resident set (VmHWM of /proc/self/status)
after building and after training; the ratio is peak(step) / peak(float step) of the same model.

    .venv/bin/python benchmarks/memory_bench.py [--models ResNet50 EfficientNetB0]
        [--no-tfmot] [--wrap]

`--wrap` measures only wrapping, before any training: the float model built, and built then
wrapped by `prune_low_magnitude` (default LAMP allocation), into `results/memory_wrap.json`.

Goal: a QAT or pruning step at most 1.3x the float step's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_results  # noqa: E402

BATCH = 16
STEPS = 2
MODES = ("float", "qat", "pruning")
PEER_MODES = ("tfmot_qat", "tfmot_pruning")
WRAP_MODES = ("float_wrap", "pruning_wrap")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(model_name: str, mode: str) -> dict[str, float]:
    """Build, wrap and train one configuration in this process; return its memory figures."""
    import numpy as np

    legacy = mode.startswith("tfmot")
    if legacy:
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras
    else:
        import keras

        import tfcompress as tfc
    model = getattr(keras.applications, model_name)(weights=None, input_shape=(224, 224, 3))
    callbacks = []
    if mode in WRAP_MODES:  # wrapping alone: the peak of building (and pruning's allocation)
        if mode == "pruning_wrap":
            model = tfc.prune_low_magnitude(model)
        return {"peak_rss_after_build_mb": _peak_rss_mb()}
    if mode == "qat":
        model = tfc.quantize_model(model)
    elif mode == "pruning":
        model = tfc.prune_low_magnitude(model)
        callbacks = [tfc.pruning.UpdatePruningStep()]
    elif mode == "tfmot_qat":
        model = tfmot.quantization.keras.quantize_model(model)
    elif mode == "tfmot_pruning":
        model = tfmot.sparsity.keras.prune_low_magnitude(model)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
    )
    built = _peak_rss_mb()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * STEPS, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 1000, BATCH * STEPS)
    begin = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return {
        "peak_rss_after_build_mb": built,
        "peak_rss_mb": _peak_rss_mb(),
        "fit_s": time.perf_counter() - begin,
    }


def _run(model_name: str, mode: str, timeout: float) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if mode.startswith("tfmot"):
        env["TF_USE_LEGACY_KERAS"] = "1"
    command = [sys.executable, __file__, "--child", model_name, mode]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {last[-300:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["EfficientNetB0", "ResNet50"])
    parser.add_argument("--no-tfmot", action="store_true", help="skip tfmot's peer rows")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--wrap", action="store_true", help="measure wrapping only")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    modes = MODES if args.no_tfmot else MODES + PEER_MODES
    key, first = "peak_rss_mb", "float"
    if args.wrap:
        modes, key, first = WRAP_MODES, "peak_rss_after_build_mb", "float_wrap"
    rows = []
    for model_name in args.models:
        measured = {mode: _run(model_name, mode, args.timeout) for mode in modes}
        reference = measured[first].get(key)
        for mode, figures in measured.items():
            row = {"model": model_name, "mode": mode, **figures}
            if reference and key in figures:
                row["ratio_to_float"] = round(figures[key] / reference, 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    if args.wrap:
        setup = {"input": "224x224x3, weights=None", "measure": "VmHWM after building/wrapping"}
        write_results("memory_wrap", {"setup": setup, "rows": rows})
        return
    write_results(
        "memory",
        {
            "setup": {
                "batch": BATCH,
                "steps": STEPS,
                "input": "224x224x3, weights=None, 1000 classes, random data",
                "measure": "VmHWM of the child process (one process per configuration)",
                "peer": "tfmot on tf_keras (TF_USE_LEGACY_KERAS=1), ratio to our float step",
                "goal": "ratio_to_float <= 1.3",
            },
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
