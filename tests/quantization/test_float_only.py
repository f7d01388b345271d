"""A layer TFLite cannot run in int8 is named, with the reason and the way out; never a crash."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc

L = keras.layers


def _video_net() -> keras.Model:
    inputs = keras.Input((4, 6, 6, 2))
    x = L.Conv3D(4, 3, padding="same", name="clip_conv")(inputs)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, L.Dense(3)(x))


def test_quantize_model_warns_with_layer_reason_and_way_out():
    with pytest.warns(UserWarning, match=r"'clip_conv' \(Conv3D\).*CONV_3D.*float16"):
        qat = tfc.quantize_model(_video_net())
    x = np.random.default_rng(0).normal(size=(8, 4, 6, 6, 2)).astype("float32")
    qat.compile("adam", "mse")
    qat.fit(x, np.zeros((8, 3)), verbose=0)  # trains (the rank-5 fake quant no longer crashes)


def test_strict_raises_naming_the_layer():
    with pytest.raises(ValueError, match=r"'clip_conv' \(Conv3D\) cannot run in int8"):
        tfc.quantize_model(_video_net(), strict=True)


def test_annotating_it_float_accepts_it_silently():
    model = _video_net()
    config = tfc.quantization.QuantizeConfig(role="float")
    tfc.quantization.quantize_annotate_layer(model.get_layer("clip_conv"), config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tfc.quantize_model(model)


def test_int8_file_with_float_ops_is_reported_by_convert():
    x = np.random.default_rng(0).normal(size=(16, 4, 6, 6, 2)).astype("float32")
    with pytest.warns(UserWarning, match="still computes CONV_3D"):
        flatbuffer = tfc.convert(_video_net(), "int8", x)
    assert "CONV_3D" in tfc.inspect(flatbuffer).float_ops
