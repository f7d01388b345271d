"""How fast `tfcompress inspect` answers on a ~50 MB float .tflite file.

Builds a float32 file of about 50 MB (two large Dense layers, 12.6 M weights), then times:
- `tfcompress inspect FILE` as a fresh process (wall time, `--runs` runs, median), the way a
  user calls it: the light path loads LiteRT's flatbuffer schema, never TensorFlow or Keras;
- the same command in a process that imports TensorFlow and Keras first, which is what every
  CLI call paid before the light path (the issue measured ~4 s);
- `tfcompress.inspect(FILE)` in-process (median of `--runs` calls, after one warm-up).
It also records which of tensorflow/keras the light process loaded (must be none).

Run: .venv/bin/python benchmarks/inspect_bench.py   (writes benchmarks/results/inspect.json)
Timings are only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402

_CLI = "import sys; from tfcompress.cli import main; sys.exit(main(sys.argv[1:]))"
_CLI_AFTER_TF = "import tensorflow, keras; " + _CLI
_MODULES = (
    "import json, sys; from tfcompress.cli import main; main(sys.argv[1:]); "
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
    "& {'tensorflow', 'keras', 'tf_keras'})), file=sys.stderr)"
)


def build_file(folder: Path) -> Path:
    """A float32 .tflite of about 50 MB: Dense(2048 -> 3072 -> 2048)."""
    import keras

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2048,)), keras.layers.Dense(3072), keras.layers.Dense(2048)]
    )
    return tfc.save_tflite(tfc.convert(model, "float32"), folder / "dense_50mb.tflite")


def _wall_time(code: str, path: Path) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, "inspect", str(path)], check=True, capture_output=True, env=env
    )
    return time.perf_counter() - start


def _alternating(path: Path, runs: int) -> tuple[list[float], list[float]]:
    """Light CLI and CLI-after-TensorFlow in alternating rounds (machine drift hits both)."""
    light, after_tf = [], []
    for _ in range(runs):
        light.append(_wall_time(_CLI, path))
        after_tf.append(_wall_time(_CLI_AFTER_TF, path))
    return light, after_tf


def _heavy_modules(path: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _MODULES, "inspect", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def _in_process(path: Path, runs: int) -> list[float]:
    from tfcompress.tflite.flatbuffer import inspect

    inspect(path)  # warm-up: file cache, schema module
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        inspect(path)
        times.append(time.perf_counter() - start)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = build_file(Path(folder))
        light, after_tf = _alternating(path, args.runs)
        in_process = _in_process(path, args.runs)
        payload = {
            "file_bytes": path.stat().st_size,
            "runs": args.runs,
            "cli_inspect_wall": _stats(light),
            "cli_inspect_wall_with_tensorflow_imported": _stats(after_tf),
            "in_process_inspect": _stats(in_process),
            "cli_speedup_vs_tensorflow_import": round(
                statistics.median(after_tf) / statistics.median(light), 2
            ),
            "heavy_modules_loaded_by_cli_inspect": _heavy_modules(path),
            "rounds": "light and after-TensorFlow runs alternate, one of each per round",
        }
    write_results("inspect", payload)


if __name__ == "__main__":
    main()
