"""Where a QAT training step spends its time against the float step (issue 13).

For each model, the float model and its `quantize_model` copy are compiled in one process,
warmed up, then profiled with the TensorFlow profiler for `--steps` train steps each,
alternating. Every kernel (TF op) the host ran is summed by op type and grouped: convolutions
and matmuls, BatchNorm (float only: moments and normalisation), fake quant (the quantizers'
ops: fake quant, range min/max, gradient masks) and the rest. Shares are of that step's op time,
so they hold on a busy machine where absolute times do not.

Run: .venv/bin/python benchmarks/qat_step_profile.py [--models resnet50_224,...] [--batch 16]
(writes benchmarks/results/qat_step_profile.json).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402

MODELS = ("efficientnet_b0_224", "resnet50_224")
# op types by what they do (convolutions by substring, the others by exact name); the rest is
# "other". Mean also serves pooling, Min/Max/Maximum/Minimum also other layers: shares are upper
# bounds for fake_quant and batchnorm.
CONV_MARKERS = ("Conv2D", "Conv2d", "MatMul")
GROUPS = {
    "fake_quant": {
        "FakeQuantWithMinMaxVars",
        "FakeQuantWithMinMaxVarsGradient",
        "FakeQuantWithMinMaxVarsPerChannel",
        "FakeQuantWithMinMaxVarsPerChannelGradient",
        "GreaterEqual",
        "LessEqual",
        "LogicalAnd",
        "SelectV2",
        "Min",
        "Max",
        "Maximum",
        "Minimum",
        "Floor",
    },
    "batchnorm": {"Mean", "SquaredDifference", "Rsqrt", "FusedBatchNormV3", "FusedBatchNormGradV3"},
}
# events that wrap others (the step, the executor): not kernels
_WRAPPERS = ("Process", "Run", "__inference", "__forward", "__backward")


def _build(name: str) -> Any:
    import keras

    if name == "efficientnet_b0_224":
        return keras.applications.EfficientNetB0(input_shape=(224, 224, 3), weights=None)
    if name == "resnet50_224":
        return keras.applications.ResNet50(input_shape=(224, 224, 3), weights=None)
    if name.startswith("mobilenet_v2_1.0_"):
        size = int(name.rsplit("_", 1)[1])
        return keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None)
    raise ValueError(f"unknown model {name!r}; use one of {MODELS} or mobilenet_v2_1.0_224")


def _group(op_type: str) -> str:
    if any(marker in op_type for marker in CONV_MARKERS):
        return "conv_matmul"
    for group, names in GROUPS.items():
        if op_type in names:
            return group
    return "other"


def _kernel_seconds(logdir: str, steps: int) -> collections.Counter:
    """Seconds per step by op type, from the profiler's host trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    seconds: collections.Counter = collections.Counter()
    for plane in space.planes:
        if "host" not in plane.name.lower():
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name:
                    continue
                op_type = name.rsplit(":", 1)[1].strip()
                if op_type.startswith(_WRAPPERS):
                    continue
                seconds[op_type] += event.duration_ps / 1e12 / steps
    return seconds


def profile(name: str, batch: int, steps: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    models = {"float": _build(name)}
    models["qat"] = tfc.quantize_model(models["float"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, *models["float"].inputs[0].shape[1:])).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    for model in models.values():
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
        for _ in range(2):  # tracing, first runs
            model.train_on_batch(x, y)
    out: dict[str, Any] = {}
    wall: dict[str, list[float]] = {kind: [] for kind in models}
    kernels: dict[str, collections.Counter] = {}
    for kind, model in models.items():
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                wall[kind].append(time.perf_counter() - start)
            tf.profiler.experimental.stop()
            kernels[kind] = _kernel_seconds(logdir, steps)
    for kind, seconds in kernels.items():
        total = sum(seconds.values())
        groups: collections.Counter = collections.Counter()
        for op_type, value in seconds.items():
            groups[_group(op_type)] += value
        out[kind] = {
            "kernel_s": total,
            "step_wall_s": float(np.median(wall[kind])),
            "group_share": {g: round(v / total, 4) for g, v in groups.most_common()},
            "top_ops_share": {
                op: round(v / total, 4) for op, v in seconds.most_common(12) if v / total > 0.005
            },
        }
    out["qat_over_float_kernel_s"] = out["qat"]["kernel_s"] / out["float"]["kernel_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per model")
    args = parser.parse_args()
    results = {
        name: profile(name, args.batch, args.steps) for name in args.models.split(",") if name
    }
    write_results(
        "qat_step_profile",
        {"batch": args.batch, "steps": args.steps, "jit_compile": False, "models": results},
    )


if __name__ == "__main__":
    main()
