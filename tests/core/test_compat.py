"""The Keras, TF and LiteRT private behaviour tfcompress relies on, pinned in one place.

`tfcompress.core.compat` is the only module (with `core.graph`) that touches private names of
Keras or TensorFlow; each test here fails with the name that moved when a release changes one.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.core import compat
from tfcompress.models import build_digits_cnn
from tfcompress.quantization import QuantizeWrapper
from tfcompress.tflite.runtime import make_interpreter, run_tflite


def test_keras3_and_tf_keras_objects_are_told_apart():
    tf_keras = pytest.importorskip("tf_keras")
    model = build_digits_cnn(width=4)
    assert not compat.is_tf_keras(model) and not compat.is_tf_keras(model.layers[1])
    legacy = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    assert compat.is_tf_keras(legacy) and compat.is_tf_keras(legacy.layers[0])
    assert not compat.is_tf_keras(np.zeros(2))
    assert compat.tfmot_wrapper_names(model) == []


def test_nested_layers_reach_inside_models_and_wrappers():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner_dense")])
    inputs = keras.Input((3,))
    wrapped = keras.layers.TimeDistributed(keras.layers.Dense(2, name="td_dense"))
    outer = keras.Model(inputs, [inner(inputs), wrapped(keras.layers.Reshape((1, 3))(inputs))])
    names = {layer.name for layer in compat.nested_layers(outer)}
    assert {"inner_dense", "td_dense"} <= names


class _UserLayer(keras.layers.Layer):
    pass


def test_keras_and_tfcompress_layers_are_told_from_the_users():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert compat.is_library_layer(keras.layers.MultiHeadAttention(2, 2))
    assert compat.is_library_layer(QuantizeWrapper(dense))
    assert not compat.is_library_layer(_UserLayer())


def test_a_built_layer_takes_new_state_only_when_unlocked():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    with compat.tracking_unlocked(layer):
        layer.extra = keras.Variable(np.zeros(1, "float32"), name="extra")
    assert any(weight.name == "extra" for weight in layer.weights)


def test_convnext_layer_scale_is_found():
    layer_scale = compat.convnext_layer_scale_class()
    assert layer_scale is not None and issubclass(layer_scale, keras.layers.Layer)


def test_converter_flags_and_mlir_quantize_compute_what_the_converter_writes():
    model = build_digits_cnn(width=4)
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype("float32")

    def converter():
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([sample[None]] for sample in x)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
        return c

    whole = converter().convert()
    calibrating = converter()
    compat.disable_per_channel_dense(calibrating)
    assert compat.per_channel_flags(calibrating) == (True, False)
    compat.disable_per_channel_weights(calibrating)
    assert compat.per_channel_flags(calibrating) == (False, False)
    plain = converter()
    compat.calibrate_only(plain)
    calibrated = plain.convert()
    quantized = compat.mlir_quantize(
        calibrated,
        disable_per_channel=False,
        fully_quantize=False,
        input_data_type=tf.int8,
        output_data_type=tf.int8,
        denylisted_nodes=None,
        disable_per_channel_for_dense_layers=False,
    )
    # the same integer model: identical outputs on LiteRT (the files' metadata may differ)
    np.testing.assert_array_equal(run_tflite(quantized, x), run_tflite(whole, x))


def test_litert_interpreter_and_schema_are_found():
    interpreter_class = compat.litert_interpreter_class()
    assert hasattr(interpreter_class, "invoke")
    assert hasattr(compat.tflite_schema(), "ModelT")


def test_litert_names_the_ops_a_delegate_took():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    int8 = make_interpreter(tfc.convert(model, "int8", x, check=False))
    assert "DELEGATE" in compat.litert_op_names(int8)  # XNNPACK took the fully connected op
    builtin = make_interpreter(tfc.convert(model, "int8", x, check=False), builtin_only=True)
    assert compat.litert_op_names(builtin) == ["FULLY_CONNECTED"]
