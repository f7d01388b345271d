"""Top-1 agreement of recurrent int8 files with their Keras model, over seeds (issue 10).

Models, on the digits-as-sequence task (each 8x8 image read as 8 steps of 8 features):
  * "LSTM" and "LSTM-stacked" (LSTM(return_sequences) -> LSTM), as in benchmarks/recurrent_bench.py;
  * "GRU" and "GRU-stacked": the same two with GRU layers (Keras's default reset_after=True);
  * "Masking-LSTM": the same LSTM behind `Masking`, on rows whose tails are padded with zeros
    (a random length of 2 to 8 steps per sequence, the keyword/text model case).
For each seed: train the float model, convert it to int8 (PTQ, 200 calibration sequences), then
one epoch of quantization-aware fine-tuning and its int8 file. Agreement is top-1 agreement on the
test split between the file and the Keras model it came from; the test accuracy of both is
recorded too (`keras_accuracy`, `int8_accuracy`); `float_ops` counts ops left in float;
`flips_on_output_ties` counts the disagreements where the file's int8 logits of Keras's class
equal the file's top logit (argmax took the other, earlier index: a tie at the output's scale);
`flips_within_one_output_step` those where Keras's own logits of the two classes differ by less
than one step of the file's output scale (`output_step`), which rounding the output alone can
flip.
No timing here (recurrent_bench.py measures latency).

`--route lstm-kernel` converts the LSTM kinds through TFLite's own fused integer LSTM kernel
(UNIDIRECTIONAL_SEQUENCE_LSTM, int8 with 16-bit internals; `recurrent_bench.lstm_kernel_file`)
instead of tfcompress's unrolled recurrence: PTQ only, as QAT simulates the unrolled ops.

`--per-step-output-ranges` gives the QAT layers returning sequences one output range per step, as
before the shared range (TFLite's PACK stores the sequence at one scale): the "before" figures.

Run: .venv/bin/python benchmarks/recurrent_agreement_bench.py [--seeds 0 1 2] [--epochs 10]
     [--kinds LSTM GRU ...] [--per-step-output-ranges] [--mode int16x8] [--route lstm-kernel]
     (writes benchmarks/results/recurrent_agreement[_per_step|_int16x8|_lstm_kernel].json; kinds not rerun
     keep their saved rows)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import write_results  # noqa: E402
from recurrent_bench import compile_model, lstm_kernel_file  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress.converter import ConversionError, run_tflite  # noqa: E402
from tfcompress.core import graph  # noqa: E402
from tfcompress.data import load_digits  # noqa: E402
from tfcompress.quantization.recurrent import _UnrolledRecurrent  # noqa: E402

L = keras.layers
UNITS = 32
KINDS = ("LSTM", "LSTM-stacked", "Masking-LSTM", "GRU", "GRU-stacked")


def padded(x: np.ndarray, seed: int) -> np.ndarray:
    """`x` with a random tail of each sequence (all but 2 to 8 steps) set to zero."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    for row, length in enumerate(rng.integers(2, x.shape[1] + 1, size=len(x))):
        x[row, length:] = 0.0
    return x


def build(kind: str) -> keras.Model:
    inputs = keras.Input((8, 8))
    cell = L.GRU if kind.startswith("GRU") else L.LSTM
    if kind.endswith("-stacked"):
        hidden = cell(UNITS)(cell(UNITS, return_sequences=True)(inputs))
    elif kind == "Masking-LSTM":
        hidden = L.LSTM(UNITS)(L.Masking()(inputs))
    else:
        hidden = cell(UNITS)(inputs)
    return keras.Model(inputs, L.Dense(10)(hidden), name=kind.lower().replace("-", "_"))


def per_step_output_ranges(qat: keras.Model) -> keras.Model:
    """`qat` (not trained yet) with one output range per step in its recurrent layers."""

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if not isinstance(layer, _UnrolledRecurrent):
            return None
        old = type(layer).from_config({**layer.get_config(), "shared_output_range": False})
        old.build_from_config(layer.get_build_config())
        for mine, theirs in zip(old._cell_weights(), layer._cell_weights(), strict=True):
            mine.assign(theirs)
        return old

    return graph.rebuild(qat, replace)


def agreement(model: keras.Model, flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> dict:
    keras_logits = np.asarray(model.predict(x, verbose=0))
    expected = keras_logits.argmax(-1)
    logits = run_tflite(flatbuffer, x)
    got = logits.argmax(-1)
    rows = np.arange(len(x))
    # a flip where the file's int8 logits tie Keras's class with the one argmax picks first:
    # the output scale, not the recurrence, decided it
    tied = logits[rows, expected] == logits.max(-1)
    # a flip where Keras's own two logits are closer than one step of the file's output scale:
    # rounding the output alone can decide it, whatever the layers before compute
    report = tfc.inspect(flatbuffer)
    output_step = report.tensors[report.outputs[0]].quantization.scale[0]
    keras_gap = keras_logits[rows, expected] - keras_logits[rows, got]
    return {
        "agreement": float(np.mean(got == expected)),
        "flips_on_output_ties": int(np.sum((got != expected) & tied)),
        "flips_within_one_output_step": int(np.sum((got != expected) & (keras_gap < output_step))),
        "output_step": float(output_step),
        "keras_accuracy": float(np.mean(expected == y)),
        "int8_accuracy": float(np.mean(got == y)),
        "float_ops": len(tfc.inspect(flatbuffer).float_ops),
    }


def measure(
    kind: str,
    seed: int,
    split,
    epochs: int,
    per_step: bool = False,
    mode: str = "int8",
    route: str = "unrolled",
) -> dict:
    x_train, x_test = split.x_train.reshape(-1, 8, 8), split.x_test.reshape(-1, 8, 8)
    if kind == "Masking-LSTM":
        x_train, x_test = padded(x_train, seed + 100), padded(x_test, seed + 200)
    keras.utils.set_random_seed(seed)
    model = compile_model(build(kind), 1e-2)
    model.fit(x_train, split.y_train, epochs=epochs, batch_size=64, verbose=0)
    if route == "lstm-kernel":  # TFLite's own LSTM kernel: PTQ only (QAT simulates the unrolled)
        try:
            return {
                "ptq": agreement(
                    model, lstm_kernel_file(model, x_train[:200]), x_test, split.y_test
                )
            }
        except ConversionError as error:
            return {"ptq": {"error": str(error).splitlines()[0]}}
    ptq = agreement(model, tfc.convert(model, mode, x_train[:200]), x_test, split.y_test)
    qat = tfc.quantize_model(model, activation_bits=16 if mode == "int16x8" else 8)
    qat = compile_model(per_step_output_ranges(qat) if per_step else qat, 1e-3)
    qat.fit(x_train, split.y_train, epochs=1, batch_size=64, verbose=0)
    qat_row = agreement(qat, tfc.convert(qat, mode, x_train[:200]), x_test, split.y_test)
    return {"ptq": ptq, "qat": qat_row}


def kept_kinds(name: str, args: argparse.Namespace) -> dict:
    """The kinds saved in results/<name>.json that this run does not measure (same seeds and
    epochs), so `--kinds GRU` adds a row without dropping the others."""
    path = Path(__file__).resolve().parent / "results" / f"{name}.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("epochs") != args.epochs:
        return {}
    return {
        kind: row
        for kind, row in saved.get("models", {}).items()
        if kind not in args.kinds and sorted(row["seeds"]) == sorted(map(str, args.seeds))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--per-step-output-ranges", action="store_true")
    parser.add_argument(
        "--route",
        default="unrolled",
        choices=("unrolled", "lstm-kernel"),
        help="lstm-kernel: PTQ through TFLite's fused integer LSTM kernel instead (LSTM kinds)",
    )
    parser.add_argument(
        "--mode",
        default="int8",
        choices=("int8", "int16x8"),
        help="int16x8: 16-bit activations (PTQ in that mode, QAT with activation_bits=16)",
    )
    args = parser.parse_args()
    if args.route == "lstm-kernel" and any(kind.startswith("GRU") for kind in args.kinds):
        parser.error("--route lstm-kernel takes LSTM kinds only (TFLite's kernel is an LSTM's)")
    per_step = args.per_step_output_ranges
    split = load_digits()
    models = {}
    for kind in args.kinds:
        runs = {
            str(seed): measure(kind, seed, split, args.epochs, per_step, args.mode, args.route)
            for seed in args.seeds
        }
        models[kind] = {
            "seeds": runs,
            **{
                f"{mode}_mean_{figure}": round(
                    float(np.mean([run[mode][figure] for run in runs.values()])), 4
                )
                for mode in ("ptq", "qat")
                for figure in ("agreement", "keras_accuracy", "int8_accuracy")
                if all(figure in run.get(mode, {}) for run in runs.values())
            },
        }
        print(kind, models[kind], flush=True)
    name = "recurrent_agreement_per_step" if per_step else "recurrent_agreement"
    if args.mode != "int8":
        name += f"_{args.mode}"
    if args.route != "unrolled":
        name += "_" + args.route.replace("-", "_")
    write_results(
        name,
        {
            "qat_output_ranges": "one per step" if per_step else "one shared by all steps",
            "task": "digits as 8 steps of 8 features; top-1 agreement of the file with Keras",
            "mode": args.mode,
            "route": args.route,
            "units": UNITS,
            "epochs": args.epochs,
            "models": {**kept_kinds(name, args), **models},
        },
    )


if __name__ == "__main__":
    main()
