"""The offline Edge TPU report applies Coral's rules, including the single cut to the CPU."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

import tfcompress as tfc


def _model_with_unsupported_op_in_the_middle() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.LeakyReLU(negative_slope=0.1)(x)  # LEAKY_RELU: not on the Edge TPU
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def test_edgetpu_digits_model_maps_fully(trained_digits_cnn, digits):
    report = tfc.edgetpu_report(tfc.convert(trained_digits_cnn, "edgetpu", digits.x_train[:50]))
    assert report.fully_mapped and report.cpu_ops == []
    assert {op.name for op in report.tpu_ops} >= {"CONV_2D", "FULLY_CONNECTED"}


def test_first_unsupported_op_sends_everything_after_it_to_the_cpu(digits):
    flatbuffer = tfc.convert(
        _model_with_unsupported_op_in_the_middle(), "edgetpu", digits.x_train[:50]
    )
    report = tfc.edgetpu_report(flatbuffer)
    names = [op.name for op in report.ops]
    cut = names.index("LEAKY_RELU")
    assert all(op.on_tpu for op in report.ops[:cut])
    assert not any(op.on_tpu for op in report.ops[cut:])
    assert "supported-op list" in report.ops[cut].reason
    assert all("follows an op" in op.reason for op in report.ops[cut + 1 :])


def test_float_model_stays_on_the_cpu_with_the_dtype_as_reason(trained_digits_cnn):
    report = tfc.edgetpu_report(tfc.convert(trained_digits_cnn, "float32"))
    assert report.tpu_ops == []
    assert "FLOAT32" in report.cpu_ops[0].reason


def test_dynamic_batch_is_reported(trained_digits_cnn, digits):
    # mode="int8" keeps a dynamic batch dimension; the Edge TPU needs static shapes
    report = tfc.edgetpu_report(tfc.convert(trained_digits_cnn, "int8", digits.x_train[:50]))
    assert not report.fully_mapped
    assert "dynamic shape" in report.cpu_ops[0].reason


def test_per_channel_dense_weights_are_reported(digits):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    batch_one = [tf.TensorSpec((1, 8, 8, 1), tf.float32)]
    int8 = tfc.convert(model, "int8", digits.x_train[:20], input_signature=batch_one)
    report = tfc.inspect(int8)
    fc = next(op for op in report.ops if op.name == "FULLY_CONNECTED")
    if not report.tensors[fc.inputs[1]].quantization.per_channel:
        pytest.skip("this converter quantizes Dense weights per tensor already")
    assert "per-channel" in tfc.edgetpu_report(report).ops[fc.index].reason


def test_report_prints_and_serializes(trained_digits_cnn, digits):
    report = tfc.edgetpu_report(tfc.convert(trained_digits_cnn, "edgetpu", digits.x_train[:50]))
    assert "ops on the TPU" in report.summary()
    assert report.to_dict()["fully_mapped"] is True
