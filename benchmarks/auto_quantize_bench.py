"""auto_quantize on every architecture of the model zoo: does it meet max_accuracy_drop=0.01?

For each architecture and seed: train the float model (benchmarks/zoo_models.py, the same
recipe as zoo_bench.py), run `tfc.auto_quantize(model, (x_test, y_test),
max_accuracy_drop=0.01, representative_data=x_train[:200])`, and record whether the chosen file
meets the target, its size against the plain int8 file, and every candidate's accuracy, size and
LiteRT latency. Accuracy is measured on the LiteRT interpreter on the test split.

    python benchmarks/auto_quantize_bench.py [--archs mlp,gru] [--seeds 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.examples import zoo as zoo_models  # noqa: E402

MAX_DROP = 0.01


def run(arch: str, seed: int, quick: bool) -> dict:
    split = zoo_models.load(arch)
    epochs = 2 if quick else zoo_models.EPOCHS[arch]
    model = zoo_models.train(zoo_models.build(arch, seed), split, epochs, seed)
    started = time.perf_counter()
    result = tfc.auto_quantize(
        model,
        (split.x_test, split.y_test),
        max_accuracy_drop=MAX_DROP,
        representative_data=split.x_train[:200],
    )
    plain = result.candidates[0]
    row = result.to_dict()
    row.update(
        seconds=round(time.perf_counter() - started, 1),
        plain_int8_bytes=plain.size_bytes,
        size_vs_plain_int8=len(result.flatbuffer) / plain.size_bytes if plain.size_bytes else None,
        plain_int8_meets_target=plain.meets_target,
    )
    print(f"{arch} seed {seed}:\n{result.summary()}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", default=",".join(zoo_models.ARCHITECTURES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="2 training epochs, seed 0 only")
    args = parser.parse_args()
    archs = args.archs.split(",")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    rows = {f"{arch}/{seed}": run(arch, seed, args.quick) for arch in archs for seed in seeds}
    write_results(
        "auto_quantize_quick" if args.quick else "auto_quantize",
        {
            "max_accuracy_drop": MAX_DROP,
            "all_meet_target": all(r["target_met"] for r in rows.values()),
            "all_no_larger_than_plain_int8": all(
                r["size_vs_plain_int8"] is not None and r["size_vs_plain_int8"] <= 1.0
                for r in rows.values()
            ),
            "choices": {key: r["choice"] for key, r in rows.items()},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
