"""convert(..., target="micro"): a static batch-1 file TFLM runs, or a refusal naming the layer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.tflite.runtime import run_tflite

pytest.importorskip("tflite_micro")


def _ops(flatbuffer: bytes) -> set[str]:
    return {op.name for graph in tfc.inspect(flatbuffer).subgraphs for op in graph.ops}


def _upsampling_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.UpSampling2D(2, name="up")(x)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, name="head")(x))


def test_upsampling_becomes_nearest_resizing_and_the_file_runs_on_tflm(rng):
    model = _upsampling_model()
    data = rng.random((16, 4, 4, 1), dtype=np.float32)
    phone = tfc.convert(model, "int8", data)
    assert "TILE" in _ops(phone) and not tfc.micro.check(phone).runs
    micro = tfc.convert(model, "int8", data, target="micro")
    assert "TILE" not in _ops(micro) and "RESIZE_NEAREST_NEIGHBOR" in _ops(micro)
    assert tfc.inspect(micro).tensors[tfc.inspect(micro).inputs[0]].shape[0] == 1  # static batch
    report = tfc.micro.check(micro, data)
    assert report.runs and all(o.max_difference <= 1 for o in report.outputs)
    # the same integer model: the rewrite computes exactly what UpSampling2D computes
    one_by_one = np.concatenate([run_tflite(micro, sample[None]) for sample in data])
    np.testing.assert_array_equal(one_by_one, run_tflite(phone, data))
    # convert's own check ran the micro file on TFLM itself, the phone file on XNNPACK
    assert micro.fidelity.runtime == "TensorFlow Lite Micro" and micro.fidelity.passed
    assert phone.fidelity.runtime == "LiteRT (XNNPACK)"


def test_dense_on_sequences_drops_the_dynamic_batch_arithmetic(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    x = keras.layers.Dense(6, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    data = rng.random((16, 8, 8), dtype=np.float32)
    assert not tfc.micro.check(tfc.convert(model, "int8", data)).runs  # REDUCE_PROD
    micro = tfc.convert(model, "int8", data, target="micro")
    assert "REDUCE_PROD" not in _ops(micro) and tfc.micro.check(micro).runs


def test_a_layer_tflm_cannot_run_is_refused_with_the_op_layer_and_fix(rng):
    inputs = keras.Input((4, 4, 4, 1))
    model = keras.Model(
        inputs, keras.layers.Flatten()(keras.layers.Conv3D(2, 1, name="c3")(inputs))
    )
    data = rng.random((8, 4, 4, 4, 1), dtype=np.float32)
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            tfc.ConversionError,
            match=r"does not run on TensorFlow Lite Micro: op CONV_3D \(layer 'c3'\).*Conv2D",
        ),
    ):
        tfc.convert(model, "int8", data, target="micro")


@pytest.mark.parametrize("mode", ["float16", "dynamic", "edgetpu"])
def test_micro_takes_int8_int16x8_and_float32_only(mode):
    with pytest.raises(tfc.ConversionError, match="target='micro' takes mode 'int8', 'int16x8'"):
        tfc.convert(_upsampling_model(), mode, target="micro")


def test_an_unknown_target_lists_the_targets():
    with pytest.raises(tfc.ConversionError, match="choose one of phone, micro"):
        tfc.convert(_upsampling_model(), "float32", target="mcu")


def _int16x8_block_model() -> keras.Model:
    """Conv2D, DepthwiseConv2D, Add, Concatenate, pooling, LeakyReLU and tanh: int16x8 on TFLM."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.LeakyReLU(0.1)(keras.layers.Add()([x, y]))
    x = keras.layers.Concatenate()([x, keras.layers.Conv2D(2, 1, activation="tanh")(x)])
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(x))


def test_int16x8_file_for_micro_runs_on_tflm_close_to_the_reference_kernels(rng):
    data = rng.random((32, 8, 8, 2), dtype=np.float32)

    micro = tfc.convert(_int16x8_block_model(), "int16x8", data, target="micro")

    info = tfc.inspect(micro)
    activations = {t.dtype for t in info.tensors if not t.is_constant and t.dtype != "INT32"}
    assert activations == {"INT16"}
    weights = {t.dtype for t in info.tensors if t.is_constant and t.dtype not in ("INT32", "INT64")}
    assert weights == {"INT8"}  # 8-bit weights (16x8 biases are INT64)
    assert info.tensors[info.inputs[0]].shape[0] == 1
    report = tfc.micro.check(micro, data)
    assert report.runs
    [output] = report.outputs
    assert output.dtype == "INT16" and output.max_difference <= 3  # int16 steps, of 65,536


def test_int16x8_refuses_an_op_tflm_runs_in_int8_only_and_says_to_use_int8(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.GlobalMaxPooling2D(name="pool")(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    data = rng.random((16, 6, 6, 2), dtype=np.float32)

    with pytest.raises(
        tfc.ConversionError,
        match=r"int16x8 file .* does not run on TensorFlow Lite Micro: op REDUCE_MAX "
        r"\(layer 'pool'\)\. .*16-bit activations.* Fix: convert with mode='int8'",
    ):
        tfc.convert(model, "int16x8", data, target="micro")
    assert tfc.micro.check(tfc.convert(model, "int8", data, target="micro"), data).runs


def test_int16x8_file_with_a_sum_runs_on_tflm(rng):
    inputs = keras.Input((6,))
    unit = keras.layers.UnitNormalization(name="unit")(keras.layers.Dense(8)(inputs))
    data = rng.normal(size=(16, 6)).astype(np.float32)

    converted = tfc.convert(keras.Model(inputs, unit), "int16x8", data, target="micro")

    assert "SUM" in {op.name for op in tfc.inspect(converted).ops}
    # within one int8 step (256 int16 steps) of LiteRT's optimized SUM kernel
    assert tfc.micro.check(converted, data).outputs[0].max_difference < 256
