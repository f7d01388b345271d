"""quantize_model on subclassed models: traced into wrappers, trained, converted, saved."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tests.harness.subclassed import TinyNet, WithCustom, built
from tests.outputs import inference
from tfcompress.core import compat, graph
from tfcompress.data import Split
from tfcompress.quantization import (
    ActivationQuantizer,
    QuantizeWrapper,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
)
from tfcompress.tflite.runtime import run_tflite

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("subclassed-qat")


@pytest.fixture(scope="session")
def subclassed_qat(digits: Split) -> keras.Model:
    """A subclassed CNN quantized as a whole and trained for a few steps."""
    keras.utils.set_random_seed(0)
    qat = tfc.quantize_model(built(TinyNet(), (1, 8, 8, 1)))
    # eager: two steps cost less than tracing a training function
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    qat.compile("adam", loss, run_eagerly=True)
    qat.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, batch_size=64, verbose=0)
    return qat


def test_every_kernel_is_wrapped_and_batch_norm_folded(subclassed_qat: keras.Model) -> None:
    wrappers = [layer for layer in subclassed_qat.layers if isinstance(layer, QuantizeWrapper)]
    assert len(wrappers) == 4  # the stem, the two blocks' convolutions, the head
    assert sum(wrapper.batchnorm is not None for wrapper in wrappers) == 2
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in subclassed_qat.layers)


def test_int8_file_follows_the_quantization_aware_model(
    digits: Split, subclassed_qat: keras.Model
) -> None:
    flatbuffer = tfc.convert(subclassed_qat, "int8")
    assert tfc.inspect(flatbuffer).float_ops == []
    held_out = digits.x_test[:200]
    keras_out = inference(subclassed_qat, held_out)
    tflite_out = run_tflite(flatbuffer, held_out)
    assert np.mean(keras_out.argmax(1) == tflite_out.argmax(1)) >= 0.98
    step = (keras_out.max() - keras_out.min()) / 255
    assert np.abs(keras_out - tflite_out).max() <= 3 * step


def test_saves_and_loads_with_the_same_outputs(
    tmp_path, digits: Split, subclassed_qat: keras.Model
) -> None:
    path = tmp_path / "qat.keras"
    subclassed_qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        inference(loaded, digits.x_test[:32]), inference(subclassed_qat, digits.x_test[:32])
    )


def test_a_functional_model_around_a_subclassed_one_is_quantized() -> None:
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, built(TinyNet(), (1, 8, 8, 1))(inputs))
    qat = tfc.quantize_model(outer)
    wrappers = [layer for layer in qat.layers if isinstance(layer, QuantizeWrapper)]
    assert len(wrappers) == 4
    assert sum(wrapper.batchnorm is not None for wrapper in wrappers) == 2
    assert tfc.quantization.is_quantization_aware(qat)


def test_the_subclassed_model_is_left_as_it_was(digits: Split) -> None:
    model = built(TinyNet(), (1, 8, 8, 1))
    before = inference(model, digits.x_test[:8])
    tfc.quantize_model(model)
    tfc.quantize_model(model)  # twice: the second trace is the same as the first
    assert all(len(graph.inbound_nodes(layer)) == 0 for layer in compat.nested_layers(model))
    assert type(model.blocks[0]).__module__ == "tests.harness.subclassed"
    np.testing.assert_array_equal(inference(model, digits.x_test[:8]), before)


def test_custom_layer_with_weights_is_named_and_kept_float_then_saves(tmp_path) -> None:
    model = built(WithCustom(), (1, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tfc.quantize_model(model)
    assert any("'my_scale' (Scale)" in str(w.message) for w in caught)
    assert [type(x).__name__ for x in qat.layers if not isinstance(x, ActivationQuantizer)] == [
        "InputLayer",
        "QuantizeWrapper",
        "Scale",
        "QuantizeWrapper",
    ]
    path = tmp_path / "custom.keras"
    qat.save(path)
    x = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    np.testing.assert_array_equal(inference(keras.saving.load_model(path), x), inference(qat, x))


class _TensorFlowInCall(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="uses_tf")
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return tf.nn.relu(self.dense(x))


def test_a_call_that_cannot_be_traced_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"'uses_tf'.*keras\.ops"):
        tfc.quantize_model(built(_TensorFlowInCall(), (1, 3)))


def test_an_unbuilt_subclassed_model_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"not built.*model\(x\[:1\]\)"):
        tfc.quantize_model(TinyNet(name="unbuilt"))


def test_quantize_apply_quantizes_only_the_annotated_layers_of_a_subclassed_model() -> None:
    model = built(TinyNet(), (1, 8, 8, 1))
    quantize_annotate_layer(model.head)  # annotations survive the trace
    applied = quantize_apply(model)
    assert [x.layer.name for x in applied.layers if isinstance(x, QuantizeWrapper)] == [
        model.head.name
    ]
    everything = quantize_apply(quantize_annotate_model(model))
    assert sum(isinstance(x, QuantizeWrapper) for x in everything.layers) == 4
