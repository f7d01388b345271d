"""Flash and arena budgets in `auto_quantize(target="micro")`: what each candidate takes on TFLM.

For each seed: train the digits CNN (width 16, 8 epochs), then
1. `auto_quantize(target="micro")` with every candidate (int8, the recovery steps, AdaRound,
   INT4), each file's flash and arena measured by `tfc.micro.check`, under two budgets
   (`max_flash` only, then `max_flash` and `max_arena`): which file each budget chooses;
2. the alternative to INT4 for TFLM that was not made a candidate: the same 4-bit AdaRound grid
   stored as int8 and compressed into TFLM look-up tables (`tfc.micro.compress`);
3. the model clustered to 16 values per kernel (1 epoch of fine-tuning) through
   `auto_quantize(target="micro", recovery=False, max_flash=...)`: int8 against int8 as
   look-up tables.

Run: .venv/bin/python benchmarks/micro_budgets_bench.py   (writes benchmarks/results/micro_budgets.json)
     .venv/bin/python benchmarks/micro_budgets_bench.py --quick   (one seed; no file)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import keras

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.data import Split, load_digits  # noqa: E402
from tfcompress.models import build_digits_cnn, compile_classifier  # noqa: E402

SEEDS = (0, 1, 2)
DROP = 0.02
MAX_FLASH = 60_000
MAX_ARENA = 12_000
CALIBRATION = 100


def _trained(split: Split, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = compile_classifier(build_digits_cnn(width=16))
    model.fit(split.x_train, split.y_train, epochs=8, batch_size=64, verbose=0)
    return model


def _clustered(model: keras.Model, split: Split, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    clustered = tfc.cluster_weights(model, number_of_clusters=16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    clustered.compile("adam", loss, metrics=["accuracy"])
    clustered.fit(split.x_train, split.y_train, epochs=1, batch_size=64, verbose=0)
    return tfc.strip_clustering(clustered)


def _search(model: keras.Model, split: Split, **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = tfc.auto_quantize(
        model, (split.x_test, split.y_test), max_accuracy_drop=DROP,
        representative_data=split.x_train[:CALIBRATION], target="micro", **options,
    )  # fmt: skip
    return {
        "options": {k: v for k, v in options.items()},
        "choice": result.choice,
        "budgets_met": result.budgets_met,
        "target_met": result.target_met,
        "held_out_accuracy": result.held_out.outputs[0].value,
        "seconds": round(time.perf_counter() - started, 1),
        "candidates": [
            {
                "name": c.name,
                "flash_bytes": c.flash_bytes,
                "arena_bytes": c.arena_bytes,
                "search_accuracy": None if c.search is None else c.search.outputs[0].value,
                "meets_target": c.meets_target,
                "over_budget": c.over_budget,
                "error": c.error,
            }
            for c in result.candidates
        ],
    }


def _grid_as_look_up_tables(model: keras.Model, split: Split) -> dict[str, Any]:
    """The 4-bit AdaRound grid kept as int8, then TFLM look-up tables (not a candidate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = tfc.convert(
            model, "int8", split.x_train[:CALIBRATION], target="micro", check=False,
            optimize=["fold_bn", ("adaround", {"bits": 4})],
        )  # fmt: skip
    small = tfc.micro.compress(flat)
    report = tfc.micro.check(small, split.x_test[:50])
    return {
        "flash_bytes": report.flash_bytes,
        "arena_bytes": report.arena_bytes,
        "compressed_tensors": report.compressed_tensors,
        "uncompressed_flash_bytes": report.uncompressed_flash_bytes,
    }


def run(seeds: tuple[int, ...]) -> dict[str, Any]:
    split = load_digits()
    runs = []
    for seed in seeds:
        model = _trained(split, seed)
        row = {
            "seed": seed,
            "flash_budget": _search(model, split, max_flash=MAX_FLASH),
            "flash_and_arena_budgets": _search(
                model, split, max_flash=MAX_FLASH, max_arena=MAX_ARENA
            ),
            "four_bit_grid_as_look_up_tables": _grid_as_look_up_tables(model, split),
            "clustered_16": _search(
                _clustered(model, split, seed), split, recovery=False, max_flash=MAX_FLASH
            ),
        }
        runs.append(row)
        print(f"seed {seed}: {row['flash_budget']['choice']} / "
              f"{row['flash_and_arena_budgets']['choice']}", flush=True)  # fmt: skip
    return {
        "model": "tfcompress.models.build_digits_cnn(width=16), digits 8x8, 8 epochs",
        "max_accuracy_drop": DROP,
        "max_flash": MAX_FLASH,
        "max_arena": MAX_ARENA,
        "calibration_rows": CALIBRATION,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, no file written")
    args = parser.parse_args()
    payload = run(SEEDS[:1] if args.quick else SEEDS)
    if args.quick:
        print(payload)
        return
    print(write_results("micro_budgets", payload))


if __name__ == "__main__":
    main()
