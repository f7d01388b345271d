"""tfmot-style QuantizeConfig subclasses on Conv2D: honoured by quantize_apply and quantize_model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.quantization import (
    CustomQuantizeWrapper,
    QuantizeConfig,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)
from tfcompress.quantization.quantizers import LastValueQuantizer, MovingAverageQuantizer


class PerChannelConvConfig(QuantizeConfig):
    """Per-channel symmetric kernel, the output quantized by a moving-average range."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, LastValueQuantizer(8, True, True, True))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        return

    def set_quantize_activations(self, layer, quantize_activations):
        return

    def get_output_quantizers(self, layer):
        return [MovingAverageQuantizer(8, False, False, False)]

    def get_config(self):
        return {}


def _conv_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="head"),
        ]
    )


@pytest.fixture(scope="session")
def trained(digits):
    keras.utils.set_random_seed(0)
    model = _conv_model()
    quantize_annotate_layer(model.get_layer("conv"), PerChannelConvConfig())
    qat = quantize_apply(quantize_annotate_model(model))
    qat.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    qat.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    return qat


def test_custom_conv_config_trains_its_kernel_through_the_quantizer(trained, digits):
    (wrapper,) = [layer for layer in trained.layers if isinstance(layer, CustomQuantizeWrapper)]
    names = sorted(w.path.rsplit("/", 1)[-1] for w in wrapper.non_trainable_weights)
    assert names == ["kernel_max", "kernel_min", "output_0_max", "output_0_min", "output_0_seen"]
    kernel_max = next(w for w in wrapper.non_trainable_weights if w.path.endswith("kernel_max"))
    assert kernel_max.shape == (4,)  # per_axis: one range per output channel
    assert trained.evaluate(digits.x_test, digits.y_test, verbose=0)[1] > 0.5


def test_custom_conv_config_int8_file_matches_keras(trained, digits):
    flatbuffer = tfc.convert(trained, "int8")
    report = tfc.inspect(flatbuffer)
    assert report.float_ops == []
    (conv,) = [op for op in report.ops if op.name == "CONV_2D"]
    assert len(report.tensors[conv.inputs[1]].quantization.scale) == 4  # per channel
    keras_top1 = np.argmax(trained.predict(digits.x_test, verbose=0), axis=-1)
    litert_top1 = np.argmax(run_tflite(flatbuffer, digits.x_test), axis=-1)
    assert np.mean(keras_top1 == litert_top1) >= 0.95


def test_quantize_model_honours_a_tfmot_style_annotation():
    model = _conv_model()
    quantize_annotate_layer(model.get_layer("conv"), PerChannelConvConfig())
    kinds = [type(layer).__name__ for layer in quantize_model(model).layers]
    assert kinds.count("CustomQuantizeWrapper") == 1 and kinds.count("QuantizeWrapper") == 1


def test_config_returning_a_non_weight_names_the_layer():
    class Broken(PerChannelConvConfig):
        def get_weights_and_quantizers(self, layer):
            return [("kernel", LastValueQuantizer(8, True, True, True))]

    model = _conv_model()
    quantize_annotate_layer(model.get_layer("conv"), Broken())
    with pytest.raises(TypeError, match="Broken.get_weights_and_quantizers.*'conv'"):
        quantize_apply(model)


def test_options_config_is_refused_by_the_custom_wrapper():
    with pytest.raises(TypeError, match="overrides tfmot's methods"):
        CustomQuantizeWrapper(keras.layers.Dense(2), QuantizeConfig())
