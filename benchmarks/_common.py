"""Helpers shared by the benchmark scripts: environment facts and atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the version is informative only
        litert = "unknown"
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": litert,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Print the results as JSON and write them to benchmarks/results/<name>.json atomically."""
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": environment(),
        **payload,
    }
    text = json.dumps(payload, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".json", dir=RESULTS)
    with os.fdopen(handle, "w") as stream:
        stream.write(text + "\n")
    os.chmod(temporary, 0o644)  # mkstemp creates 0600; results are for everyone to read
    target = RESULTS / f"{name}.json"
    os.replace(temporary, target)
    return target


def legacy_digits_cnn(keras2: Any) -> Any:
    """tfcompress.models.build_digits_cnn(width=32), built with legacy Keras 2 for tfmot's side."""
    layers = keras2.layers
    inputs = keras2.Input((8, 8, 1))
    x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.Conv2D(64, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras2.Model(inputs, layers.Dense(10)(x))


def alternating_best(script: str, sides: tuple[str, ...], rounds: int) -> dict[str, dict]:
    """Run `python script --timing SIDE` for each side, `rounds` times, alternating; keep the best.

    Each run is a fresh process that prints a JSON dict of timings on its last stdout line; the
    result holds the smallest value of each key per side. Load on a shared machine drifts over
    minutes; alternating keeps one side from getting all the quiet (or busy) minutes.
    """
    import subprocess

    best: dict[str, dict] = {side: {} for side in sides}
    for _ in range(rounds):
        for side, times in best.items():
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("TF_USE_LEGACY_KERAS", None)
            if side == "tfmot":  # tfmot needs tf.keras to be the legacy Keras 2
                env["TF_USE_LEGACY_KERAS"] = "1"
            command = [sys.executable, script, "--timing", side]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[key] = min(times.get(key, value), value)
    return best
