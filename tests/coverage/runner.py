"""Runs one row of the coverage matrix through QAT, PTQ, pruning and clustering, end to end.

Every check trains or converts the row's real Keras model and runs the real .tflite file on LiteRT.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import tfcompress as tfc
from tests.coverage.cases import Case
from tests.fixtures.pretrained import architecture, read_weights
from tests.outputs import inference
from tfcompress.converter import run_tflite

AGREEMENT = 0.99  # top-1 agreement between the Keras QAT model and its int8 file
# the largest logit error between the Keras QAT model and its int8 file, in int8 output steps:
# a simulation that rounds where the file does stays within a few steps; a gap fails the row
# even where the clusters are far enough apart to keep the top-1 class (the rows measure the
# files themselves: convert's own check is off)
MAX_QAT_STEPS = 8.0
PTQ_AGREEMENT = 0.97  # between the float model and its int8 file: rounding is not simulated
SPARSITY = 0.5
CLUSTERS = 8
_SAMPLES = 128
_PRETRAIN_EPOCHS = 10
# QAT, pruning and clustering train each row one step, eagerly: tracing a training step costs
# 4-6x running it once (10-20x for an unrolled recurrence), and the file is what a row checks.
# Traced training of the wrapped layers: tests/quantization/test_quantize_model.py,
# tests/quantization/test_recurrent.py, tests/pruning/, tests/sharing/ and tests/contracts/.
_ONE_STEP_EAGERLY = True


@dataclass
class Outcome:
    """What one technique did on one row."""

    ok: bool
    float_ops: list[str] = field(default_factory=list)
    agreement: float | None = None
    error_steps: float | None = None
    detail: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _data(case: Case, model: keras.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training inputs, labels and test inputs of a 10-class task every row can learn.

    Float inputs are 10 well-separated clusters (a prototype per class plus noise), like real
    data, so a trained model's logits are far apart; token inputs are labelled by their first id.
    """
    rng = np.random.default_rng(1)
    count = 3 * _SAMPLES
    labels = rng.integers(0, 10, size=count)
    shape = tuple(model.inputs[0].shape[1:])
    if case.input_kind == "tokens":
        x = rng.integers(0, 16, size=(count, *shape)).astype("int32")
        x[:, 0] = labels
    else:
        # a class signal per position and one per channel (which survives global pooling)
        prototypes = rng.normal(size=(10, *shape)) + rng.normal(
            size=(10,) + (1,) * (len(shape) - 1) + shape[-1:]
        )
        x = (prototypes[labels] + 0.5 * rng.normal(size=(count, *shape))).astype("float32")
    return x[:_SAMPLES], labels[:_SAMPLES], x[_SAMPLES:]


_TRAINED: dict[str, list[np.ndarray]] = {}
# the trained weights of every row, written by tests/fixtures/make_coverage_weights.py: a row's
# pretraining costs about as much as its four checks together
WEIGHTS = Path(__file__).resolve().parent.parent / "fixtures" / "coverage_weights.npz"


def weights_key(case: Case, model: keras.Model) -> str:
    """What the saved weights of a row must match: its layer classes and weight shapes."""
    return f"{case.id}|{architecture(model)}"


def saved_weights(case: Case, model: keras.Model) -> list[np.ndarray] | None:
    """The row's trained weights from the fixture, or None when it has none for this model."""
    return read_weights(WEIGHTS, case.id, weights_key(case, model), len(model.weights))


def pretrain(case: Case, model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """A few epochs on the row's teacher task (what the fixture holds the result of)."""
    _train(model, x, y, epochs=_PRETRAIN_EPOCHS, batch=32, learning_rate=1e-2)


def trained_model(case: Case) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    """The row's float model trained a few epochs on its teacher task (trained once per row, or
    read from the fixture of trained weights when it holds this row's model).

    Trained logits are far apart, as in the models users convert; random ones are nearly tied, so
    any rounding would flip the top-1 class and the agreement would measure chance, not the file.
    """
    keras.utils.set_random_seed(0)
    model = case.build()
    x, y, x_test = _data(case, model)
    if case.id not in _TRAINED:
        weights = saved_weights(case, model)
        if weights is None:
            pretrain(case, model, x, y)
            weights = model.get_weights()
        _TRAINED[case.id] = weights
    model.set_weights(_TRAINED[case.id])
    # compiled as pretraining leaves it, whether the weights were trained here or read
    _compile(model, 1e-2, eager=False)
    return model, x, y, x_test


def _compile(model: keras.Model, learning_rate: float, eager: bool) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=eager,
    )


def _train(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    callbacks: tuple = (),
    epochs: int = 1,
    batch: int = _SAMPLES,
    learning_rate: float = 1e-3,
    eager: bool = False,
) -> None:
    _compile(model, learning_rate, eager)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=list(callbacks))


def _one_step(model: keras.Model, x: np.ndarray, y: np.ndarray, learning_rate: float) -> None:
    """One training step on all of `x`: Keras's own train step, without fit's dataset."""
    _compile(model, learning_rate, _ONE_STEP_EAGERLY)
    model.train_on_batch(x, y)


def _integer_outcome(
    model: keras.Model,
    flatbuffer: bytes,
    x: np.ndarray,
    caught: list,
    threshold: float,
    max_steps: float | None = None,
) -> Outcome:
    report = tfc.inspect(flatbuffer)
    float_ops = sorted(set(report.float_ops))
    expected = inference(model, x)
    got = np.asarray(run_tflite(flatbuffer, x))
    agreement = float((expected.argmax(-1) == got.argmax(-1)).mean())
    output = report.tensors[report.outputs[0]].quantization
    steps = None
    if output is not None:  # the largest logit error, in steps of the int8 output
        steps = round(float(np.abs(expected - got).max() / output.scale[0]), 2)
    ok = not float_ops and agreement >= threshold
    detail = ""
    if max_steps is not None and steps is not None and steps > max_steps:
        ok, detail = False, f"logits differ by up to {steps} int8 steps (at most {max_steps})"
    return Outcome(
        ok,
        float_ops,
        agreement,
        error_steps=steps,
        detail=detail,
        warnings=[str(w.message)[:300] for w in caught],
    )


def _failure(error: BaseException) -> Outcome:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return Outcome(False, detail=f"{type(error).__name__}: {' | '.join(lines[:3])[:400]}")


def run_qat(case: Case) -> Outcome:
    """quantize_model -> one training step -> convert(mode="int8") -> zero float ops, agreement."""
    model, x, y, x_test = trained_model(case)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            qat = tfc.quantize_model(model)
            _one_step(qat, x, y, learning_rate=1e-4)
            flatbuffer = tfc.convert(qat, "int8", x[:64], check=False)
        return _integer_outcome(qat, flatbuffer, x_test, caught, AGREEMENT, MAX_QAT_STEPS)
    except Exception as error:  # noqa: BLE001 - a row reports its failure, the matrix goes on
        return _failure(error)


def run_ptq(case: Case) -> Outcome:
    """convert(float model, mode="int8", data) -> zero float ops, agreement with the float model."""
    model, x, _, x_test = trained_model(case)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flatbuffer = tfc.convert(model, "int8", x[:64], check=False)
        return _integer_outcome(model, flatbuffer, x_test, caught, PTQ_AGREEMENT)
    except Exception as error:  # noqa: BLE001
        return _failure(error)


def _weight_tensors(flatbuffer: bytes) -> list[np.ndarray]:
    """The weight buffers of an int8 file (int8 kernels and tables, and the float kernels of
    layers TFLite runs in float only), at least 16 values each, with the zero point subtracted
    (an Embedding table is stored with one), so a zero weight reads 0."""
    report = tfc.inspect(flatbuffer)
    found = []
    for tensor in report.tensors:
        if not tensor.is_constant or tensor.buffer is None or tensor.buffer.size < 16:
            continue
        if tensor.dtype == "FLOAT32":
            found.append(tensor.buffer)
        elif tensor.dtype == "INT8":
            quantization = tensor.quantization
            zero_point = (
                quantization.zero_point[0] if quantization and not quantization.per_channel else 0
            )
            found.append(tensor.buffer.astype(np.int32) - zero_point)
    return found


def _kernel_zeros(model: keras.Model) -> int:
    """Exact zeros in the weights pruning acts on (kernels, depthwise kernels, tables)."""
    names = ("kernel", "embeddings")
    return sum(
        int((keras.ops.convert_to_numpy(w) == 0).sum())
        for w in model.weights
        if any(name in w.path.split("/")[-1] for name in names)
    )


def run_pruning(case: Case) -> Outcome:
    """prune_low_magnitude -> train -> strip_pruning -> int8: the zeros survive in the file.

    The default allocation spreads the sparsity unevenly over the kernels, so the check is the
    overall share of zeros in the file's int8 kernels, and no fewer zeros than the stripped model.
    """
    model, x, y, _ = trained_model(case)
    try:
        schedule = tfc.pruning.ConstantSparsity(SPARSITY, begin_step=0, frequency=1)
        pruned = tfc.prune_low_magnitude(model, schedule=schedule)
        _train(
            pruned,
            x,
            y,
            (tfc.pruning.UpdatePruningStep(),),
            batch=_SAMPLES // 2,
            eager=_ONE_STEP_EAGERLY,
        )
        stripped = tfc.strip_pruning(pruned)
        flatbuffer = tfc.convert(stripped, "int8", x[:64], check=False)
        kernels = _weight_tensors(flatbuffer)
        zeros = sum(int((w == 0).sum()) for w in kernels)
        share = zeros / max(sum(w.size for w in kernels), 1)
        # int8 rounding only adds zeros; allow 1% for the converter's own rewrites of a kernel
        ok = bool(kernels) and share >= SPARSITY - 0.02 and zeros >= 0.99 * _kernel_zeros(stripped)
        detail = f"zeros in the int8 kernels: {share:.3f} ({zeros}; stripped model {_kernel_zeros(stripped)})"
        return Outcome(ok, detail=detail)
    except Exception as error:  # noqa: BLE001
        return _failure(error)


def run_clustering(case: Case) -> Outcome:
    """cluster_weights -> train -> strip_clustering -> int8 (per tensor): <= N values per kernel."""
    model, x, y, _ = trained_model(case)
    try:
        clustered = tfc.cluster_weights(model, number_of_clusters=CLUSTERS)
        _one_step(clustered, x, y, learning_rate=1e-3)
        plain = tfc.strip_clustering(clustered)
        flatbuffer = tfc.convert(plain, "int8", x[:64], per_channel=False, check=False)
        counts = [len(np.unique(w)) for w in _weight_tensors(flatbuffer)]
        ok = bool(counts) and max(counts) <= CLUSTERS
        return Outcome(ok, detail=f"unique values per int8 kernel: {counts}")
    except Exception as error:  # noqa: BLE001
        return _failure(error)


TECHNIQUES = {"qat": run_qat, "ptq": run_ptq, "pruning": run_pruning, "clustering": run_clustering}
