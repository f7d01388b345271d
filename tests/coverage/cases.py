"""The coverage matrix's rows: every layer class `keras.layers` exports, in a tiny model, or a skip.

`layer_classes()` enumerates `keras.layers` itself, so a layer that a new Keras version adds shows up
as a row without a case (a failing test) until it gets a case here or a reason in `SKIPS`.
`tests/coverage/test_matrix.py` runs the rows; `benchmarks/coverage_bench.py` writes
`docs/reference/coverage.md` from the same table, with tfmot's column beside ours.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops

L = keras.layers


@dataclass(frozen=True)
class Case:
    """One row: `layer` (a `keras.layers` class name) in its `variant`, inside `build()`'s model."""

    layer: str
    variant: str
    build: Callable[..., Any]  # build(K=keras) -> model; K may be tf_keras (tfmot's column)
    input_kind: str = "float"  # "float", or "tokens" (int32 ids in [0, 16))
    prunable: bool = False  # has a kernel that pruning and clustering act on

    @property
    def id(self) -> str:
        return f"{self.layer}-{self.variant}" if self.variant else self.layer


# Rows that cannot work, and why. Each reason says what to do instead.
_PREPROCESSING = (
    "preprocessing on strings, integer ids or whole images with data-dependent statistics: run it "
    "in the tf.data input pipeline, before the model you convert"
)
_AUGMENTATION = (
    "random augmentation: the identity at inference; quantize_model and convert keep it out of the "
    "integer graph (it is a passthrough). Its inference row is tested with RandomFlip"
)
_NO_3D_POOLING = (
    "TFLite has no 3-D pooling op (the converter refuses tf.AvgPool3D/MaxPool3D in every mode, "
    "float32 included): pool with a strided Conv3D, or reshape to 2-D and pool there"
)
SKIPS: dict[str, str] = {
    "Layer": "base class: a custom layer is given a role with quantize_annotate_layer or "
    "register_quantize_config (tested in tests/quantization)",
    "Wrapper": "base class of wrappers; its subclasses (Bidirectional, TimeDistributed) have rows",
    "InputLayer": "in every row (keras.Input)",
    "FlaxLayer": "JAX backend only; tfcompress runs on the TensorFlow backend",
    "JaxLayer": "JAX backend only; tfcompress runs on the TensorFlow backend",
    "TorchModuleWrapper": "PyTorch backend only; tfcompress runs on the TensorFlow backend",
    "TFSMLayer": "calls a SavedModel's function; convert the SavedModel directory itself "
    "(tfc.convert accepts it)",
    "Pipeline": "a container of preprocessing layers: " + _PREPROCESSING,
    "GRUCell": "a cell: runs inside RNN/GRU, whose rows cover it",
    "LSTMCell": "a cell: runs inside RNN/LSTM, whose rows cover it",
    "SimpleRNNCell": "a cell: runs inside RNN/SimpleRNN, whose rows cover it",
    "StackedRNNCells": "cells stacked inside RNN; stack the RNN layers instead (the stacked "
    "LSTM row covers it)",
    "ConvLSTM1D": "convolutional recurrence: TFLite has no integer kernel for its loop; keep it "
    "in float (quantize_annotate_layer(layer, QuantizeConfig(role='float'))) and use "
    "mode='dynamic' or 'float16'",
    "ConvLSTM2D": "convolutional recurrence: TFLite has no integer kernel for its loop; keep it "
    "in float and use mode='dynamic' or 'float16'",
    "ConvLSTM3D": "convolutional recurrence: TFLite has no integer kernel for its loop; keep it "
    "in float and use mode='dynamic' or 'float16'",
    "CategoryEncoding": _PREPROCESSING,
    "Discretization": _PREPROCESSING,
    "Hashing": _PREPROCESSING,
    "HashedCrossing": _PREPROCESSING,
    "IntegerLookup": _PREPROCESSING,
    "StringLookup": _PREPROCESSING,
    "TextVectorization": _PREPROCESSING,
    "AutoContrast": _PREPROCESSING,
    "Equalization": _PREPROCESSING,
    "ContrastLimitedAdaptiveHistogramEqualization": _PREPROCESSING,
    "Solarization": _PREPROCESSING,
    "MaxNumBoundingBoxes": "bounding-box preprocessing: " + _PREPROCESSING,
    "MelSpectrogram": "audio front end (STFT with complex intermediates): compute it in the "
    "input pipeline and feed the spectrogram to the model",
    "STFTSpectrogram": "audio front end (STFT with complex intermediates): compute it in the "
    "input pipeline and feed the spectrogram to the model",
    "AveragePooling3D": _NO_3D_POOLING,
    "MaxPooling3D": _NO_3D_POOLING,
    "AdaptiveAveragePooling3D": _NO_3D_POOLING,
    "AdaptiveMaxPooling3D": _NO_3D_POOLING,
    "CutMix": "mixes labels too: a training-data augmentation for tf.data",
    "MixUp": "mixes labels too: a training-data augmentation for tf.data",
    "AugMix": _AUGMENTATION,
    "RandAugment": _AUGMENTATION,
}
_RANDOM_AUGMENTATION = (
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "RandomCrop",
)
for _name in _RANDOM_AUGMENTATION:
    SKIPS[_name] = _AUGMENTATION


def layer_classes() -> dict[str, type]:
    """Every layer class `keras.layers` exports, once each (aliases such as Convolution2D folded)."""
    found: dict[type, str] = {}
    for name in sorted(dir(L)):
        value = getattr(L, name)
        if name.startswith("_") or not inspect.isclass(value):
            continue
        if not issubclass(value, L.Layer):
            continue
        # keep the class's own name (Conv2D, not its alias Convolution2D)
        if value not in found or name == value.__name__:
            found[value] = name
    return {name: klass for klass, name in found.items()}


# -- tiny models -------------------------------------------------------------------------------
# Each builder takes the Keras module (`keras`, or `tf_keras` for tfmot's column) and returns a
# functional model: input -> the layer under test -> Flatten -> Dense(10) logits.
# "steps": the LSTM and GRU rows' sequences, short because QAT unrolls every step into the graph
SHAPES = {
    "flat": (16,),
    "seq": (8, 8),
    "steps": (4, 8),
    "img": (8, 8, 3),
    "vol": (4, 4, 4, 3),
    "tokens": (8,),
}
Make = Callable[[Any], Any]  # K -> a layer (or a callable on tensors)


def _model(shape: str, body: Callable[[Any, Any], Any], name: str) -> Callable[[Any], Any]:
    def build(K: Any = keras) -> Any:  # noqa: N803 - K is the Keras module
        dtype = "int32" if shape == "tokens" else "float32"
        inputs = K.Input(SHAPES[shape], dtype=dtype)
        x = body(K, inputs)
        if len(x.shape) > 2:
            x = K.layers.Flatten()(x)
        return K.Model(inputs, K.layers.Dense(10, name="head")(x), name=name)

    return build


def _name(layer: str, variant: str) -> str:
    return f"{layer}_{variant}".lower().strip("_")


def _row(
    layer: str,
    variant: str,
    shape: str,
    make: Make,
    before: Make | None = None,
    bn: bool = False,
    prunable: bool = False,
) -> Case:
    """`before` (a layer giving the tested one a realistic input) -> `make` -> optional BN+ReLU."""

    def body(K: Any, x: Any) -> Any:  # noqa: N803
        if before is not None:
            x = before(K)(x)
        x = make(K)(x)
        if bn:
            x = K.layers.ReLU()(K.layers.BatchNormalization()(x))
        return x

    kind = "tokens" if shape == "tokens" else "float"
    return Case(layer, variant, _model(shape, body, _name(layer, variant)), kind, prunable)


def _merge(layer: str, make: Make, shape: str = "flat") -> Case:
    def body(K: Any, x: Any) -> Any:  # noqa: N803
        a = K.layers.Dense(8, name="a")(x)
        b = K.layers.Dense(8, name="b")(x)
        return make(K)([a, b])

    return Case(layer, "", _model(shape, body, layer.lower()))


def _self_attention(layer: str, make: Make, list_input: bool = False) -> Case:
    def body(K: Any, x: Any) -> Any:  # noqa: N803
        x = K.layers.Dense(8, name="pre")(x)
        return make(K)([x, x]) if list_input else make(K)(x, x)

    return Case(layer, "", _model("seq", body, layer.lower()))


_DIMS = {1: "seq", 2: "img", 3: "vol"}
_channels = lambda K: K.layers.Dense(8, name="pre")  # noqa: E731


def _conv_cases() -> list[Case]:
    cases: list[Case] = []

    def conv(name: str, dims: int, **kwargs: Any) -> None:
        make = lambda K, n=name: getattr(K.layers, n)(**kwargs)  # noqa: E731
        cases.append(_row(name, "", _DIMS[dims], make, prunable=True))
        cases.append(_row(name, "bn", _DIMS[dims], make, bn=True, prunable=True))

    for dims in (1, 2, 3):
        conv(f"Conv{dims}D", dims, filters=4, kernel_size=3, padding="same")
        conv(f"Conv{dims}DTranspose", dims, filters=4, kernel_size=3, strides=2, padding="same")
    for dims in (1, 2):
        conv(f"DepthwiseConv{dims}D", dims, kernel_size=3, padding="same")
        conv(f"SeparableConv{dims}D", dims, filters=4, kernel_size=3, padding="same")
    strided = lambda K: K.layers.Conv2D(4, 3, strides=2, activation="relu")  # noqa: E731
    cases.append(_row("Conv2D", "strided-relu", "img", strided, prunable=True))
    return cases


def _spatial_cases() -> list[Case]:
    cases = []
    for dims, shape in _DIMS.items():

        def add(name: str, *args: Any, shape: str = shape) -> None:
            make = lambda K, n=name, a=args: getattr(K.layers, n)(*a)  # noqa: E731
            # after a Dense(8) on the channel axis, as in a real net (not 3 raw input channels)
            cases.append(_row(name, "", shape, make, before=_channels))

        if dims < 3:  # 3-D pooling: see SKIPS
            add(f"AveragePooling{dims}D", 2)
            add(f"MaxPooling{dims}D", 2)
            add(f"AdaptiveAveragePooling{dims}D", (2,) * dims)
            add(f"AdaptiveMaxPooling{dims}D", (2,) * dims)
        add(f"GlobalAveragePooling{dims}D")
        add(f"GlobalMaxPooling{dims}D")
        add(f"ZeroPadding{dims}D", 1)
        add(f"Cropping{dims}D", 1)
        add(f"UpSampling{dims}D", 2)
        add(f"SpatialDropout{dims}D", 0.2)
    return cases


ACTIVATIONS = (
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "softmax",
    "silu",
    "gelu",
    "elu",
    "selu",
    "leaky_relu",
    "hard_sigmoid",
    "hard_silu",
    "softplus",
    "softsign",
    "log_softmax",
    "mish",
    "linear",
)
_dense = lambda K: K.layers.Dense(16, name="pre")  # noqa: E731
_conv = lambda K: K.layers.Conv2D(4, 1, name="pre")  # noqa: E731


def _recurrent_cases() -> list[Case]:
    cases = []
    for name in ("LSTM", "GRU", "SimpleRNN"):
        shape = "seq" if name == "SimpleRNN" else "steps"  # its 4-step rows end in near-ties
        plain = lambda K, n=name: getattr(K.layers, n)(8)  # noqa: E731
        sequences = lambda K, n=name: getattr(K.layers, n)(8, return_sequences=True)  # noqa: E731
        backwards = lambda K, n=name: getattr(K.layers, n)(8, go_backwards=True)  # noqa: E731
        cases.append(_row(name, "", shape, plain, prunable=True))
        cases.append(_row(name, "sequences", shape, sequences, prunable=True))
        cases.append(_row(name, "stacked", shape, plain, before=sequences, prunable=True))
        cases.append(_row(name, "backwards", shape, backwards, prunable=True))
        both = lambda K, n=name: K.layers.Bidirectional(getattr(K.layers, n)(8))  # noqa: E731
        cases.append(_row("Bidirectional", name.lower(), shape, both, prunable=True))
    cell = lambda K: K.layers.RNN(K.layers.LSTMCell(8))  # noqa: E731
    cases.append(_row("RNN", "lstmcell", "steps", cell, prunable=True))
    return cases


def all_cases() -> list[Case]:
    """Every row of the matrix, in a stable order."""
    cases = _conv_cases()
    einsum = lambda K: K.layers.EinsumDense("abc,cd->abd", (8, 4), bias_axes="d")  # noqa: E731
    cases += [
        _row("Dense", "", "flat", lambda K: K.layers.Dense(8), prunable=True),
        _row("Dense", "bn", "flat", lambda K: K.layers.Dense(8), bn=True, prunable=True),
        _row("Dense", "sequence", "seq", lambda K: K.layers.Dense(8), prunable=True),
        _row("EinsumDense", "", "seq", einsum, prunable=True),
        _row("Embedding", "", "tokens", lambda K: K.layers.Embedding(16, 8), prunable=True),
        _row("ReversibleEmbedding", "", "tokens", lambda K: K.layers.ReversibleEmbedding(16, 8)),
        _row(
            "SpectralNormalization",
            "",
            "img",
            lambda K: K.layers.SpectralNormalization(K.layers.Conv2D(4, 3)),
        ),
        _row(
            "TimeDistributed", "dense", "seq", lambda K: K.layers.TimeDistributed(K.layers.Dense(4))
        ),
    ]
    cases += _spatial_cases()
    for activation in ACTIVATIONS:
        make = lambda K, a=activation: K.layers.Activation(a)  # noqa: E731
        cases.append(_row("Activation", activation, "flat", make, before=_dense))
    layers = lambda name, *args, **kwargs: (  # noqa: E731
        lambda K: getattr(K.layers, name)(*args, **kwargs)
    )
    cases += [
        _row("ReLU", "", "flat", layers("ReLU"), before=_dense),
        _row("ReLU", "max6", "flat", layers("ReLU", max_value=6.0), before=_dense),
        _row("LeakyReLU", "", "flat", layers("LeakyReLU"), before=_dense),
        _row("PReLU", "", "img", layers("PReLU"), before=_conv),
        _row("ELU", "", "flat", layers("ELU"), before=_dense),
        _row("Softmax", "", "flat", layers("Softmax"), before=_dense),
        _row("BatchNormalization", "unfolded", "img", layers("BatchNormalization")),
        _row("LayerNormalization", "", "seq", layers("LayerNormalization"), before=_dense),
        _row("RMSNormalization", "", "seq", layers("RMSNormalization"), before=_dense),
        _row("GroupNormalization", "", "img", layers("GroupNormalization", 2), before=_conv),
        _row("UnitNormalization", "", "flat", layers("UnitNormalization"), before=_dense),
        _row(
            "Normalization",
            "",
            "img",
            layers("Normalization", mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 0.5]),
        ),
        _row("Rescaling", "", "img", layers("Rescaling", 0.25, offset=-1.0)),
        _row("Resizing", "", "img", layers("Resizing", 4, 4)),
        _row("CenterCrop", "", "img", layers("CenterCrop", 6, 6)),
        _row("RandomFlip", "inference", "img", layers("RandomFlip")),
        _row("Dropout", "", "flat", layers("Dropout", 0.2), before=_dense),
        _row("AlphaDropout", "", "flat", layers("AlphaDropout", 0.2), before=_dense),
        _row("GaussianDropout", "", "flat", layers("GaussianDropout", 0.2), before=_dense),
        _row("GaussianNoise", "", "flat", layers("GaussianNoise", 0.2), before=_dense),
        _row("ActivityRegularization", "", "flat", layers("ActivityRegularization"), before=_dense),
        _row("Identity", "", "flat", layers("Identity"), before=_dense),
        _row("Flatten", "", "img", layers("Flatten")),
        _row("Reshape", "", "img", layers("Reshape", (16, 12))),
        _row("Permute", "", "seq", layers("Permute", (2, 1))),
        _row("RepeatVector", "", "flat", layers("RepeatVector", 3), before=_dense),
        _row("Masking", "", "seq", layers("GlobalAveragePooling1D"), before=layers("Masking")),
        _row("Lambda", "ops", "flat", layers("Lambda", lambda t: ops.abs(t) * 0.5), before=_dense),
    ]
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"):
        cases.append(_merge(name, layers(name)))
    cases.append(_merge("Dot", layers("Dot", axes=2), shape="seq"))  # (8, 8) @ (8, 8)^T
    cases += [
        _self_attention("MultiHeadAttention", layers("MultiHeadAttention", 2, 4)),
        _self_attention(
            "GroupQueryAttention",
            layers("GroupQueryAttention", 4, num_query_heads=2, num_key_value_heads=1),
        ),
        _self_attention("Attention", layers("Attention"), list_input=True),
        _self_attention("AdditiveAttention", layers("AdditiveAttention"), list_input=True),
    ]
    cases += _recurrent_cases()
    return cases
