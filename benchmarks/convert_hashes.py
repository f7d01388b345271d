"""Byte-for-byte guard of `tfcompress.convert`: hashes of the files it writes, in every mode.

The models are those of the conversion, recurrent and zoo benchmarks (small, seeded, untrained:
the bytes depend on the weights, not on their quality), plus the converter's other entry points:
a quantization-aware model, models still holding pruning and clustering wrappers, `keep_float`,
`optimize` recovery steps, INT4 packing and the per-tensor (`per_channel=False`) layout.

Run:
    .venv/bin/python benchmarks/convert_hashes.py --write   # record benchmarks/manifests/convert_hashes.json
    .venv/bin/python benchmarks/convert_hashes.py           # compare with it; exit 1 on any change
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import recurrent_bench  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.examples import zoo as zoo_models  # noqa: E402
from tfcompress.models import build_digits_cnn  # noqa: E402

MANIFEST = Path(__file__).resolve().parent / "manifests" / "convert_hashes.json"
MODES = ("float32", "dynamic", "float16", "int8", "int16x8", "edgetpu")
CALIBRATED = ("int8", "int16x8", "edgetpu")


def _seeded(build: Callable[[], keras.Model], seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build()


def _calibration(model: keras.Model, count: int = 32) -> np.ndarray:
    shape = (count, *model.input_shape[1:])
    return np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)


def _cases() -> Iterator[tuple[str, Callable[[], keras.Model], tuple[str, ...], dict[str, Any]]]:
    """(name, model builder, modes, extra convert keywords)."""
    yield "digits_cnn", lambda: _seeded(build_digits_cnn), MODES, {}
    for arch in zoo_models.ARCHITECTURES:
        yield f"zoo_{arch}", lambda arch=arch: zoo_models.build(arch, 0, small=True), MODES, {}
    for kind in ("LSTM", "GRU", "SimpleRNN", "Bidirectional-LSTM"):
        yield (
            f"recurrent_{kind}",
            lambda kind=kind: _seeded(lambda: recurrent_bench.build(kind)),
            (
                "float32",
                "int8",
                "int16x8",
            ),
            {},
        )

    def qat() -> keras.Model:
        return tfc.quantize_model(_seeded(lambda: build_digits_cnn(width=8)))

    def qat_4bit() -> keras.Model:
        return tfc.quantize_model(_seeded(lambda: build_digits_cnn(width=8)), weight_bits=4)

    def pruned() -> keras.Model:
        return tfc.prune_low_magnitude(_seeded(lambda: build_digits_cnn(width=8)))

    def clustered() -> keras.Model:
        return tfc.cluster_weights(_seeded(lambda: build_digits_cnn(width=8)), 8)

    yield "qat_digits_cnn", qat, ("float32", "int8", "int16x8", "edgetpu"), {}
    yield "qat4_digits_cnn_int4", qat_4bit, ("int8",), {"int4_weights": True}
    yield "pruned_wrapped", pruned, ("float32", "int8"), {}
    yield "clustered_wrapped", clustered, ("int8",), {"per_channel": False}
    yield "keep_float", lambda: _seeded(build_digits_cnn), ("int8",), {"keep_float": ["conv2"]}
    yield (
        "optimize",
        lambda: zoo_models.build("cnn2d_bn", 0, small=True),
        ("int8",),
        {"optimize": ["fold_bn", "equalize", "bias_correction"]},
    )


def hashes(only: str | None = None) -> dict[str, str]:
    """Convert every case in every mode and return `{case/mode: sha256 of the file}`."""
    found = {}
    for name, build, modes, keywords in _cases():
        if only and only not in name:
            continue
        model = build()
        data = _calibration(model)
        for mode in modes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flatbuffer = tfc.convert(
                    model, mode, data if mode in CALIBRATED else None, num_samples=32, **keywords
                )
            found[f"{name}/{mode}"] = hashlib.sha256(flatbuffer).hexdigest()
            print(f"{name}/{mode}: {len(flatbuffer)} bytes", flush=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the manifest")
    parser.add_argument("--only", help="cases whose name contains this text")
    args = parser.parse_args()
    found = hashes(args.only)
    if args.write:
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        MANIFEST.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"wrote {MANIFEST} ({len(found)} files)")
        return 0
    expected = json.loads(MANIFEST.read_text())
    changed = [key for key in found if expected.get(key) != found[key]]
    print(f"{len(found) - len(changed)} of {len(found)} files identical to the manifest")
    for key in changed:
        print(f"CHANGED: {key}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
