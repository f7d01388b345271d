"""Keras layers mapped to the TFLite ops that implement them, from the converter's tensor names."""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.export import convert
from tfcompress.tflite.flatbuffer import inspect
from tfcompress.tflite.layer_map import map_layers


def _conv1d_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    x = keras.layers.Conv1D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="seq")


def test_a_layer_split_over_several_ops_is_one_row_and_kept_float_whole() -> None:
    model = _conv1d_model()
    x = np.random.default_rng(0).random((32, 8, 8), np.float32)
    flatbuffer = convert(model, "int8", x, keep_float=["conv"])
    rows = map_layers(flatbuffer, model)
    first = rows[0]
    # Conv1D is EXPAND_DIMS -> CONV_2D (BatchNorm folded, ReLU fused) -> reshape; Dropout is nothing
    assert first.layer == "relu" and first.fused == ["conv", "bn", "drop"]
    assert first.reference == "drop"
    graph = inspect(flatbuffer).subgraphs[0]
    conv = [op for op in graph.ops if op.name == "CONV_2D"]
    assert len(conv) == 1 and conv[0].computes_in_float
    assert any(op.endswith(":CONV_2D") for op in first.ops)
    fc = [op for op in graph.ops if op.name == "FULLY_CONNECTED"]
    assert fc[0].input_dtypes[0] == "INT8"  # the rest of the file stays int8
    assert [row.layer for row in rows[1:]] == ["gap", "logits"]
