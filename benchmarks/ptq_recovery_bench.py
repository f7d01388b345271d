"""PTQ accuracy recovery on a trained depthwise-separable net (issue 12, tfcompress.recovery).

MobileNetV2 (alpha 0.35, `keras.applications.MobileNetV2(weights=None)`, BatchNorm momentum 0.9
so its statistics settle in a short training) is trained on the digits upsampled to 32x32 (nearest
neighbour, grey repeated on 3 channels), then converted with 200 calibration samples and scored
on the LiteRT interpreter (`tfc.evaluate_tflite`, the 450 test digits):

- per-tensor int8 (`per_channel=False`): naive, against fold + equalize + bias correction
  (ReLU6 replaced by ReLU as in the DFQ paper: the float accuracy of that model is reported), and
  with `relu6="skip"` (nothing to equalize in MobileNetV2: every pair has a ReLU6);
- 4-bit weights (INT4 file, 8-bit activations, per-channel): round-to-nearest
  (`("adaround", {"iterations": 0})`) against AdaRound, both followed by bias correction, and
  AdaRound alone; per-channel int8 as the reference.

Each step's wall time is measured once (a loaded machine: rerun on a quiet one for figures).

`--dfq` runs the study of the DFQ phenomenon instead (writes ptq_recovery_dfq.json): for each
training recipe and seed, the same net is scored at two points of one training run (`--dfq-epochs`,
e.g. 12 then 30 epochs), and each time it reports the spread of the BatchNorm-folded depthwise
kernels (per layer, max over min of the per-channel ranges max|w|; channels whose folded range is
0 are counted apart) next to per-tensor int8 naive and after equalization + bias correction.
Recipes: `adam` (Adam, no weight decay, as above) and `adamw` (AdamW, decoupled weight decay
`--weight-decay` on every weight, BatchNorm's gamma included: the decay that leaves unused
channels small, as in long ImageNet training). Nothing is edited by hand in these nets.

`--never-worse` measures each recovery step against plain PTQ on rows used neither to calibrate
nor to check (writes ptq_recovery_never_worse.json): the digits CNN, a mini-Xception-like net
(SeparableConv2D, PReLU, 1x1 stride-2 shortcuts) trained on 32x32 digits, and, where their
packages are installed, fer's pretrained mini-Xception and mtcnn's ONet (PReLU, three outputs;
`benchmarks/pretrained.py`). Per model, seed and weight grid: plain int8, each step alone (after
BatchNorm folding, unchecked: equalization, bias correction), all steps unchecked, and all steps
checked (`optimize_model(..., held_out=check rows)`), each converted and scored on the test rows by
`tfcompress.tflite.fidelity` (top-1 agreement with the float model, SQNR). The check's own
figures (each step against the file without it, on the check rows) are recorded too. This mode
runs with `TF_ENABLE_ONEDNN_OPTS=0` (training the mini-Xception-like net crashes TF's oneDNN
otherwise); AdaRound on fer's net is first run once with oneDNN on in its separate process, to
record the contained crash.

Run: .venv/bin/python benchmarks/ptq_recovery_bench.py [--seeds 3] [--epochs 15]
     (writes benchmarks/results/ptq_recovery.json)
     .venv/bin/python benchmarks/ptq_recovery_bench.py --dfq [--seeds 3] [--dfq-epochs 12,30]
     .venv/bin/python benchmarks/ptq_recovery_bench.py --never-worse [--seeds 3] [--models ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--never-worse" in sys.argv:  # training a 1x1 stride-2 convolution crashes TF's oneDNN
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.data import load_digits  # noqa: E402
from tfcompress.models import build_digits_cnn  # noqa: E402
from tfcompress.recovery import (  # noqa: E402
    adaround,
    bias_correction,
    equalize,
    fold_batch_norms,
    optimize_model,
)
from tfcompress.recovery.steps import not_worse  # noqa: E402
from tfcompress.tflite.fidelity import measure_fidelity  # noqa: E402

SIZE = 32
CALIBRATION = 200


def _images(x: np.ndarray) -> np.ndarray:
    up = np.repeat(np.repeat(x, SIZE // 8, axis=1), SIZE // 8, axis=2)
    return np.repeat(up, 3, axis=-1).astype("float32")


def _build(seed: int, optimizer: keras.optimizers.Optimizer | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3),
        alpha=0.35,
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(
        optimizer or keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _train(seed: int, epochs: int, x: np.ndarray, y: np.ndarray) -> keras.Model:
    model = _build(seed)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def depthwise_spread(folded: keras.Model) -> dict:
    """Per-channel range spread of the folded depthwise kernels (what breaks a per-tensor grid)."""
    layers = {}
    for layer in folded.layers:
        if not isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        kernel = layer.get_weights()[0]
        ranges = np.abs(kernel.reshape(-1, kernel.shape[2] * kernel.shape[3])).max(axis=0)
        alive = ranges[ranges > 0]
        layers[layer.name] = {
            "spread": float(alive.max() / alive.min()) if alive.size else None,
            "zero_channels": int(np.sum(ranges == 0)),
            "channels": int(ranges.size),
        }
    spreads = [v["spread"] for v in layers.values() if v["spread"] is not None]
    worst = max(layers, key=lambda name: layers[name]["spread"] or 0.0)
    return {
        "max_spread": round(max(spreads), 1),
        "median_spread": round(float(np.median(spreads)), 1),
        "worst_layer": worst,
        "first_depthwise_spread": round(next(iter(layers.values()))["spread"], 1),
        "zero_channels": sum(v["zero_channels"] for v in layers.values()),
        "layers": {k: {**v, "spread": round(v["spread"] or 0.0, 2)} for k, v in layers.items()},
    }


def dfq_point(model: keras.Model, calib: np.ndarray, x_test: np.ndarray, y_test) -> dict:
    """Spread of the folded depthwise kernels; per-tensor int8 naive vs equalize + bias correction."""

    def litert(m: keras.Model, **options) -> float:
        return tfc.evaluate_tflite(tfc.convert(m, "int8", calib, **options), x_test, y_test)

    def keras_accuracy(m: keras.Model) -> float:
        return float(np.mean(np.asarray(m.predict(x_test, verbose=0)).argmax(-1) == y_test))

    folded = fold_batch_norms(model)
    flat = equalize(model, relu6="replace")
    row = {"float": keras_accuracy(model), "float_relu6_replaced": keras_accuracy(flat)}
    row.update(depthwise_spread(folded))
    row["equalized_max_spread"] = depthwise_spread(fold_batch_norms(flat))["max_spread"]
    row["int8_per_channel"] = litert(folded)
    row["per_tensor_naive"] = litert(folded, per_channel=False)
    corrected = bias_correction(flat, calib, per_channel=False)
    row["per_tensor_equalize_bias_correction"] = litert(corrected, per_channel=False)
    return row


def run_dfq(recipe: str, seed: int, epochs: list[int], weight_decay: float) -> dict:
    split = load_digits()
    x_train, x_test = _images(split.x_train), _images(split.x_test)
    calib = x_train[:CALIBRATION]
    optimizer = (
        keras.optimizers.AdamW(3e-3, weight_decay=weight_decay)
        if recipe == "adamw"
        else keras.optimizers.Adam(3e-3)
    )
    model = _build(seed, optimizer)
    points, done = {}, 0
    for epoch in epochs:
        model.fit(x_train, split.y_train, epochs=epoch - done, batch_size=64, verbose=0)
        done = epoch
        points[str(epoch)] = dfq_point(model, calib, x_test, split.y_test)
        short = {k: v for k, v in points[str(epoch)].items() if k != "layers"}
        print(
            json.dumps({"recipe": recipe, "seed": seed, "epochs": epoch, **short}), file=sys.stderr
        )
    return {"recipe": recipe, "seed": seed, "points": points}


def main_dfq(args: argparse.Namespace) -> None:
    epochs = sorted(int(e) for e in args.dfq_epochs.split(","))
    recipes = args.recipes.split(",")
    rows = []
    for seed in range(args.seeds):  # the file is rewritten after each run: a long run keeps some
        for recipe in recipes:
            rows.append(run_dfq(recipe, seed, epochs, args.weight_decay))
            collapsed = [
                (r["recipe"], r["seed"], e)
                for r in rows
                for e, p in r["points"].items()
                if p["per_tensor_naive"] < p["float"] - 0.05
            ]
            write_results(
                "ptq_recovery_dfq",
                {
                    "model": f"MobileNetV2 alpha 0.35, {SIZE}x{SIZE}x3, digits",
                    "recipes": {
                        "adam": "Adam 3e-3, no weight decay",
                        "adamw": f"AdamW 3e-3, weight_decay={args.weight_decay} (all weights)",
                    },
                    "epochs": epochs,
                    "calibration_samples": CALIBRATION,
                    "runs_done": len(rows),
                    "naive_per_tensor_collapsed_runs": collapsed,
                    "rows": rows,
                },
            )


def _timed(function, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def run_seed(seed: int, epochs: int, iterations: int) -> dict:
    split = load_digits()
    x_train, x_test = _images(split.x_train), _images(split.x_test)
    y_test = split.y_test
    model, train_s = _timed(_train, seed, epochs, x_train, split.y_train)
    calib = x_train[:CALIBRATION]

    def keras_accuracy(m: keras.Model) -> float:
        return float(np.mean(np.asarray(m.predict(x_test, verbose=0)).argmax(-1) == y_test))

    def litert(m: keras.Model, **options) -> float:
        return tfc.evaluate_tflite(tfc.convert(m, "int8", calib, **options), x_test, y_test)

    row: dict = {"seed": seed, "train_s": train_s, "float": keras_accuracy(model)}
    folded, row["fold_s"] = _timed(fold_batch_norms, model)
    row["int8_per_channel"] = litert(folded)
    # per-tensor int8: the DFQ phenomenon
    row["per_tensor_naive"] = litert(folded, per_channel=False)
    skipped, report = equalize(model, return_report=True)
    row["equalize_relu6_skip_pairs"] = len(report.pairs)
    row["per_tensor_equalize_relu6_skip"] = litert(skipped, per_channel=False)
    (flat, report), row["equalize_s"] = _timed(equalize, model, relu6="replace", return_report=True)
    row["equalized_pairs"] = len(report.pairs)
    row["equalized_absorbed_layers"] = len(report.absorbed)
    row["float_relu6_replaced"] = keras_accuracy(flat)
    row["per_tensor_equalize"] = litert(flat, per_channel=False)
    corrected, row["bias_correction_s"] = _timed(bias_correction, flat, calib, per_channel=False)
    row["per_tensor_equalize_bias_correction"] = litert(corrected, per_channel=False)
    row["per_tensor_bias_correction_only"] = litert(
        bias_correction(folded, calib, per_channel=False), per_channel=False
    )
    # 4-bit weights, 8-bit activations, INT4 file
    nearest = adaround(folded, calib, bits=4, iterations=0)
    learned, row["adaround_s"] = _timed(adaround, folded, calib, bits=4, iterations=iterations)
    int4 = {"int4_weights": True}
    levels = tfc.ptq.recovery.four_bit_levels
    for name, rounded in (("w4_nearest", nearest), ("w4_adaround", learned)):
        flatbuffer = levels(tfc.convert(rounded, "int8", calib), require=True).flatbuffer
        row[name] = tfc.evaluate_tflite(flatbuffer, x_test, y_test)
        with_bc = bias_correction(rounded, calib, bits=4, reference=folded)
        flatbuffer = levels(tfc.convert(with_bc, "int8", calib), require=True).flatbuffer
        row[f"{name}_bias_correction"] = tfc.evaluate_tflite(flatbuffer, x_test, y_test)
    packed = tfc.convert(model, "int8", calib, optimize=["fold_bn", "adaround"], **int4)
    row["w4_adaround_convert_optimize_int4"] = tfc.evaluate_tflite(packed, x_test, y_test)
    row["int4_file_bytes"] = len(packed)
    print(json.dumps(row), file=sys.stderr)
    return row


# -- never worse than plain PTQ ---------------------------------------------------------------

NEVER_WORSE_MODELS = ("digits_cnn", "sepconv_prelu", "fer_mini_xception", "mtcnn_onet")
ALL_STEPS = ["fold_bn", "equalize", "adaround", "bias_correction"]


def _mini_xception(seed: int) -> keras.Model:
    """SeparableConv2D-BN-PReLU blocks with 1x1 stride-2 shortcuts, as mini-Xception has."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(8, 3, use_bias=False, name="stem")(inputs)
    x = layers.PReLU(shared_axes=[1, 2], name="stem_prelu")(layers.BatchNormalization()(x))
    for i, width in enumerate((16, 32)):
        shortcut = layers.Conv2D(width, 1, strides=2, padding="same", use_bias=False)(x)
        shortcut = layers.BatchNormalization()(shortcut)
        x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False, name=f"sep{i}a")(x)
        x = layers.PReLU(shared_axes=[1, 2])(layers.BatchNormalization()(x))
        x = layers.SeparableConv2D(width, 3, padding="same", use_bias=False, name=f"sep{i}b")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, shortcut])
    x = layers.Conv2D(10, 3, padding="same", name="head")(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs, name="sepconv_prelu")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


@functools.lru_cache(maxsize=1)  # both weight grids of one model and seed share it
def _never_worse_case(name: str, seed: int, epochs: int) -> dict:
    """`{model, calibration, check, test}`: three disjoint sets of rows."""
    if name in ("digits_cnn", "sepconv_prelu"):
        split = load_digits()
        grey = (lambda x: x) if name == "digits_cnn" else (lambda x: _images(x)[..., :1])
        x_train, x_test = grey(split.x_train), grey(split.x_test)
        keras.utils.set_random_seed(seed)
        model = build_digits_cnn() if name == "digits_cnn" else _mini_xception(seed)
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x_train, split.y_train, epochs=epochs, batch_size=64, verbose=0)
        order = np.random.default_rng(seed).permutation(len(x_train))
        calibration, check = x_train[order[:CALIBRATION]], x_train[order[CALIBRATION:][:200]]
        return {"model": model, "calibration": calibration, "check": check, "test": x_test}
    import pretrained  # the other benchmarks' loaders of packaged pretrained models

    item = (
        pretrained.load_fer(seed)
        if name == "fer_mini_xception"
        else pretrained.load_mtcnn("onet", seed)
    )
    half = len(item.held_out) // 2
    return {
        "model": item.model,
        "calibration": item.calibration,
        "check": item.held_out[:half],
        "test": item.held_out[half:],
        "package": f"{item.package} {item.version}",
    }


def _figures(flatbuffer: bytes, model: keras.Model, test: np.ndarray) -> dict:
    fidelity = measure_fidelity(flatbuffer, model, test)
    agreements = [o.agreement for o in fidelity.outputs if o.agreement is not None]
    return {
        "agreement": round(float(np.mean(agreements)), 4) if agreements else None,
        "sqnr_db": round(float(np.mean([o.sqnr_db for o in fidelity.outputs])), 2),
    }


def never_worse_row(name: str, seed: int, per_channel: bool, epochs: int, iterations: int) -> dict:
    case = _never_worse_case(name, seed, epochs)
    model, calib, check, test = case["model"], case["calibration"], case["check"], case["test"]
    count = len(calib)

    def file_of(m: keras.Model) -> bytes:
        return tfc.convert(m, "int8", calib, num_samples=count, per_channel=per_channel)

    row: dict = {
        "model": name,
        "seed": seed,
        "per_channel": per_channel,
        "rows": {"calibration": count, "check": len(check), "test": len(test)},
    }
    row["plain"] = _figures(file_of(model), model, test)
    adaround_step = ("adaround", {"iterations": iterations})
    every = ["fold_bn", "equalize", adaround_step, "bias_correction"]
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checked, report = optimize_model(
            model, every, calib, per_channel=per_channel, held_out=check, return_report=True
        )
    row["all_checked"] = _figures(file_of(checked), model, test)
    row["all_checked"]["seconds"] = round(time.perf_counter() - start, 1)
    row["all_checked"]["kept"] = report.kept
    row["all_checked"]["dropped"] = report.dropped
    alone = [
        ("equalize", ["fold_bn", "equalize"]),
        ("bias_correction", ["fold_bn", "bias_correction"]),
    ]
    if report.dropped:  # otherwise the unchecked steps make the same model (AdaRound is seeded)
        alone.append(("all_unchecked", every))
    else:
        row["all_unchecked"] = {**row["all_checked"], "same_model_as_checked": True}
    for label, steps in alone:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(model, steps, calib, per_channel=per_channel, check=False)
        row[label] = _figures(file_of(optimized), model, test)
        row[label]["seconds"] = round(time.perf_counter() - start, 1)
    row["check_rows"] = {  # each step against the file without it, on the check rows
        "plain": report.plain,
        **{c.step: {"with": c.score_with, "without": c.score_without} for c in report.checks},
    }
    row["not_handled_warnings"] = sorted(
        {str(w.message)[:200] for w in caught if "leaves these layers" in str(w.message)}
    )
    score = lambda f: (f.get("agreement") or 0.0, f.get("sqnr_db", -1e9))  # noqa: E731
    row["checked_not_worse_than_plain"] = score(row["all_checked"]) >= score(row["plain"])
    # on both figures, the rule the check itself applies (recovery.steps.not_worse)
    row["checked_not_worse_on_both"] = not_worse(score(row["all_checked"]), score(row["plain"]))
    if "package" in case:
        row["package"] = case["package"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main_never_worse(args: argparse.Namespace) -> None:
    models = [m for m in args.models.split(",") if m]
    grids = [g == "per_channel" for g in args.grids.split(",")]
    crash = None
    rows, skipped = [], {}
    kept: dict = {}
    if args.keep_other_models:  # the rows of the models not run now, from the results file
        previous = json.loads((RESULTS / "ptq_recovery_never_worse.json").read_text())
        others = [row for row in previous["rows"] if row["model"] not in models]
        kept = {
            "models": sorted({row["model"] for row in others}),
            "from_command": previous.get("command"),
        }
        crash = previous.get("onednn_crash_probe") if "fer_mini_xception" not in models else None
        rows = others
    for seed in range(args.seeds):  # seed-major: a run cut short has every model's first seeds
        for name in models:
            if name in skipped:
                continue
            try:
                if name == "fer_mini_xception" and crash is None:
                    crash = _onednn_crash_probe(args.iterations)
                for per_channel in grids:
                    rows.append(never_worse_row(name, seed, per_channel, 8, args.iterations))
            except Exception as error:  # noqa: BLE001 - a package that is not installed
                if type(error).__name__ != "MissingPackage":
                    raise
                skipped[name] = str(error)
            write_results(
                "ptq_recovery_never_worse",
                {
                    "models": models,
                    "seeds_asked": args.seeds,
                    "adaround_iterations": args.iterations,
                    "metric": "top-1 agreement with the float model on the test rows (then SQNR)",
                    "runtime": "LiteRT (XNNPACK)",
                    "onednn_crash_probe": crash,
                    "skipped": skipped,
                    "rows_kept_from": kept or None,
                    "rows": rows,
                },
            )


def _onednn_crash_probe(iterations: int) -> dict:
    """AdaRound on fer's net with oneDNN on in its process; contained, this process goes on."""
    case = _never_worse_case("fer_mini_xception", 0, 0)
    before = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # read by AdaRound's separate process only
    probe: dict = {"adaround_process": "TF_ENABLE_ONEDNN_OPTS=1"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tfc.convert(
                case["model"],
                "int8",
                case["calibration"],
                optimize=["fold_bn", ("adaround", {"iterations": iterations})],
            )
        probe["result"] = "no crash"
    except tfc.ConversionError as error:
        probe["result"] = str(error).split("\n")[0][:400]
    finally:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = before or "0"
    probe["this_process_went_on"] = True
    probe["then"] = f"TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']} for the rows"
    print(json.dumps(probe), file=sys.stderr, flush=True)
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=300, help="AdaRound steps per layer")
    parser.add_argument("--dfq", action="store_true", help="the DFQ phenomenon study instead")
    parser.add_argument("--dfq-epochs", default="12,30", help="points of one training run")
    parser.add_argument("--recipes", default="adam,adamw", help="adam, adamw or both")
    parser.add_argument("--weight-decay", type=float, default=0.5, help="AdamW's (decoupled)")
    parser.add_argument("--never-worse", action="store_true", help="each step against plain PTQ")
    parser.add_argument("--models", default=",".join(NEVER_WORSE_MODELS))
    parser.add_argument("--grids", default="per_channel", help="per_channel and/or per_tensor")
    parser.add_argument(
        "--keep-other-models",
        action="store_true",
        help="--never-worse: keep the results file's rows of the models not in --models",
    )
    args = parser.parse_args()
    if args.dfq:
        main_dfq(args)
        return
    if args.never_worse:
        main_never_worse(args)
        return
    rows = []
    for seed in range(args.seeds):  # the file is rewritten after each seed: a long run keeps some
        rows.append(run_seed(seed, args.epochs, args.iterations))
        keys = [k for k in rows[0] if k != "seed"]
        mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
        payload = {
            "model": f"MobileNetV2 alpha 0.35, {SIZE}x{SIZE}x3, digits, {args.epochs} epochs",
            "calibration_samples": CALIBRATION,
            "adaround_iterations": args.iterations,
            "seeds_done": len(rows),
            "seeds_asked": args.seeds,
            "mean": mean,
            "rows": rows,
            "note": "timings from a loaded shared 2-core machine; rerun on a quiet one",
        }
        write_results("ptq_recovery", payload)


if __name__ == "__main__":
    main()
