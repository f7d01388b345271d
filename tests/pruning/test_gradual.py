"""Training-time channel pruning (StructuredPruning) ends in a physically smaller model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.pruning import ConstantSparsity, PolynomialDecay
from tfcompress.pruning.gradual import StructuredPruning, strip_channels

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("structured-gradual")


def _se_residual_net() -> keras.Model:
    """BN, depthwise, a residual add, a squeeze-excite multiply and a Keras op (`x * 0.5`)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(12, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    y = keras.layers.Activation("swish")(y)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
    se = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = keras.layers.Conv2D(12, 1, activation="sigmoid", name="se_expand")(se)
    y = keras.layers.Multiply(name="se_mul")([y, se])
    y = keras.layers.Conv2D(12, 1, name="project")(y * 0.5)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.Conv2D(16, 1, activation="relu", name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="session")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 64)


@pytest.fixture(scope="session")
def trained(data) -> tuple[keras.Model, StructuredPruning]:
    keras.utils.set_random_seed(0)
    model = _se_residual_net()
    pruning = StructuredPruning(PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2))
    model.fit(*data, epochs=2, batch_size=16, verbose=0, callbacks=[pruning])
    return model, pruning


def test_schedule_masks_channels_and_strip_removes_them_keeping_outputs(trained, data) -> None:
    model, pruning = trained
    # half of each prunable group is masked at the schedule's end, the residual group as one
    assert pruning.masked["stem, se_expand, project"] == [6, 12]
    assert pruning.masked["head_conv"] == [8, 16]
    assert "logits" in pruning.left_whole
    stem_kernel = model.get_layer("stem").get_weights()[0].reshape(-1, 12)
    assert int((stem_kernel == 0).all(axis=0).sum()) == 6  # still zero after the last batch
    small = strip_channels(model)
    assert small.get_layer("stem").filters == 6
    assert small.get_layer("se_expand").filters == 6  # the SE group stays aligned
    assert small.get_layer("head_conv").filters == 8
    assert small.count_params() < 0.6 * model.count_params()
    x = data[0][:8]
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # and LiteRT runs the smaller model to the same outputs
    np.testing.assert_allclose(run_tflite(tfc.convert(small), x), small.predict(x, verbose=0), 1e-4)


def test_stripped_model_composes_with_qat_and_int8(trained, data) -> None:
    small = strip_channels(trained[0])
    qat = tfc.quantize_model(small)
    flat = tfc.convert(qat, "int8", data[0][:32])
    assert tfc.inspect(flat).float_ops == []
    assert run_tflite(flat, data[0][:4]).shape == (4, 10)


def test_masked_model_saved_and_loaded_strips_the_same(trained, data, tmp_path) -> None:
    model, pruning = trained
    path = tmp_path / "masked.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    small, again = strip_channels(model), strip_channels(loaded)
    assert again.count_params() == small.count_params()
    x = data[0][:4]
    np.testing.assert_allclose(again.predict(x, verbose=0), small.predict(x, verbose=0), 1e-6)
    # resumed in a fresh callback before its next update step: the zeroed channels stay masked
    later = StructuredPruning(ConstantSparsity(0.5, begin_step=10**6))
    loaded.fit(*data, epochs=1, batch_size=16, verbose=0, callbacks=[later])
    assert strip_channels(loaded).count_params() == small.count_params()
    config = pruning.get_config()
    restored = StructuredPruning.from_config(config)
    assert restored.schedule == pruning.schedule and restored.get_config() == config
    assert (
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(pruning)
        ).get_config()
        == config
    )


def test_bad_input_names_the_layer_and_the_fix(data) -> None:
    with pytest.raises(ValueError, match="PruningSchedule"):
        StructuredPruning(0.5)  # type: ignore[arg-type]
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(1, 3, name="single")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tiny = keras.Model(inputs, keras.layers.Dense(10)(x))
    tiny.compile("adam", "sparse_categorical_crossentropy")
    empties = StructuredPruning(ConstantSparsity(0.6, begin_step=0))
    with pytest.raises(ValueError, match="every channel of 'single'.*max_fraction"):
        tiny.fit(*data, epochs=1, verbose=0, callbacks=[empties])
    flat = keras.Model(inputs, keras.layers.Dense(10, name="out")(keras.layers.Flatten()(inputs)))
    flat.compile("adam", "mse")
    with pytest.raises(ValueError, match="no channel group.*out \\(reaches a model output\\)"):
        flat.fit(data[0], np.zeros((64, 10)), verbose=0, callbacks=[empties])
    # a zeroed channel read through a sigmoid is not zero: strip says so instead of changing it
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="sigmoid", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :2], bias[:2] = 0.0, 0.0
    model.get_layer("hidden").set_weights([kernel, bias])
    with pytest.raises(ValueError, match="changes its outputs.*sigmoid"):
        strip_channels(model)
